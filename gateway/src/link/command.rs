//! Pure: which commands the gateway runs, and what it answers the others.
//!
//! [`check_id`] runs first (a command without a usable id cannot be recorded or
//! deduplicated); the seen-set check ([`super::seen`]) comes next; [`check`] last, on a
//! command already recorded. Nothing here does I/O or reads a clock: `now_ms` is given.

use std::time::Duration;

use estate_config::Config;
use estate_protocols::pb;
use pb::command::Kind as PbKind;
use pb::CommandOutcome as Outcome;

/// Longest command id, in bytes (link.proto).
pub const MAX_ID_BYTES: usize = 64;
/// Longest a command may be valid: its expiry at most this long after its issue.
pub const MAX_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// Longest alarm-handling note, in bytes (link.proto).
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest roll-call answer time a command may ask for.
pub const MAX_ANSWER_WITHIN_S: u32 = 3600;
/// Most seqs one resend may name: a bigger range is refused (split it), so that one
/// command cannot hold the link connection for long.
pub const MAX_RESEND_SEQS: u64 = 100_000;
/// Most missing ranges a resend answer lists; the detail says when there were more.
pub const MAX_MISSING_RANGES: usize = 1000;

/// A command's kind, as audited and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RollCall,
    AlarmHandling,
    Broadcast,
    Resend,
    Status,
}

impl Kind {
    pub fn of(cmd: &pb::Command) -> Option<Kind> {
        Some(match cmd.kind.as_ref()? {
            PbKind::RollCall(_) => Kind::RollCall,
            PbKind::AlarmHandling(_) => Kind::AlarmHandling,
            PbKind::Broadcast(_) => Kind::Broadcast,
            PbKind::Resend(_) => Kind::Resend,
            PbKind::Status(_) => Kind::Status,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RollCall => "roll_call",
            Kind::AlarmHandling => "alarm_handling",
            Kind::Broadcast => "broadcast",
            Kind::Resend => "resend",
            Kind::Status => "status",
        }
    }

    /// The `[commands]` switch that turns this kind off.
    fn switch(self) -> &'static str {
        match self {
            Kind::RollCall => "commands.roll_call",
            Kind::AlarmHandling => "commands.alarm_handling",
            Kind::Broadcast => "commands.broadcast.enabled",
            Kind::Resend => "commands.resend",
            Kind::Status => "commands.status",
        }
    }
}

/// The kind of `cmd` for the audit trail: `"none"` when it names none this gateway knows.
pub fn kind_name(cmd: &pb::Command) -> &'static str {
    Kind::of(cmd).map_or("none", Kind::as_str)
}

/// What `check` decides against, from the config.
#[derive(Debug, Clone)]
pub struct Rules {
    pub gateway_id: String,
    pub roll_call: bool,
    pub alarm_handling: bool,
    pub broadcast: bool,
    pub resend: bool,
    pub status: bool,
    /// `commands.roll_call_answer_within`: a roll call that names no time.
    pub roll_call_answer_within: Duration,
}

impl Rules {
    pub fn from_config(cfg: &Config) -> Rules {
        let c = &cfg.commands;
        Rules {
            gateway_id: cfg.gateway.id.clone(),
            roll_call: c.roll_call,
            alarm_handling: c.alarm_handling,
            broadcast: c.broadcast.enabled,
            resend: c.resend,
            status: c.status,
            roll_call_answer_within: c.roll_call_answer_within,
        }
    }

    fn enabled(&self, kind: Kind) -> bool {
        match kind {
            Kind::RollCall => self.roll_call,
            Kind::AlarmHandling => self.alarm_handling,
            Kind::Broadcast => self.broadcast,
            Kind::Resend => self.resend,
            Kind::Status => self.status,
        }
    }
}

/// Why a command is not run: the outcome to answer and its detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub outcome: Outcome,
    pub detail: String,
}

fn refused(detail: impl Into<String>) -> Refusal {
    Refusal {
        outcome: Outcome::Refused,
        detail: detail.into(),
    }
}

/// The id rules: present, at most [`MAX_ID_BYTES`].
pub fn check_id(cmd: &pb::Command) -> Result<(), Refusal> {
    if cmd.id.is_empty() {
        return Err(refused("the command has no id"));
    }
    if cmd.id.len() > MAX_ID_BYTES {
        return Err(refused(format!(
            "the command id is {} bytes; at most {MAX_ID_BYTES} are allowed",
            cmd.id.len()
        )));
    }
    Ok(())
}

