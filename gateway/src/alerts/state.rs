//! Durable alert state: one sled tree `alerts` in the store's database, so the store's
//! fdatasync covers it, and one `apply_batch` lands an alert, its audit entry and the
//! engine's progress together (a crash leaves them consistent; the engine replays
//! committed events after `last_seq`).
//!
//! | key | value |
//! |---|---|
//! | `a/{id}` | the alert (JSON) |
//! | `u/{id}/{n:016x}` | one audit entry (JSON); `n` increases |
//! | `c/{id}` | empty: index of closed alerts, oldest first (ids are ULIDs) |
//! | `o/{id}` | empty: index of open alerts |
//! | `m/last_seq` | highest committed seq the engine has processed (u64 BE) |
//! | `m/next_audit` | the next audit entry's `n` (u64 BE) |
//! | `m/indexed` | the `m/last_seq` up to which `o/` and `m/next_audit` are kept; when it differs, a previous version wrote last and they are rebuilt on open |
//! | `m/devices` | every tracked device's status and last report (JSON), saved every 30 s when it changed, and at stop |
//! | `m/audit_start`, `m/audit_head`, `p/{n:016x}` | the audit hash chain: where it starts, its head, pruned runs (`alerts/chain.rs`) |
//!
//! History is bounded: beyond `alerts.history_max` closed alerts the oldest are removed
//! with their audit trail. Open alerts are never pruned, and neither is a closed alert
//! whose audit trail has an entry younger than `alerts.audit_retention`: `history_max`
//! is then a soft bound. What is kept over it is counted ([`AlertStore::over_bound`],
//! shown on `/healthz` as `alerts.history`); alerts go on being written meanwhile, and
//! the next attempt (at most one a minute while it falls short) prunes what has aged.
//!
//! **Audit.** Entries are append-only: written once under a new `n`, never changed.
//! Each records the hash of the entry before it (`n - 1`, whichever alert), and the
//! chain's head is written in the same batch (`alerts/chain.rs`); pruning a trail keeps
//! what verification needs of its entries (pruned runs). Repeats are folded before they
//! are written (`rules/chatter.rs`), not by rewriting stored entries. Starting and listing open
//! alerts read only the open ones (`o/`), not the whole history: every page sled reads
//! stays in memory for a long while (docs/footprint.md).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::chain::{self, Head};
use super::model::{Alert, AuditEntry};
use super::rules::DeviceRecord;
use crate::events::now_ms;
use crate::store::{StoreError, StoreReader};

const LAST_SEQ: &[u8] = b"m/last_seq";
const DEVICES: &[u8] = b"m/devices";
const NEXT_AUDIT: &[u8] = b"m/next_audit";
const INDEXED: &[u8] = b"m/indexed";

/// Read/write access to the alert tree. Cheap to clone. The alerts task is the only
/// writer; the API reads.
#[derive(Debug, Clone)]
pub struct AlertStore {
    tree: sled::Tree,
    reader: StoreReader,
    history_max: usize,
    /// `alerts.audit_retention` in ms.
    retention_ms: i64,
    closed: Arc<AtomicUsize>,
    /// The audit chain's next `n`, head and start; held while a batch with audit
    /// entries is built and applied, moved only when it applied.
    chain: Arc<Mutex<ChainState>>,
    /// Closed alerts kept over `history_max` because their trails are young, as of the
    /// last prune.
    over_bound: Arc<AtomicUsize>,
    /// No prune before this (Unix ms): set a minute ahead when one fell short.
    next_prune_ms: Arc<AtomicI64>,
}

/// Where the audit chain stands (`alerts/chain.rs`).
#[derive(Debug, Clone, Copy)]
struct ChainState {
    /// The next entry's `n` (`m/next_audit`).
    next: u64,
    /// The latest entry (`m/audit_head`); `None` before the first hashed entry.
    head: Option<Head>,
    /// The first hashed entry's `n` (`m/audit_start`).
    start: Option<u64>,
}

/// While pruning falls short (young trails), it is tried again at most this often.
const PRUNE_RETRY_MS: i64 = 60_000;

