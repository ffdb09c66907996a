//! The audit hash chain (issue 16): every audit entry records the SHA-256 of the entry
//! before it (global order by `n`), so an entry changed, removed or inserted in the store
//! shows, and the chain head the city receives with the gateway's status
//! (`GatewayStatus.audit_head`) shows a history rewritten as a whole
//! (docs/alerts-and-api.md, "Audit chain").
//!
//! **The hash** of entry `n` of alert `id`, whose stored value (the JSON in
//! `u/{id}/{n:016x}`, `prev` included) is `json` and whose previous entry's hash is
//! `prev` (32 zero bytes for the chain's first entry):
//!
//! ```text
//! SHA-256( "estate-gateway audit v1" 0x00
//!          || n as u64 big-endian
//!          || len(id) as u64 big-endian || id (UTF-8)
//!          || len(json) as u64 big-endian || json (the bytes as stored)
//!          || prev (32 bytes) )
//! ```
//!
//! The entry's JSON carries `prev` in hex (`"prev":"…"`, 64 digits), so the chain can be
//! read from the API too. Keys in the `alerts` tree (`alerts/state.rs`):
//!
//! | key | value |
//! |---|---|
//! | `m/audit_start` | `n` of the chain's first entry (u64 BE); entries below it were written by versions without the chain (unhashed) |
//! | `m/audit_head` | the latest entry: `n` (u64 BE) then its hash (32 bytes); written in the entry's batch |
//! | `p/{start:016x}` | a pruned run of entries `start..=end`: `end` (u64 BE), the `prev` of its first entry, the hash of its last (32 bytes each) |
//!
//! **Pruning.** Pruning removes whole trails of old closed alerts, and their entries are
//! spread between those of alerts that stay. For the chain to verify across them, the
//! entries removed are kept as *pruned runs*: a run of consecutive `n` needs only the
//! `prev` its first entry recorded and the hash of its last, 80 bytes with its key, and
//! neighbouring runs merge. A per-entry tombstone would grow with every pruned entry
//! behind one long-open alert; runs grow with the entries kept (an island of kept
//! entries separates two runs). Verification checks that the runs link into the chain
//! and reports them as pruned, not broken. What was in a pruned entry cannot be checked
//! any more (it is gone by design), and neither can the unhashed entries before
//! `m/audit_start`.

use std::collections::BTreeMap;
use std::fmt;

use super::model::AuditEntry;
use crate::store::StoreError;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the chain's first entry.
pub const ZERO: Hash = [0; 32];

/// `m/audit_start`.
pub const START: &[u8] = b"m/audit_start";
/// `m/audit_head`.
pub const HEAD: &[u8] = b"m/audit_head";
/// Prefix of the pruned runs.
pub const PRUNED: &[u8] = b"p/";

const DOMAIN: &[u8] = b"estate-gateway audit v1\0";

/// The hash of entry `n` of alert `alert_id`, stored as `json`, after an entry hashed
/// `prev` (the module doc gives the bytes).
pub fn entry_hash(n: u64, alert_id: &str, json: &[u8], prev: &Hash) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(&n.to_be_bytes());
    ctx.update(&(alert_id.len() as u64).to_be_bytes());
    ctx.update(alert_id.as_bytes());
    ctx.update(&(json.len() as u64).to_be_bytes());
    ctx.update(json);
    ctx.update(prev);
    let mut out = ZERO;
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Lower-case hex of `h`.
pub fn hex(h: &Hash) -> String {
    use std::fmt::Write as _;
    h.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `s` as 64 hex digits; `None` otherwise.
pub fn from_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = ZERO;
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The latest entry of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its `n`.
    pub n: u64,
    /// Its hash.
    pub hash: Hash,
}

impl Head {
    /// The `m/audit_head` value.
    pub fn encode(&self) -> [u8; 40] {
        let mut v = [0u8; 40];
        v[..8].copy_from_slice(&self.n.to_be_bytes());
        v[8..].copy_from_slice(&self.hash);
        v
    }

