//! `estate-gateway store verify DIR`: does a store open, and what does it hold.
//!
//! Opens the store with sled as the gateway would (sled may finish its own crash
//! recovery in it, as the next start would; `--copy` verifies a copy instead, e.g. a
//! quarantined store kept for diagnosis), reads every record, and compares the store with
//! its high-water mark. Never creates a store: a folder without one is an error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost::Message;

use estate_protocols::model::Lane;
use estate_protocols::pb;

use super::{keys, recovery};

/// One lane as stored.
#[derive(Debug, Default)]
struct LaneReport {
    records: u64,
    events: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    cursor: u64,
    unforwarded: u64,
    undecodable: u64,
}

/// Verifies the store in `dir` (a store folder, or a data folder holding `store/`).
/// Returns the report and whether the store is sound (opens, every record decodes, not
/// behind its high-water mark).
pub fn verify(dir: &Path, copy: bool) -> Result<(String, bool), String> {
    let store = locate(dir)?;
    let mut out = String::new();
    let _ = writeln!(out, "store: {}", store.display());
    match super::dir_disk_bytes(&store) {
        Ok(n) => writeln!(out, "size on disk: {n} bytes"),
        Err(e) => writeln!(out, "size on disk: unknown ({e})"),
    }
    .ok();
    let tmp;
    let open_at: PathBuf = if copy {
        tmp = tempfile::tempdir().map_err(|e| format!("temporary folder: {e}"))?;
        let to = tmp.path().join("store");
        copy_dir(&store, &to).map_err(|e| format!("copying {}: {e}", store.display()))?;
        let _ = writeln!(out, "verifying a copy in {}", to.display());
        to
    } else {
        store.clone()
    };
    let opened = std::panic::catch_unwind(|| sled::Config::new().path(&open_at).open());
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(err)) => {
            let _ = writeln!(out, "opens: no ({err})");
            return Ok((out, false));
        }
        Err(_) => {
            let _ = writeln!(out, "opens: no (sled panicked)");
            return Ok((out, false));
        }
    };
    let _ = writeln!(out, "opens: yes");
    let mut sound = true;
    let epoch = keys::u64_value(db.get(keys::EPOCH).map_err(|e| e.to_string())?);
    let state = match db.get(keys::STATE).map_err(|e| e.to_string())? {
        Some(v) => keys::State::decode(&v).unwrap_or_else(|| {
            sound = false;
            let _ = writeln!(out, "m/state: malformed");
            keys::State::default()
        }),
        None => keys::State::read_legacy(&db).map_err(|e| e.to_string())?,
    };
    if epoch == 0 {
        // sled opens any folder, junk files included, as an empty database.
        sound = false;
        let _ = writeln!(
            out,
            "store_epoch: none (not a gateway store, or sled could read nothing of it)"
        );
    } else {
        let _ = writeln!(out, "store_epoch: {epoch}");
    }
    let _ = writeln!(out, "next seq: {}", state.next_seq);
    for lane in Lane::ALL {
        let r = lane_report(&db, lane, state.lanes[super::lane_index(lane)].cursor);
        if r.undecodable > 0 {
            sound = false;
        }
        let range = match (r.first_seq, r.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..={b}"),
            _ => "empty".into(),
        };
        let _ = writeln!(
            out,
            "{lane}: {} events in {} records ({range}), forwarded up to {}, {} not yet forwarded, {} unreadable records",
            r.events, r.records, r.cursor, r.unforwarded, r.undecodable
        );
    }
    let dead = db.range(keys::DEAD_LETTERS).count();
    let _ = writeln!(out, "dead letters: {dead}");
    sound &= high_water(&store, epoch, state.next_seq, &mut out);
    let _ = writeln!(out, "verdict: {}", if sound { "ok" } else { "NOT OK" });
    Ok((out, sound))
}

/// The store folder of `dir`: `dir` itself or its `store/` (a data folder).
pub(crate) fn locate(dir: &Path) -> Result<PathBuf, String> {
    if dir.join("db").is_file() {
        Ok(dir.to_path_buf())
    } else if dir.join("store").join("db").is_file() {
        Ok(dir.join("store"))
    } else {
        Err(format!(
            "{}: no store here (neither {0}/db nor {0}/store/db exists)",
            dir.display()
        ))
    }
}

/// One lane's records as they decode; `cursor` is the lane's forwarded-up-to seq.
fn lane_report(db: &sled::Db, lane: Lane, cursor: u64) -> LaneReport {
    let mut r = LaneReport {
        cursor,
        ..LaneReport::default()
    };
    for item in db.range(keys::records_from(lane, 0)) {
        let Ok((_, v)) = item else {
            r.undecodable += 1;
            continue;
        };
        let Ok(rec) = pb::EventBatch::decode(&*v) else {
            r.undecodable += 1;
            continue;
        };
        r.records += 1;
        for e in &rec.events {
            r.events += 1;
            r.first_seq = Some(r.first_seq.map_or(e.seq, |s| s.min(e.seq)));
            r.last_seq = Some(r.last_seq.map_or(e.seq, |s| s.max(e.seq)));
            if e.seq > r.cursor {
                r.unforwarded += 1;
            }
        }
    }
    r
}

/// Reports the store's high-water mark into `out`; false when the store is behind it.
fn high_water(store: &Path, epoch: u64, next_seq: u64, out: &mut String) -> bool {
    let hw_path = recovery::path_for(store);
    if hw_path.is_file() {
        match recovery::HighWater::open(&hw_path).map(|h| h.mark()) {
            Ok(Some(mark)) => {
                let behind = recovery::behind(Some(mark), epoch, next_seq).is_some();
                let _ = writeln!(
                    out,
                    "high-water mark: epoch {} next seq {}: {}",
                    mark.epoch,
                    mark.next_seq,
                    if behind {
                        "the store is BEHIND it (the next start begins a new epoch and raises GW.STORE_ROLLBACK)"
                    } else {
                        "the store is at it"
                    }
                );
                return !behind;
            }
            Ok(None) => {
                let _ = writeln!(out, "high-water mark: none readable");
            }
            Err(e) => {
                let _ = writeln!(out, "high-water mark: cannot read ({e})");
            }
        }
    } else {
        let _ = writeln!(out, "high-water mark: none ({} missing)", hw_path.display());
    }
    true
}

/// Copies the folder `from` to `to`, recursively.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