/// The rules after the id and the seen-set: meant for this gateway, a sane lifetime,
/// not expired, a kind this gateway knows and has enabled, and that kind's own fields.
pub fn check(rules: &Rules, cmd: &pb::Command, now_ms: i64) -> Result<Kind, Refusal> {
    if cmd.gateway_id != rules.gateway_id {
        return Err(refused(format!(
            "meant for gateway {:?}, this is {:?}",
            clip(&cmd.gateway_id, MAX_ID_BYTES),
            rules.gateway_id
        )));
    }
    if cmd.expires_at_ms <= 0 {
        return Err(refused("the command has no expiry (expires_at_ms)"));
    }
    if cmd.expires_at_ms <= cmd.issued_at_ms {
        return Err(refused(format!(
            "it expires ({}) before it was issued ({})",
            cmd.expires_at_ms, cmd.issued_at_ms
        )));
    }
    if cmd.expires_at_ms.saturating_sub(cmd.issued_at_ms) > MAX_LIFETIME_MS {
        return Err(refused(format!(
            "it expires {} s after its issue; at most a day ({} s) is allowed",
            cmd.expires_at_ms.saturating_sub(cmd.issued_at_ms) / 1000,
            MAX_LIFETIME_MS / 1000
        )));
    }
    if now_ms > cmd.expires_at_ms {
        return Err(Refusal {
            outcome: Outcome::Expired,
            detail: format!(
                "received {} ms after its expiry ({})",
                now_ms - cmd.expires_at_ms,
                cmd.expires_at_ms
            ),
        });
    }
    let Some(kind) = Kind::of(cmd) else {
        return Err(refused(
            "no command kind this gateway knows (roll_call, alarm_handling, broadcast, resend, status)",
        ));
    };
    if !rules.enabled(kind) {
        return Err(refused(format!(
            "{} commands are turned off on this gateway ({} = false)",
            kind.as_str(),
            kind.switch()
        )));
    }
    match cmd.kind.as_ref() {
        Some(PbKind::RollCall(rc)) if rc.answer_within_s > MAX_ANSWER_WITHIN_S => {
            Err(refused(format!(
                "answer_within_s is {}; 1-{MAX_ANSWER_WITHIN_S} (or 0 for the gateway's default)",
                rc.answer_within_s
            )))
        }
        Some(PbKind::AlarmHandling(ah)) => {
            if ah.alert_id.is_empty() {
                return Err(refused("alarm_handling names no alert_id"));
            }
            if ah.note.len() > MAX_NOTE_BYTES {
                return Err(refused(format!(
                    "the note is {} bytes; at most {MAX_NOTE_BYTES}",
                    ah.note.len()
                )));
            }
            match pb::CityAlarmState::try_from(ah.state) {
                Ok(pb::CityAlarmState::Unspecified) | Err(_) => Err(refused(format!(
                    "state {} is not one of received, dispatched, on scene, closed",
                    ah.state
                ))),
                Ok(_) => Ok(kind),
            }
        }
        Some(PbKind::Resend(r)) => {
            if r.first_seq == 0 || r.first_seq > r.last_seq {
                return Err(refused(format!(
                    "the seq range {}-{} is empty or starts at 0",
                    r.first_seq, r.last_seq
                )));
            }
            if r.last_seq - r.first_seq >= MAX_RESEND_SEQS {
                return Err(refused(format!(
                    "the seq range {}-{} names {} seqs; at most {MAX_RESEND_SEQS} per resend (split it)",
                    r.first_seq,
                    r.last_seq,
                    r.last_seq - r.first_seq + 1
                )));
            }
            Ok(kind)
        }
        _ => Ok(kind),
    }
}

/// How long the person on duty has for a roll call received at `now_ms`: its own
/// `answer_within_s` or the default, never past the command's expiry.
pub fn roll_call_window(
    rc: &pb::RollCall,
    default: Duration,
    now_ms: i64,
    expires_at_ms: i64,
) -> Duration {
    let asked = match rc.answer_within_s {
        0 => default,
        s => Duration::from_secs(u64::from(s)),
    };
    let left = Duration::from_millis(expires_at_ms.saturating_sub(now_ms).max(0) as u64);
    asked.min(left)
}