    /// Reads an `m/audit_head` value; `None` when it is not 40 bytes.
    pub fn decode(v: &[u8]) -> Option<Head> {
        let v: &[u8; 40] = v.try_into().ok()?;
        let mut hash = ZERO;
        hash.copy_from_slice(&v[8..]);
        Some(Head {
            n: u64::from_be_bytes(v[..8].try_into().ok()?),
            hash,
        })
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n={} sha256={}", self.n, hex(&self.hash))
    }
}

/// A pruned run of entries `start..=end` (its key holds `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The last `n` of the run.
    pub end: u64,
    /// The `prev` the run's first entry recorded.
    pub prev: Hash,
    /// The hash of the run's last entry.
    pub hash: Hash,
}

impl Run {
    fn encode(&self) -> [u8; 72] {
        let mut v = [0u8; 72];
        v[..8].copy_from_slice(&self.end.to_be_bytes());
        v[8..40].copy_from_slice(&self.prev);
        v[40..].copy_from_slice(&self.hash);
        v
    }

    fn decode(v: &[u8]) -> Option<Run> {
        let v: &[u8; 72] = v.try_into().ok()?;
        let (mut prev, mut hash) = (ZERO, ZERO);
        prev.copy_from_slice(&v[8..40]);
        hash.copy_from_slice(&v[40..]);
        Some(Run {
            end: u64::from_be_bytes(v[..8].try_into().ok()?),
            prev,
            hash,
        })
    }
}

/// The key of the pruned run starting at `start`.
pub fn run_key(start: u64) -> Vec<u8> {
    format!("p/{start:016x}").into_bytes()
}

/// `(alert id, n)` of an audit key `u/{id}/{n:016x}`.
pub fn parse_entry_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(b"u/")?;
    let slash = rest.iter().rposition(|&b| b == b'/')?;
    let n = u64::from_str_radix(std::str::from_utf8(&rest[slash + 1..]).ok()?, 16).ok()?;
    Some((String::from_utf8(rest[..slash].to_vec()).ok()?, n))
}

/// The `prev` an entry's stored JSON records; `None` when it records none (an entry of
/// an earlier version) or does not parse.
pub fn recorded_prev(json: &[u8]) -> Option<Hash> {
    serde_json::from_slice::<AuditEntry>(json)
        .ok()?
        .prev
        .as_deref()
        .and_then(from_hex)
}

/// Records pruned entries `(n, prev, hash)` as pruned runs in `batch`, merged with each
/// other and with the runs already in `tree`.
pub fn record_pruned(
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    mut entries: Vec<(u64, Hash, Hash)>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort_by_key(|e| e.0);
    // The new runs and the stored runs they touch, merged in memory (two new runs may
    // touch the same stored run), then written back: the touched keys removed first,
    // the merged runs inserted (a batch keeps the last write of a key).
    let mut runs: BTreeMap<u64, Run> = BTreeMap::new();
    let mut touched = Vec::new();
    for (n, prev, hash) in entries {
        runs.insert(n, Run { end: n, prev, hash });
        if let Some(Ok((k, v))) = tree.range(run_key(0)..run_key(n)).next_back() {
            if let (Some(r), Some(s)) = (Run::decode(&v), key_start(&k)) {
                if r.end.checked_add(1) == Some(n) {
                    runs.insert(s, r);
                    touched.push(s);
                }
            }
        }
        if let Some(v) = tree.get(run_key(n + 1))? {
            if let Some(r) = Run::decode(&v) {
                runs.insert(n + 1, r);
                touched.push(n + 1);
            }
        }
    }
    let mut merged: Vec<(u64, Run)> = Vec::new();
    for (s, r) in runs {
        match merged.last_mut() {
            Some((_, last)) if last.end.checked_add(1) == Some(s) => {
                last.end = r.end;
                last.hash = r.hash;
            }
            _ => merged.push((s, r)),
        }
    }
    for s in touched {
        batch.remove(run_key(s));
    }
    for (s, r) in merged {
        batch.insert(run_key(s), &r.encode()[..]);
    }
    Ok(())
}

fn key_start(k: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(k.strip_prefix(PRUNED)?).ok()?, 16).ok()
}

/// Where the chain breaks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The entry's `n`.
    pub n: u64,
    /// Its alert; `None` when the entry is missing.
    pub alert_id: Option<String>,
    /// What differs.
    pub what: String,
}