/// Filter for [`AlertStore::list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `open` (not closed), `active`, `acknowledged`, `closed`, `all`.
    pub status: String,
    /// Only this device's alerts; `None`: every device.
    pub device: Option<String>,
    /// Only alerts of exactly this level (1 critical … 4 info); `None`: every level.
    pub severity: Option<u8>,
    /// At most this many, most severe and oldest first; 0: no limit.
    pub limit: usize,
}

impl AlertStore {
    /// Opens the tree in the store's database; `history_max` closed alerts are kept,
    /// more while their trails are younger than `audit_retention`.
    pub fn open(
        reader: &StoreReader,
        history_max: usize,
        audit_retention: Duration,
    ) -> Result<AlertStore, StoreError> {
        let tree = reader.open_tree("alerts")?;
        // This version writes `m/indexed` with every progress; the previous version
        // moves only `m/last_seq` (and keeps no index).
        if tree.get(INDEXED)? != Some(tree.get(LAST_SEQ)?.unwrap_or_default()) {
            build_index(&tree)?;
        }
        let closed = tree.scan_prefix(b"c/").count();
        let next_audit = tree
            .get(NEXT_AUDIT)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes);
        let head = tree.get(chain::HEAD)?.as_deref().and_then(Head::decode);
        let start = tree
            .get(chain::START)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes);
        let chain = ChainState {
            // Never below the head: its `n` (or a pruned one) is not given out twice.
            next: next_audit.max(head.map_or(0, |h| h.n + 1)),
            head,
            start,
        };
        Ok(AlertStore {
            tree,
            reader: reader.clone(),
            history_max: history_max.max(1),
            retention_ms: i64::try_from(audit_retention.as_millis()).unwrap_or(i64::MAX),
            closed: Arc::new(AtomicUsize::new(closed)),
            chain: Arc::new(Mutex::new(chain)),
            over_bound: Arc::new(AtomicUsize::new(0)),
            next_prune_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Highest committed seq the engine has processed (0 before it ever ran).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.progress()?.unwrap_or(0))
    }

    /// Highest committed seq the engine has processed; `None` when this store has never
    /// had an alert engine.
    pub fn progress(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree
            .get(LAST_SEQ)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes))
    }

    /// Every open alert (for restoring the engine).
    pub fn open_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(b"o/").keys() {
            let k = k?;
            if let Some(a) = self.get(&String::from_utf8_lossy(&k[2..]))? {
                if a.is_open() {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// The alert with this id, open or closed; `None` when there is none (or it was
    /// pruned from the history, or its record does not parse).
    pub fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        Ok(self
            .tree
            .get(alert_key(id))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The alert's audit trail, oldest first.
    pub fn audit(&self, id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(format!("u/{id}/").as_bytes()) {
            let (_, v) = item?;
            if let Ok(e) = serde_json::from_slice(&v) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Alerts matching `f`, by severity (1 first) then first seen (oldest first).
    pub fn list(&self, f: &Filter) -> Result<Vec<Alert>, StoreError> {
        let history = matches!(f.status.as_str(), "all" | "closed");
        let candidates = if history {
            let mut all = Vec::new();
            for item in self.tree.scan_prefix(b"a/") {
                let (_, v) = item?;
                all.extend(serde_json::from_slice::<Alert>(&v).ok());
            }
            all
        } else {
            self.open_alerts()?
        };
        let mut out = Vec::new();
        for a in candidates {
            let status_ok = match f.status.as_str() {
                "all" => true,
                "active" => a.status == estate_protocols::model::AlertStatus::Active,
                "acknowledged" => a.status == estate_protocols::model::AlertStatus::Acknowledged,
                "closed" => !a.is_open(),
                _ => a.is_open(),
            };
            if status_ok
                && f.device.as_ref().is_none_or(|d| *d == a.device_id)
                && f.severity.is_none_or(|s| s == a.severity)
            {
                out.push(a);
            }
        }
        out.sort_by(|a, b| {
            (a.severity, a.first_seen_ms, &a.id).cmp(&(b.severity, b.first_seen_ms, &b.id))
        });
        if f.limit > 0 {
            out.truncate(f.limit);
        }
        Ok(out)
    }

    /// Writes alert changes (each with an optional audit entry) and the engine's progress
    /// in one batch; prunes the oldest closed alerts beyond the history bound. Not
    /// flushed: call [`AlertStore::sync`] where the change must be durable before
    /// answering.
    pub fn write(
        &self,
        changes: &[(&Alert, Option<&AuditEntry>)],
        last_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut newly_closed = 0usize;
        let mut counted = std::collections::HashSet::new();
        let mut chain = self.chain();
        let mut next = *chain;
        for (alert, audit) in changes {
            let value = serde_json::to_vec(alert).unwrap_or_default();
            batch.insert(alert_key(&alert.id), value);
            if alert.is_open() {
                batch.insert(open_key(&alert.id), &[][..]);
            } else {
                batch.remove(open_key(&alert.id));
                let ck = format!("c/{}", alert.id);
                // Counted once, also when one batch carries the alert twice.
                if self.tree.get(ck.as_bytes())?.is_none() && counted.insert(&alert.id) {
                    newly_closed += 1;
                }
                batch.insert(ck.as_bytes(), &[][..]);
            }
            if let Some(e) = audit {
                let n = next.next;
                let prev = next.head.map_or(chain::ZERO, |h| h.hash);
                let mut e = (*e).clone();
                e.prev = Some(chain::hex(&prev));
                let json = serde_json::to_vec(&e).unwrap_or_default();
                let hash = chain::entry_hash(n, &alert.id, &json, &prev);
                batch.insert(format!("u/{}/{n:016x}", alert.id).as_bytes(), json);
                next.start.get_or_insert(n);
                next.head = Some(Head { n, hash });
                next.next = n + 1;
            }
        }
        if next.next != chain.next {
            batch.insert(NEXT_AUDIT, &next.next.to_be_bytes());
            if let Some(h) = next.head {
                batch.insert(chain::HEAD, &h.encode()[..]);
            }
            if chain.start.is_none() {
                if let Some(s) = next.start {
                    batch.insert(chain::START, &s.to_be_bytes());
                }
            }
        }
        if let Some(seq) = last_seq {
            batch.insert(LAST_SEQ, &seq.to_be_bytes());
            batch.insert(INDEXED, &seq.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        *chain = next;
        let start = chain.start;
        drop(chain);
        let closed = self.closed.fetch_add(newly_closed, Ordering::AcqRel) + newly_closed;
        if closed > self.history_max {
            let now = now_ms();
            if now >= self.next_prune_ms.load(Ordering::Acquire) {
                self.prune(closed - self.history_max, now, start)?;
            }
        }
        Ok(())
    }

    fn chain(&self) -> MutexGuard<'_, ChainState> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The audit chain's head: the latest entry's `n` and hash (`alerts/chain.rs`);
    /// `None` before the first hashed entry.
    pub fn audit_head(&self) -> Option<Head> {
        self.chain().head
    }

    /// Removes the `n` oldest closed alerts whose trails are older than the retention,
    /// with their trails; counts what it had to keep over the bound. Entries of the audit
    /// chain (from `chain_start` on) are kept as pruned runs.
    fn prune(&self, n: usize, now_ms: i64, chain_start: Option<u64>) -> Result<(), StoreError> {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let mut batch = sled::Batch::default();
        let mut removed = 0usize;
        let mut pruned = Vec::new();
        for k in self.tree.scan_prefix(b"c/").keys() {
            if removed == n {
                break;
            }
            let k = k?;
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            // An alert created after the cutoff has a young trail, and so has every
            // later one (ids sort by creation time).
            let created = ulid::Ulid::from_string(&id).map_or(0, |u| u.timestamp_ms() as i64);
            if created >= cutoff {
                break;
            }
            if self.trail_ends_ms(&id)? >= cutoff {
                continue;
            }
            batch.remove(k);
            batch.remove(alert_key(&id));
            for item in self.tree.scan_prefix(format!("u/{id}/").as_bytes()) {
                let (ak, json) = item?;
                let chained = chain::parse_entry_key(&ak)
                    .filter(|(_, n)| chain_start.is_some_and(|s| *n >= s));
                if let Some((id, n)) = chained {
                    // A changed entry keeps its own (wrong) hash: verification still
                    // finds the break at the next link.
                    let prev = chain::recorded_prev(&json).unwrap_or(chain::ZERO);
                    pruned.push((n, prev, chain::entry_hash(n, &id, &json, &prev)));
                }
                batch.remove(ak);
            }
            removed += 1;
        }
        chain::record_pruned(&self.tree, &mut batch, pruned)?;
        self.tree.apply_batch(batch)?;
        self.closed.fetch_sub(removed, Ordering::AcqRel);
        let short = n - removed;
        self.over_bound.store(short, Ordering::Release);
        let next = if short > 0 {
            now_ms + PRUNE_RETRY_MS
        } else {
            0
        };
        self.next_prune_ms.store(next, Ordering::Release);
        Ok(())
    }

    /// When the youngest entry of `id`'s trail happened (0 for no trail).
    fn trail_ends_ms(&self, id: &str) -> Result<i64, StoreError> {
        let last = self
            .tree
            .scan_prefix(format!("u/{id}/").as_bytes())
            .values()
            .next_back()
            .transpose()?;
        Ok(last
            .and_then(|v| serde_json::from_slice::<AuditEntry>(&v).ok())
            .map_or(0, |e| e.last_at_ms()))
    }

    /// Closed alerts kept over `alerts.history_max` because their audit trails are
    /// younger than `alerts.audit_retention` (as of the last prune; 0 when within).
    pub fn over_bound(&self) -> usize {
        if self.over_bound.load(Ordering::Acquire) == 0 {
            return 0;
        }
        // Closes since the last (throttled) prune are over the bound too.
        self.closed_count().saturating_sub(self.history_max)
    }

    /// `alerts.history_max`.
    pub fn history_max(&self) -> usize {
        self.history_max
    }

    /// Saves the devices' statuses (not flushed: sled's own flush carries it within a
    /// second, and losing the last few seconds of last-seen times costs nothing).
    pub fn write_devices(&self, json: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(DEVICES, json)?;
        Ok(())
    }

    /// The devices' statuses saved before the last stop; none when there are none or
    /// they do not parse (a status display is not worth refusing to start over).
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        Ok(self
            .tree
            .get(DEVICES)?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }

    /// Makes everything written so far power-loss durable (blocking).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.reader.sync()
    }

    /// The store this state lives in.
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Closed alerts kept.
    pub fn closed_count(&self) -> usize {
        self.closed.load(Ordering::Acquire)
    }
}

fn alert_key(id: &str) -> Vec<u8> {
    format!("a/{id}").into_bytes()
}

fn open_key(id: &str) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

/// Builds the open-alert index and the audit counter of a tree a previous version wrote
/// last: one scan of every alert and audit entry.
fn build_index(tree: &sled::Tree) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for k in tree.scan_prefix(b"o/").keys() {
        batch.remove(k?);
    }
    for item in tree.scan_prefix(b"a/") {
        let (_, v) = item?;
        if let Ok(a) = serde_json::from_slice::<Alert>(&v) {
            if a.is_open() {
                batch.insert(open_key(&a.id), &[][..]);
            }
        }
    }
    // Audit keys are grouped per alert; the counter only has to grow, so take the
    // largest over all entries.
    let mut next_audit = 0u64;
    for k in tree.scan_prefix(b"u/").keys() {
        let k = k?;
        if let Ok(hex) = std::str::from_utf8(&k[k.len().saturating_sub(16)..]) {
            if let Ok(n) = u64::from_str_radix(hex, 16) {
                next_audit = next_audit.max(n + 1);
            }
        }
    }
    // Pruned entries (up to the head) are not in `u/` any more; their `n` are not
    // given out again.
    if let Some(h) = tree.get(chain::HEAD)?.as_deref().and_then(Head::decode) {
        next_audit = next_audit.max(h.n + 1);
    }
    batch.insert(NEXT_AUDIT, &next_audit.to_be_bytes());
    batch.insert(INDEXED, tree.get(LAST_SEQ)?.unwrap_or_default());
    tree.apply_batch(batch)?;
    Ok(())
}