/// The seq ranges of `first..=last` not in `held` (sorted, deduplicated, all inside the
/// range), at most [`MAX_MISSING_RANGES`] of them; and whether there were more.
pub fn missing(first: u64, last: u64, held: &[u64]) -> (Vec<pb::SeqRange>, bool) {
    let mut out = Vec::new();
    // The first seq not yet accounted for; `None` once past `u64::MAX`.
    let mut next = Some(first);
    let mut more = false;
    let mut push = |from: u64, to: u64, out: &mut Vec<pb::SeqRange>| {
        if out.len() >= MAX_MISSING_RANGES {
            more = true;
        } else {
            out.push(pb::SeqRange {
                first: from,
                last: to,
            });
        }
    };
    for &s in held {
        let Some(n) = next else { break };
        if s > n {
            push(n, s - 1, &mut out);
        }
        next = n.max(s).checked_add(1);
    }
    if let Some(n) = next.filter(|n| *n <= last) {
        push(n, last, &mut out);
    }
    (out, more)
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_000_000_000;

    fn rules() -> Rules {
        Rules {
            gateway_id: "gw-1".into(),
            roll_call: true,
            alarm_handling: true,
            broadcast: false,
            resend: true,
            status: true,
            roll_call_answer_within: Duration::from_secs(120),
        }
    }

    fn cmd(kind: PbKind) -> pb::Command {
        pb::Command {
            id: "01JCMD0000000000000000000".into(),
            issuer: "city-duty-7".into(),
            issued_at_ms: NOW - 1000,
            expires_at_ms: NOW + 60_000,
            gateway_id: "gw-1".into(),
            kind: Some(kind),
        }
    }

    fn status() -> pb::Command {
        cmd(PbKind::Status(pb::StatusRequest {}))
    }

    fn outcome(r: Result<Kind, Refusal>) -> Outcome {
        r.map_or_else(|e| e.outcome, |_| Outcome::Ok)
    }

    #[test]
    fn ids_must_be_present_and_short() {
        let mut c = status();
        assert!(check_id(&c).is_ok());
        c.id = String::new();
        assert_eq!(check_id(&c).expect_err("refused").outcome, Outcome::Refused);
        c.id = "x".repeat(64);
        assert!(check_id(&c).is_ok());
        c.id = "x".repeat(65);
        let e = check_id(&c).expect_err("refused");
        assert!(e.detail.contains("65 bytes"), "{}", e.detail);
    }

    #[test]
    fn a_good_command_runs() {
        assert_eq!(check(&rules(), &status(), NOW), Ok(Kind::Status));
    }

    #[test]
    fn another_gateways_command_is_refused() {
        let mut c = status();
        c.gateway_id = "gw-2".into();
        let e = check(&rules(), &c, NOW).expect_err("refused");
        assert_eq!(e.outcome, Outcome::Refused);
        assert!(e.detail.contains("gw-2"), "{}", e.detail);
    }

    #[test]
    fn lifetimes_are_bounded_and_expiry_is_enforced() {
        let mut c = status();
        c.expires_at_ms = 0;
        assert_eq!(outcome(check(&rules(), &c, NOW)), Outcome::Refused);
        c.expires_at_ms = c.issued_at_ms;
        assert_eq!(outcome(check(&rules(), &c, NOW)), Outcome::Refused);
        c.expires_at_ms = c.issued_at_ms + MAX_LIFETIME_MS;
        assert_eq!(outcome(check(&rules(), &c, NOW)), Outcome::Ok);
        c.expires_at_ms = c.issued_at_ms + MAX_LIFETIME_MS + 1;
        let e = check(&rules(), &c, NOW).expect_err("refused");
        assert!(e.detail.contains("at most a day"), "{}", e.detail);
        let mut c = status();
        c.expires_at_ms = NOW - 1;
        let e = check(&rules(), &c, NOW).expect_err("refused");
        assert_eq!(e.outcome, Outcome::Expired);
        // Exactly at its expiry it still counts.
        c.expires_at_ms = NOW;
        assert_eq!(outcome(check(&rules(), &c, NOW)), Outcome::Ok);
    }

    #[test]
    fn a_command_without_a_known_kind_is_refused() {
        let mut c = status();
        c.kind = None;
        let e = check(&rules(), &c, NOW).expect_err("refused");
        assert!(e.detail.contains("no command kind"), "{}", e.detail);
    }

    #[test]
    fn disabled_kinds_are_refused_naming_the_switch() {
        let c = cmd(PbKind::Broadcast(pb::Broadcast::default()));
        let e = check(&rules(), &c, NOW).expect_err("refused");
        assert_eq!(e.outcome, Outcome::Refused);
        assert!(
            e.detail.contains("commands.broadcast.enabled"),
            "{}",
            e.detail
        );
        let r = Rules {
            status: false,
            ..rules()
        };
        let e = check(&r, &status(), NOW).expect_err("refused");
        assert!(e.detail.contains("commands.status = false"), "{}", e.detail);
    }

    #[test]
    fn kind_fields_are_checked() {
        let rc = |s| {
            cmd(PbKind::RollCall(pb::RollCall {
                answer_within_s: s,
                message: String::new(),
            }))
        };
        assert_eq!(outcome(check(&rules(), &rc(3600), NOW)), Outcome::Ok);
        assert_eq!(outcome(check(&rules(), &rc(3601), NOW)), Outcome::Refused);
        let ah = |state: pb::CityAlarmState, note: usize| {
            cmd(PbKind::AlarmHandling(pb::AlarmHandling {
                alert_id: "01JALERT".into(),
                state: state.into(),
                note: "n".repeat(note),
            }))
        };
        use pb::CityAlarmState as S;
        assert_eq!(
            outcome(check(&rules(), &ah(S::Dispatched, 1024), NOW)),
            Outcome::Ok
        );
        assert_eq!(
            outcome(check(&rules(), &ah(S::Dispatched, 1025), NOW)),
            Outcome::Refused
        );
        assert_eq!(
            outcome(check(&rules(), &ah(S::Unspecified, 0), NOW)),
            Outcome::Refused
        );
        let rs = |first, last| {
            cmd(PbKind::Resend(pb::Resend {
                store_epoch: 7,
                first_seq: first,
                last_seq: last,
            }))
        };
        assert_eq!(outcome(check(&rules(), &rs(1, 1), NOW)), Outcome::Ok);
        assert_eq!(outcome(check(&rules(), &rs(0, 1), NOW)), Outcome::Refused);
        assert_eq!(outcome(check(&rules(), &rs(5, 4), NOW)), Outcome::Refused);
        assert_eq!(
            outcome(check(&rules(), &rs(1, MAX_RESEND_SEQS), NOW)),
            Outcome::Ok
        );
        assert_eq!(
            outcome(check(&rules(), &rs(1, MAX_RESEND_SEQS + 1), NOW)),
            Outcome::Refused
        );
        assert_eq!(
            outcome(check(&rules(), &rs(u64::MAX, u64::MAX), NOW)),
            Outcome::Ok
        );
    }

    #[test]
    fn a_roll_call_never_waits_past_its_expiry() {
        let d = Duration::from_secs(120);
        let rc = |s| pb::RollCall {
            answer_within_s: s,
            message: String::new(),
        };
        assert_eq!(roll_call_window(&rc(0), d, NOW, NOW + 3_600_000), d);
        assert_eq!(
            roll_call_window(&rc(30), d, NOW, NOW + 3_600_000),
            Duration::from_secs(30)
        );
        assert_eq!(
            roll_call_window(&rc(30), d, NOW, NOW + 5_000),
            Duration::from_secs(5)
        );
        assert_eq!(roll_call_window(&rc(30), d, NOW, NOW - 5), Duration::ZERO);
    }

    proptest::proptest! {
        /// Whatever arrives on the commands topic, the checks answer without a panic
        /// (overflow included: debug builds check arithmetic).
        #[test]
        fn any_payload_is_answered(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
                                   now in proptest::prelude::any::<i64>()) {
            use prost::Message;
            if let Ok(c) = pb::Command::decode(bytes.as_slice()) {
                let _ = check_id(&c);
                if let Ok(kind) = check(&rules(), &c, now) {
                    if let Some(PbKind::RollCall(rc)) = &c.kind {
                        let _ = roll_call_window(rc, Duration::from_secs(120), now, c.expires_at_ms);
                    }
                    if let Some(PbKind::Resend(r)) = &c.kind {
                        let _ = missing(r.first_seq, r.last_seq, &[r.first_seq, r.last_seq]);
                    }
                    proptest::prop_assert_eq!(Some(kind), Kind::of(&c));
                }
            }
        }

        /// Commands for this gateway with any times and kind fields: no panic, and what
        /// runs is within its limits.
        #[test]
        fn any_command_fields_are_answered(issued in proptest::prelude::any::<i64>(),
                                           expires in proptest::prelude::any::<i64>(),
                                           now in proptest::prelude::any::<i64>(),
                                           n in proptest::prelude::any::<u32>(),
                                           a in proptest::prelude::any::<u64>(),
                                           b in proptest::prelude::any::<u64>(),
                                           which in 0u8..5) {
            let kind = match which {
                0 => PbKind::RollCall(pb::RollCall { answer_within_s: n, message: String::new() }),
                1 => PbKind::AlarmHandling(pb::AlarmHandling { alert_id: "a".into(), state: n as i32, note: String::new() }),
                2 => PbKind::Broadcast(pb::Broadcast { group: String::new(), on: true, duration_s: n, message: String::new() }),
                3 => PbKind::Resend(pb::Resend { store_epoch: a, first_seq: a, last_seq: b }),
                _ => PbKind::Status(pb::StatusRequest {}),
            };
            let c = pb::Command { issued_at_ms: issued, expires_at_ms: expires, ..cmd(kind) };
            if check(&rules(), &c, now).is_ok() {
                proptest::prop_assert!(c.expires_at_ms > 0 && now <= c.expires_at_ms);
                proptest::prop_assert!(c.expires_at_ms - c.issued_at_ms <= MAX_LIFETIME_MS);
                match &c.kind {
                    Some(PbKind::RollCall(rc)) => {
                        let w = roll_call_window(rc, Duration::from_secs(120), now, c.expires_at_ms);
                        proptest::prop_assert!(w <= Duration::from_secs(3600));
                    }
                    Some(PbKind::Resend(r)) => {
                        proptest::prop_assert!(r.first_seq >= 1 && r.last_seq - r.first_seq < MAX_RESEND_SEQS);
                        let _ = missing(r.first_seq, r.last_seq, &[]);
                    }
                    _ => {}
                }
            }
        }

        /// The missing ranges and the held seqs partition the range.
        #[test]
        fn missing_and_held_cover_the_range(first in 1u64..200, len in 0u64..200,
                                            picks in proptest::collection::btree_set(0u64..400, 0..100)) {
            let last = first + len;
            let held: Vec<u64> = picks.into_iter().filter(|s| (first..=last).contains(s)).collect();
            let (m, more) = missing(first, last, &held);
            proptest::prop_assert!(!more);
            let mut covered: Vec<u64> = m.iter().flat_map(|r| r.first..=r.last).collect();
            covered.extend(&held);
            covered.sort_unstable();
            proptest::prop_assert_eq!(covered, (first..=last).collect::<Vec<_>>());
        }
    }

    #[test]
    fn missing_at_the_top_of_the_seq_space() {
        let r = |a, b| pb::SeqRange { first: a, last: b };
        assert_eq!(missing(u64::MAX, u64::MAX, &[u64::MAX]), (vec![], false));
        assert_eq!(
            missing(u64::MAX - 2, u64::MAX, &[u64::MAX - 1]),
            (
                vec![r(u64::MAX - 2, u64::MAX - 2), r(u64::MAX, u64::MAX)],
                false
            )
        );
    }

    #[test]
    fn missing_ranges_are_the_complement() {
        let r = |a, b| pb::SeqRange { first: a, last: b };
        assert_eq!(missing(1, 10, &[]), (vec![r(1, 10)], false));
        assert_eq!(missing(1, 3, &[1, 2, 3]), (vec![], false));
        assert_eq!(
            missing(1, 10, &[3, 4, 8]),
            (vec![r(1, 2), r(5, 7), r(9, 10)], false)
        );
        assert_eq!(missing(5, 5, &[5]), (vec![], false));
        let held: Vec<u64> = (1..=5000).map(|i| i * 2).collect();
        let (m, more) = missing(1, 10_001, &held);
        assert_eq!(m.len(), MAX_MISSING_RANGES);
        assert!(more);
    }
}