/// What `estate-gateway audit verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Entries whose hash was checked.
    pub checked: u64,
    /// Entries pruned (recorded as pruned runs).
    pub pruned: u64,
    /// Entries before the chain's start (written without hashes by earlier versions).
    pub unhashed: u64,
    /// `n` of the chain's first entry; `None` when no entry was ever hashed.
    pub start: Option<u64>,
    /// The chain's head as stored.
    pub head: Option<Head>,
    /// The first break; `None` when the chain is intact.
    pub broken: Option<Broken>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "entries checked: {}", self.checked)?;
        writeln!(f, "entries pruned: {}", self.pruned)?;
        match self.start {
            Some(s) => writeln!(
                f,
                "entries unhashed: {} (written before the chain began at n={s})",
                self.unhashed
            )?,
            None => writeln!(
                f,
                "entries unhashed: {} (no entry has a hash yet)",
                self.unhashed
            )?,
        }
        match &self.head {
            Some(h) => writeln!(f, "head: {h}")?,
            None => writeln!(f, "head: none")?,
        }
        match &self.broken {
            None => writeln!(f, "verdict: intact"),
            Some(b) => {
                let alert = b.alert_id.as_deref().unwrap_or("unknown: missing");
                writeln!(f, "first broken entry: n={} alert {alert}: {}", b.n, b.what)?;
                writeln!(f, "verdict: BROKEN")
            }
        }
    }
}

/// One link of the chain in `n` order.
enum Item {
    Entry {
        n: u64,
        id: String,
        json: sled::IVec,
    },
    Run {
        start: u64,
        run: Run,
    },
}

impl Item {
    fn start(&self) -> u64 {
        match self {
            Item::Entry { n, .. } => *n,
            Item::Run { start, .. } => *start,
        }
    }

    fn end(&self) -> u64 {
        match self {
            Item::Entry { n, .. } => *n,
            Item::Run { run, .. } => run.end,
        }
    }

    /// The previous hash it records.
    fn prev(&self) -> Option<Hash> {
        match self {
            Item::Entry { json, .. } => recorded_prev(json),
            Item::Run { run, .. } => Some(run.prev),
        }
    }

    /// Its hash, taking the `prev` it records as given.
    fn hash(&self) -> Option<Hash> {
        match self {
            Item::Entry { n, id, json } => {
                recorded_prev(json).map(|p| entry_hash(*n, id, json, &p))
            }
            Item::Run { run, .. } => Some(run.hash),
        }
    }

    fn name(&self) -> (u64, Option<String>) {
        match self {
            Item::Entry { n, id, .. } => (*n, Some(id.clone())),
            Item::Run { start, .. } => (*start, None),
        }
    }

    fn describe(&self) -> String {
        match self {
            Item::Entry { n, id, .. } => format!("entry n={n} (alert {id})"),
            Item::Run { start, run } => format!("the pruned run n={start}..={}", run.end),
        }
    }
}

/// Checks the audit chain of the `alerts` tree: every entry from `m/audit_start` on,
/// in `n` order, records the hash of the one before; pruned runs link in; the last one
/// is `m/audit_head`. Reads the whole audit (a command-line check, not the daemon).
pub fn verify(tree: &sled::Tree) -> Result<Report, StoreError> {
    let mut report = Report {
        start: tree
            .get(START)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes),
        ..Report::default()
    };
    let head_raw = tree.get(HEAD)?;
    report.head = head_raw.as_deref().and_then(Head::decode);
    let mut items = Vec::new();
    for item in tree.scan_prefix(b"u/") {
        let (k, json) = item?;
        let Some((id, n)) = parse_entry_key(&k) else {
            report.broken.get_or_insert(Broken {
                n: 0,
                alert_id: None,
                what: format!("unreadable audit key {:?}", String::from_utf8_lossy(&k)),
            });
            continue;
        };
        items.push(Item::Entry { n, id, json });
    }
    for item in tree.scan_prefix(PRUNED) {
        let (k, v) = item?;
        match (key_start(&k), Run::decode(&v)) {
            (Some(start), Some(run)) => items.push(Item::Run { start, run }),
            _ => {
                report.broken.get_or_insert(Broken {
                    n: key_start(&k).unwrap_or(0),
                    alert_id: None,
                    what: format!("unreadable pruned run {:?}", String::from_utf8_lossy(&k)),
                });
            }
        }
    }
    items.sort_by_key(Item::start);
    if report.broken.is_some() {
        return Ok(report);
    }
    let from = report.start.unwrap_or(u64::MAX);
    let chain_at = items.partition_point(|i| i.start() < from);
    for item in &items[..chain_at] {
        if let Item::Entry { n, id, json } = item {
            if recorded_prev(json).is_some() {
                report.broken = Some(Broken {
                    n: *n,
                    alert_id: Some(id.clone()),
                    what: match report.start {
                        Some(s) => format!("it records a previous hash but lies before the chain's start (m/audit_start n={s})"),
                        None => "it records a previous hash but m/audit_start is missing".into(),
                    },
                });
                return Ok(report);
            }
            report.unhashed += 1;
        } else {
            let (n, _) = item.name();
            report.broken = Some(Broken {
                n,
                alert_id: None,
                what: format!("{} lies before the chain's start", item.describe()),
            });
            return Ok(report);
        }
    }
    let chain = &items[chain_at..];
    report.broken = walk(chain, &mut report, head_raw.is_some());
    Ok(report)
}

