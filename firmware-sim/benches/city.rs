//! The reference city consumer at city scale, in process (no broker): encoded
//! `EventBatch`es of 3,315 simulated estates (50 events each, as a gateway's 1 s events
//! linger fills them at 50 ev/s) through the consumer's message path (ledger + estate
//! board, `city::consumer::on_message`), against bare `prost` decoding of the same
//! batches in the same run. One batch in 1,000 is dropped (holes to track) and one in
//! 100 delivered twice (duplicates). Prints events per second of one core for both,
//! their ratio, and the process's peak RSS (VmHWM).
//!
//! ```sh
//! cargo bench -p estate-sim --bench city            # 3,315 estates, 20 rounds
//! ESTATES=1000 ROUNDS=5 cargo bench -p estate-sim --bench city
//! ```
//!
//! Batches are encoded a slice of estates at a time (outside the timed sections), so the
//! peak RSS is the consumer's state plus a few MB of batches, not the whole corpus.

use std::time::{Duration, Instant};

use estate_protocols::pb;
use estate_sim::city::board::{Board, Rules};
use estate_sim::city::consumer::{on_message, RepairStats};
use estate_sim::city::Ledger;
use prost::Message;

const EVENTS_PER_BATCH: u64 = 50;
const SLICE: usize = 300;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn estate_id(i: usize) -> String {
    format!("310115{i:014}")
}

/// Round `round`'s batch of estate `i`: seqs `round*50+1 ..= round*50+50`, events as a
/// gateway forwards them (ids, location, reading, raw JSON).
fn batch(i: usize, round: u64, t0: i64) -> (String, Vec<u8>) {
    let estate = estate_id(i);
    let gateway = format!("gw-{i:05}");
    let first = round * EVENTS_PER_BATCH + 1;
    let events = (first..first + EVENTS_PER_BATCH)
        .map(|seq| {
            let ts = t0 + (seq as i64) * 20;
            pb::Event {
                seq,
                event_id: format!("01KB{seq:022}"),
                gateway_id: gateway.clone(),
                estate_id: estate.clone(),
                device_id: "smoke-1-1-3".into(),
                device_kind: 1,
                code: "DEV.HEARTBEAT".into(),
                severity: pb::Severity::Info as i32,
                state: pb::EventState::Active as i32,
                location: Some(pb::Location {
                    building: "1".into(),
                    unit: "1".into(),
                    floor: "3".into(),
                    room: "301".into(),
                    zone: String::new(),
                }),
                device_time_ms: Some(ts - 5),
                gateway_time_ms: ts,
                value: Some(pb::Reading {
                    value: 97.0,
                    unit: "%".into(),
                }),
                source: Some(pb::Source {
                    protocol: "native".into(),
                    reference: format!("estate/{estate}/smoke/smoke-1-1-3/event"),
                }),
                raw: format!(
                    r#"{{"code":"DEV.HEARTBEAT","ts":{},"value":97,"unit":"%","seq":{seq}}}"#,
                    ts - 5
                )
                .into_bytes()
                .into(),
                registered: true,
                device_seq: Some(seq),
                ..Default::default()
            }
        })
        .collect();
    let b = pb::EventBatch {
        gateway_id: gateway,
        estate_id: estate.clone(),
        boot_id: "01KBBOOT0000000000000000000".into(),
        store_epoch: 1,
        first_seq: first,
        last_seq: first + EVENTS_PER_BATCH - 1,
        lane: pb::Lane::Events as i32,
        events,
        sent_at_ms: t0,
    };
    (format!("city/v1/{estate}/events"), b.encode_to_vec())
}

fn main() {
    let estates = env("ESTATES", 3315);
    let rounds = env("ROUNDS", 20) as u64;
    let t0 = 1_800_000_000_000i64;
    let start_hwm = status_kb("VmHWM");
    let mut ledger = Ledger::new();
    let mut board = Board::new(Rules::default());
    let mut repair = RepairStats::default();
    let (mut t_consumer, mut t_decode) = (Duration::ZERO, Duration::ZERO);
    let (mut events, mut bytes, mut n_batches, mut sink) = (0u64, 0usize, 0u64, 0usize);
    for round in 0..rounds {
        for slice in (0..estates).step_by(SLICE) {
            let mut msgs: Vec<(String, Vec<u8>)> = Vec::with_capacity(SLICE + 5);
            for i in slice..(slice + SLICE).min(estates) {
                let k = round as usize * estates + i;
                if k % 1000 == 999 {
                    continue; // lost
                }
                let m = batch(i, round, t0 + round as i64 * 1000);
                if k % 100 == 7 {
                    msgs.push(m.clone()); // delivered twice
                }
                msgs.push(m);
            }
            events += msgs.len() as u64 * EVENTS_PER_BATCH;
            n_batches += msgs.len() as u64;
            bytes += msgs.iter().map(|(_, p)| p.len()).sum::<usize>();
            // Alternate which goes first, so neither always meets a warm cache.
            let mut decode = || {
                let t = Instant::now();
                for (_, p) in &msgs {
                    if let Ok(b) = pb::EventBatch::decode(p.as_slice()) {
                        sink += b.events.len();
                    }
                }
                t_decode += t.elapsed();
            };
            if round % 2 == 0 {
                decode();
            }
            let now = t0 + round as i64 * 1000 + 500;
            let t = Instant::now();
            for (topic, p) in &msgs {
                on_message(&mut ledger, &mut board, &mut repair, topic, p, now);
            }
            t_consumer += t.elapsed();
            if round % 2 == 1 {
                decode();
            }
        }
    }
    let t = Instant::now();
    let views = board.views(t0 + rounds as i64 * 1000);
    let t_views = t.elapsed();
    let r = ledger.summary();
    assert_eq!(sink as u64, events);
    assert_eq!(r.unique + r.duplicates, events);
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "{estates} estates x {rounds} rounds: {n_batches} batches, {events} events ({:.0} B/event encoded)",
        bytes as f64 / events as f64
    );
    println!("bare prost decode     {:>10.0} events/s", rate(t_decode));
    println!(
        "ledger + board        {:>10.0} events/s  (ratio {:.2} of bare decoding; {:.0} estates at 50 ev/s on one core)",
        rate(t_consumer),
        t_decode.as_secs_f64() / t_consumer.as_secs_f64(),
        rate(t_consumer) / 50.0
    );
    println!(
        "board views of {} estates: {:.1} ms; unique {}, duplicates {}, missing {} in {} gaps, ranges held {}",
        views.len(),
        t_views.as_secs_f64() * 1000.0,
        r.unique,
        r.duplicates,
        r.missing(),
        r.gaps.len(),
        ledger.ranges_held()
    );
    println!(
        "RSS peak (VmHWM) {} kB (at start {} kB), now {} kB",
        status_kb("VmHWM"),
        start_hwm,
        status_kb("VmRSS")
    );
}