/// Walks the chain's items from its start; counts into `report`; the first break.
fn walk(chain: &[Item], report: &mut Report, head_stored: bool) -> Option<Broken> {
    let Some(start) = report.start else {
        return head_stored.then(|| Broken {
            n: report.head.map_or(0, |h| h.n),
            alert_id: None,
            what: "m/audit_head is set but m/audit_start is missing".into(),
        });
    };
    let mut expected = start;
    let mut running = ZERO;
    for (i, item) in chain.iter().enumerate() {
        if item.start() < expected {
            let (n, alert_id) = item.name();
            return Some(Broken {
                n,
                alert_id,
                what: format!(
                    "{} overlaps what comes before it (n={} was already passed)",
                    item.describe(),
                    expected - 1
                ),
            });
        }
        if item.start() > expected {
            let after = i
                .checked_sub(1)
                .map_or("the chain's start".to_owned(), |p| chain[p].describe());
            return Some(Broken {
                n: expected,
                alert_id: None,
                what: format!(
                    "entries n={expected}..={} are missing (neither stored nor recorded as pruned), after {after}",
                    item.start() - 1
                ),
            });
        }
        let Some(prev) = item.prev() else {
            let (n, alert_id) = item.name();
            return Some(Broken {
                n,
                alert_id,
                what: "it records no previous hash (or does not parse as an audit entry)".into(),
            });
        };
        if prev != running {
            return Some(blame(chain, i, prev, running, report.head));
        }
        running = item.hash().unwrap_or(ZERO);
        match item {
            Item::Entry { .. } => report.checked += 1,
            Item::Run { start, run } => report.pruned += run.end - start + 1,
        }
        expected = item.end() + 1;
    }
    check_head(report.head, chain.last(), running)
}

/// The chain's end against `m/audit_head`: `last` is its last item, `running` the hash
/// it ends on.
fn check_head(head: Option<Head>, last: Option<&Item>, running: Hash) -> Option<Broken> {
    match (head, last) {
        (None, None) => None,
        (Some(h), None) => Some(Broken {
            n: h.n,
            alert_id: None,
            what: format!("m/audit_head names n={} but the chain has no entries", h.n),
        }),
        (None, Some(item)) => {
            let (n, alert_id) = item.name();
            Some(Broken {
                n,
                alert_id,
                what: "m/audit_head is missing or unreadable".into(),
            })
        }
        (Some(h), Some(item)) if h.n != item.end() => Some(Broken {
            n: item.end() + 1,
            alert_id: None,
            what: if h.n > item.end() {
                format!(
                    "entries n={}..={} are missing: the chain ends at {} but m/audit_head is n={}",
                    item.end() + 1,
                    h.n,
                    item.describe(),
                    h.n
                )
            } else {
                format!(
                    "m/audit_head is n={} but the chain goes on to {}",
                    h.n,
                    item.describe()
                )
            },
        }),
        (Some(h), Some(item)) if h.hash != running => {
            let (n, alert_id) = item.name();
            Some(Broken {
                n,
                alert_id,
                what: format!(
                    "its content does not match m/audit_head: it hashes to {}, the head records {}",
                    hex(&running),
                    hex(&h.hash)
                ),
            })
        }
        _ => None,
    }
}

/// The link into `chain[i]` fails: it records `prev`, the chain before it hashes to
/// `running`. Either the item before was changed, or this one was (its recorded `prev`
/// is part of its content): this one is intact when its own hash is what the next item
/// (or the head) records.
fn blame(chain: &[Item], i: usize, prev: Hash, running: Hash, head: Option<Head>) -> Broken {
    let item = &chain[i];
    let next_records = match chain.get(i + 1) {
        Some(next) => next.prev(),
        None => head.map(|h| h.hash),
    };
    let intact = item.hash().is_some() && item.hash() == next_records;
    match i.checked_sub(1).map(|p| &chain[p]) {
        Some(before) if intact => {
            let (n, alert_id) = before.name();
            Broken {
                n,
                alert_id,
                what: format!(
                    "its content does not match the hash {} records: it hashes to {}, {} was recorded",
                    item.describe(),
                    hex(&running),
                    hex(&prev)
                ),
            }
        }
        _ => {
            let (n, alert_id) = item.name();
            Broken {
                n,
                alert_id,
                what: format!(
                    "it records previous hash {}, but {} hashes to {}",
                    hex(&prev),
                    i.checked_sub(1)
                        .map_or("the chain's start".to_owned(), |p| chain[p].describe()),
                    hex(&running)
                ),
            }
        }
    }
}

/// `estate-gateway audit verify`: opens the store in `dir` (a store folder or a data
/// folder holding `store/`; with `copy`, a copy of it in the temporary folder, leaving
/// `dir` exactly as it is) and verifies its audit chain. The report, and whether the
/// chain is intact. Never creates a store.
pub fn verify_dir(dir: &std::path::Path, copy: bool) -> Result<(String, bool), String> {
    use std::fmt::Write as _;
    let store = crate::store::verify::locate(dir)?;
    let mut out = String::new();
    let _ = writeln!(out, "store: {}", store.display());
    let tmp;
    let open_at = if copy {
        tmp = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
        let to = tmp.path().join("store");
        crate::store::verify::copy_dir(&store, &to)
            .map_err(|e| format!("copying {}: {e}", store.display()))?;
        let _ = writeln!(out, "verifying a copy in {}", to.display());
        to
    } else {
        store.clone()
    };
    let db = match std::panic::catch_unwind(|| sled::Config::new().path(&open_at).open()) {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            return Err(format!(
                "{}: cannot open the store ({e}); is the gateway still running? (stop it, or pass --copy)",
                store.display()
            ))
        }
        Err(_) => return Err(format!("{}: sled panicked opening it", store.display())),
    };
    if !db.tree_names().iter().any(|n| n.as_ref() == b"alerts") {
        let _ = writeln!(out, "no alert state in this store: nothing to verify");
        return Ok((out, true));
    }
    let tree = db.open_tree("alerts").map_err(|e| e.to_string())?;
    let report = verify(&tree).map_err(|e| e.to_string())?;
    let _ = write!(out, "{report}");
    Ok((out, report.broken.is_none()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use estate_protocols::model::AlertStatus;

    use super::*;
    use crate::alerts::model::{Alert, Closed, Disposition};
    use crate::alerts::rules::{Effect, Engine};
    use crate::alerts::state::AlertStore;
    use crate::alerts::tests::{config, smoke_alarm};
    use crate::store::{self, StoreOptions, StoreReader};
    use crate::telemetry::Metrics;

    const DAY: i64 = 86_400_000;

    struct World {
        _dir: tempfile::TempDir,
        reader: StoreReader,
        engine: Engine,
        _store: (store::StoreHandle, store::StoreWriter),
    }

    fn world() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config();
        let (h, reader, w) = store::open(
            dir.path(),
            StoreOptions::from_config(&cfg),
            Arc::new(Metrics::new()),
        )
        .expect("store opens");
        World {
            _dir: dir,
            reader,
            engine: Engine::new(&cfg, 0),
            _store: (h, w),
        }
    }

    impl World {
        fn alerts(&self, history_max: usize) -> AlertStore {
            AlertStore::open(&self.reader, history_max, Duration::from_millis(DAY as u64))
                .expect("alert state")
        }

        fn tree(&self) -> sled::Tree {
            self.reader.open_tree("alerts").expect("tree")
        }

        /// A new alert of `device`, created at `at_ms`.
        fn alert(&mut self, device: &str, at_ms: i64) -> Alert {
            let mut e = smoke_alarm();
            e.device_id = device.into();
            e.gateway_time_ms = at_ms;
            self.engine
                .on_event(&e, at_ms)
                .into_iter()
                .find_map(|e| match e {
                    Effect::Alert { alert, .. } => Some(alert),
                    _ => None,
                })
                .expect("an alert opens")
        }
    }

    fn entry(at_ms: i64, action: &str) -> AuditEntry {
        AuditEntry::new(at_ms, "wang", action, "on my way")
    }

    fn close(a: &mut Alert, at_ms: i64) {
        a.status = AlertStatus::Closed;
        a.closed = Some(Closed {
            by: "li".into(),
            at_ms,
            disposition: Disposition::Test,
            note: String::new(),
        });
    }

    /// Three alerts whose trails interleave: n 0..=5.
    fn interleaved(w: &mut World, st: &AlertStore) -> Vec<String> {
        let now = crate::events::now_ms();
        let a = w.alert("dev-a", now);
        let b = w.alert("dev-b", now);
        let c = w.alert("dev-c", now);
        for (x, action) in [
            (&a, "opened"),
            (&b, "opened"),
            (&a, "acknowledged"),
            (&c, "opened"),
            (&b, "acknowledged"),
        ] {
            st.write(&[(x, Some(&entry(now, action)))], None)
                .expect("writes");
        }
        st.write(&[(&c, Some(&entry(now, "acknowledged"))), (&a, None)], None)
            .expect("writes");
        vec![a.id, b.id, c.id]
    }

    fn key(id: &str, n: u64) -> Vec<u8> {
        format!("u/{id}/{n:016x}").into_bytes()
    }

    /// Changes one byte of the stored value of `key` (in the note, so it stays JSON).
    fn tamper(tree: &sled::Tree, key: &[u8]) {
        let mut v = tree.get(key).expect("reads").expect("stored").to_vec();
        let at = v
            .windows(2)
            .position(|w| w == b"my")
            .expect("the note is in it");
        v[at] = b'M';
        tree.insert(key, v).expect("writes");
    }

    #[test]
    fn an_intact_chain_verifies_and_its_head_is_the_last_entry() {
        let mut w = world();
        let st = w.alerts(100);
        assert_eq!(st.audit_head(), None);
        let ids = interleaved(&mut w, &st);
        let r = verify(&w.tree()).expect("verifies");
        assert_eq!(r.broken, None, "{r}");
        assert_eq!(
            (r.checked, r.pruned, r.unhashed, r.start),
            (6, 0, 0, Some(0))
        );
        let head = st.audit_head().expect("a head");
        assert_eq!(r.head, Some(head));
        assert_eq!(head.n, 5);
        // The first entry starts from zeros; each records the hash of the one before.
        let trail = st.audit(&ids[0]).expect("reads");
        assert_eq!(trail[0].prev.as_deref(), Some(hex(&ZERO).as_str()));
        let json0 = w.tree().get(key(&ids[0], 0)).expect("reads").expect("n=0");
        let json1 = w.tree().get(key(&ids[1], 1)).expect("reads").expect("n=1");
        assert_eq!(
            recorded_prev(&json1),
            Some(entry_hash(0, &ids[0], &json0, &ZERO))
        );
        assert!(r.to_string().contains("verdict: intact"), "{r}");

        // Reopened (a restart), the chain goes on from its head.
        drop(st);
        let st = w.alerts(100);
        assert_eq!(st.audit_head(), Some(head));
        let a = st.get(&ids[1]).expect("reads").expect("kept");
        st.write(&[(&a, Some(&entry(1, "closed")))], None)
            .expect("writes");
        let r = verify(&w.tree()).expect("verifies");
        assert_eq!((r.broken, r.checked), (None, 7));
        assert_eq!(r.head.map(|h| h.n), Some(6));
    }

    #[test]
    fn a_changed_byte_names_the_entry_changed() {
        let mut w = world();
        let st = w.alerts(100);
        let ids = interleaved(&mut w, &st);
        let tree = w.tree();
        // In the middle: n=2 (alert a).
        tamper(&tree, &key(&ids[0], 2));
        let r = verify(&tree).expect("verifies");
        let b = r.broken.clone().expect("broken");
        assert_eq!(
            (b.n, b.alert_id.as_deref()),
            (2, Some(ids[0].as_str())),
            "{r}"
        );
        assert!(
            b.what.contains("n=3"),
            "names the entry that recorded it: {r}"
        );
        assert!(r.to_string().contains("verdict: BROKEN"), "{r}");
        // Its recorded previous hash changed: still that entry, not the one before.
        let mut w = world();
        let st = w.alerts(100);
        let ids = interleaved(&mut w, &st);
        let tree = w.tree();
        let k = key(&ids[2], 3);
        let v = tree.get(&k).expect("reads").expect("stored").to_vec();
        let s = String::from_utf8(v).expect("utf-8");
        let at = s.find("\"prev\":\"").expect("prev") + 8;
        let mut v = s.into_bytes();
        v[at] = if v[at] == b'0' { b'1' } else { b'0' };
        tree.insert(&k, v).expect("writes");
        let b = verify(&tree).expect("verifies").broken.expect("broken");
        assert_eq!((b.n, b.alert_id.as_deref()), (3, Some(ids[2].as_str())));
    }

    #[test]
    fn a_changed_last_entry_is_caught_by_the_head() {
        let mut w = world();
        let st = w.alerts(100);
        let ids = interleaved(&mut w, &st);
        let tree = w.tree();
        tamper(&tree, &key(&ids[2], 5));
        let b = verify(&tree).expect("verifies").broken.expect("broken");
        assert_eq!((b.n, b.alert_id.as_deref()), (5, Some(ids[2].as_str())));
        assert!(b.what.contains("m/audit_head"), "{b:?}");
    }

    #[test]
    fn a_removed_entry_is_missing() {
        let mut w = world();
        let st = w.alerts(100);
        let ids = interleaved(&mut w, &st);
        let tree = w.tree();
        tree.remove(key(&ids[1], 1)).expect("removes");
        let b = verify(&tree).expect("verifies").broken.expect("broken");
        assert_eq!((b.n, b.alert_id.as_deref()), (1, None));
        assert!(b.what.contains("missing"), "{b:?}");
        // The last one, too: the head still names it.
        let mut w = world();
        let st = w.alerts(100);
        let ids = interleaved(&mut w, &st);
        let tree = w.tree();
        tree.remove(key(&ids[2], 5)).expect("removes");
        let b = verify(&tree).expect("verifies").broken.expect("broken");
        assert_eq!(b.n, 5);
        assert!(
            b.what.contains("missing") && b.what.contains("n=5"),
            "{b:?}"
        );
    }

    #[test]
    fn pruned_trails_are_reported_as_pruned_and_their_runs_merge() {
        let mut w = world();
        let st = w.alerts(1);
        let now = crate::events::now_ms();
        let old = now - 3 * DAY;
        // x stays open; a, b and c are old and closed, d is new.
        let x = w.alert("dev-x", old);
        st.write(&[(&x, Some(&entry(old, "opened")))], None)
            .expect("n=0");
        let mut trail = |device: &str, created: i64, last: i64, st: &AlertStore| {
            let mut a = w.alert(device, created);
            st.write(&[(&a, Some(&entry(created, "opened")))], None)
                .expect("writes");
            close(&mut a, last);
            st.write(&[(&a, Some(&entry(last, "closed")))], None)
                .expect("writes");
            a.id
        };
        let a = trail("dev-a", old + 1, old + 2, &st); // n=1,2
        st.write(&[(&x, Some(&entry(old + 3, "acknowledged")))], None)
            .expect("n=3");
        let b = trail("dev-b", old + 4, old + 5, &st); // n=4,5: prunes a
        let c = trail("dev-c", old + 6, old + 7, &st); // n=6,7: prunes b
        let d = trail("dev-d", now, now, &st); // n=8,9: prunes c
        for gone in [&a, &b, &c] {
            assert!(st.get(gone).expect("reads").is_none(), "{gone} pruned");
        }
        assert!(st.get(&d).expect("reads").is_some());
        let tree = w.tree();
        let r = verify(&tree).expect("verifies");
        assert_eq!(r.broken, None, "{r}");
        assert_eq!((r.checked, r.pruned), (4, 6), "{r}");
        assert!(r.to_string().contains("entries pruned: 6"), "{r}");
        let runs: Vec<Vec<u8>> = tree
            .scan_prefix(PRUNED)
            .keys()
            .map(|k| k.expect("reads").to_vec())
            .collect();
        assert_eq!(runs, vec![run_key(1), run_key(4)], "4..=5 and 6..=7 merged");

        // A pruned run changed (say, to hide an entry): the chain breaks there.
        let mut v = tree.get(run_key(4)).expect("reads").expect("run").to_vec();
        v[0] ^= 1;
        tree.insert(run_key(4), v.clone()).expect("writes");
        assert!(verify(&tree).expect("verifies").broken.is_some());
        v[0] ^= 1;
        v[70] ^= 1;
        tree.insert(run_key(4), v).expect("writes");
        let b = verify(&tree).expect("verifies").broken.expect("broken");
        assert_eq!(b.n, 4, "{b:?}");
    }

    #[test]
    fn two_new_runs_touching_one_stored_run_make_one_run() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let tree = db.open_tree("alerts").expect("tree");
        let h = |b: u8| [b; 32];
        tree.insert(
            run_key(5),
            &Run {
                end: 5,
                prev: h(4),
                hash: h(5),
            }
            .encode()[..],
        )
        .expect("writes");
        let mut batch = sled::Batch::default();
        record_pruned(&tree, &mut batch, vec![(6, h(5), h(6)), (4, h(3), h(4))]).expect("records");
        tree.apply_batch(batch).expect("applies");
        let runs: Vec<(Vec<u8>, Run)> = tree
            .scan_prefix(PRUNED)
            .map(|kv| {
                let (k, v) = kv.expect("reads");
                (k.to_vec(), Run::decode(&v).expect("a run"))
            })
            .collect();
        assert_eq!(
            runs,
            vec![(
                run_key(4),
                Run {
                    end: 6,
                    prev: h(3),
                    hash: h(6)
                }
            )]
        );
    }

    #[test]
    fn an_unhashed_prefix_is_counted_and_the_chain_starts_after_it() {
        let mut w = world();
        let tree = w.tree();
        let old = w.alert("dev-old", 1_000);
        // As an earlier version wrote them: no `prev`, no chain keys.
        for n in 0..3u64 {
            let json = serde_json::to_vec(&entry(1_000 + n as i64, "opened")).expect("json");
            assert!(!String::from_utf8_lossy(&json).contains("prev"));
            tree.insert(key(&old.id, n), json).expect("writes");
        }
        tree.insert(
            "a/".to_owned() + &old.id,
            serde_json::to_vec(&old).expect("json"),
        )
        .expect("writes");
        tree.insert("m/next_audit", &3u64.to_be_bytes())
            .expect("writes");
        let r = verify(&tree).expect("verifies");
        assert_eq!(
            (r.broken, r.unhashed, r.start, r.head),
            (None, 3, None, None)
        );
        let st = w.alerts(100);
        st.write(&[(&old, Some(&entry(2_000, "acknowledged")))], None)
            .expect("writes");
        let r = verify(&tree).expect("verifies");
        assert_eq!(r.broken, None, "{r}");
        assert_eq!((r.checked, r.unhashed, r.start), (1, 3, Some(3)), "{r}");
        assert!(r.to_string().contains("entries unhashed: 3"), "{r}");
        // An old entry given a hash afterwards is not part of the chain: reported.
        let mut forged = entry(1_000, "opened");
        forged.prev = Some(hex(&ZERO));
        tree.insert(key(&old.id, 1), serde_json::to_vec(&forged).expect("json"))
            .expect("writes");
        let b = verify(&tree).expect("verifies").broken.expect("broken");
        assert_eq!(b.n, 1, "{b:?}");
    }
}
