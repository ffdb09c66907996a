//! What the store does when it comes back behind itself, or does not come back at all.
//!
//! - **High-water mark.** `store.highwater`, beside the store folder, holds the store's
//!   epoch and the next seq it will assign, fdatasync'ed by the writer after every group
//!   commit and before any of it is acknowledged or forwarded. sled is patched to be
//!   power-cut safe (`vendor/sled/PATCHES.md`); this is the check that proves it every
//!   start, and the guard if it ever is not (a restored backup, a disk that lied about a
//!   flush). The file has two slots written alternately, each with a generation and a
//!   CRC: a write torn by a cut leaves the other slot, which is older and still covers
//!   everything acknowledged.
//! - **Rollback.** When the store opens with a `next_seq` below the mark, or with another
//!   epoch, the seqs between may have reached the city already. The store starts a new
//!   epoch (so no `(epoch, seq)` is ever reused) and raises `GW.STORE_ROLLBACK` with the
//!   old epoch and the range that was lost.
//! - **Quarantine.** A store sled cannot open (an error that says corruption, or a panic
//!   inside sled) is moved to `quarantine/<time>-store` beside it, kept for diagnosis
//!   (the newest [`QUARANTINE_KEEP`]), and a fresh store with a new epoch takes its place;
//!   `GW.STORE_QUARANTINED` names the error and the folder. What sled can still read of
//!   the old store is appended to the new one and forwarded. I/O errors (permissions, a
//!   full disk) and a store locked by another gateway are not corruption: those still end
//!   the start, with the error, and systemd retries.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use estate_protocols::model::{Event, EventState};
use estate_protocols::pb;

/// Quarantined stores kept; older ones are deleted so a store that keeps breaking cannot
/// fill the disk.
pub const QUARANTINE_KEEP: usize = 3;

const SLOT: u64 = 32;
const MAGIC: u32 = 0x4857_4d31; // "HWM1"

/// The store's epoch and the next seq it assigns, as last made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The store's epoch (random at creation, new after a rollback or quarantine).
    pub epoch: u64,
    /// One above the highest seq committed so far: a store that opens below it lost
    /// commits that may have been acknowledged.
    pub next_seq: u64,
}

/// The high-water file: written in place, two slots, one fdatasync per update.
#[derive(Debug)]
pub struct HighWater {
    file: File,
    generation: u64,
    last: Option<Mark>,
}

/// The path of the high-water file of the store folder `store_dir`.
pub fn path_for(store_dir: &Path) -> PathBuf {
    let name = store_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    store_dir.with_file_name(format!("{name}.highwater"))
}

fn encode(generation: u64, mark: Mark) -> [u8; SLOT as usize] {
    let mut b = [0u8; SLOT as usize];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..12].copy_from_slice(&generation.to_le_bytes());
    b[12..20].copy_from_slice(&mark.epoch.to_le_bytes());
    b[20..28].copy_from_slice(&mark.next_seq.to_le_bytes());
    let crc = crc32(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u64, Mark)> {
    if b.len() < SLOT as usize || b[0..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(b[28..32].try_into().expect("4 bytes"));
    (crc == crc32(&b[0..28])).then(|| {
        (
            u64_at(4),
            Mark {
                epoch: u64_at(12),
                next_seq: u64_at(20),
            },
        )
    })
}

/// CRC-32 (IEEE), bitwise: 28 bytes per commit do not need a table.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl HighWater {
    /// Opens (or creates) the file and reads the newest valid slot. A file with no
    /// valid slot (new, or garbled) reads as no mark.
    pub fn open(path: &Path) -> io::Result<HighWater> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut buf = [0u8; 2 * SLOT as usize];
        let n = read_up_to(&file, &mut buf)?;
        let newest = [&buf[..SLOT as usize], &buf[SLOT as usize..]]
            .into_iter()
            .filter(|_| n > 0)
            .filter_map(decode)
            .max_by_key(|(generation, _)| *generation);
        if n > 0 && newest.is_none() {
            warn!(path = %path.display(), "The store's high-water file holds no valid mark; starting it afresh.");
        }
        Ok(HighWater {
            file,
            generation: newest.map_or(0, |(g, _)| g),
            last: newest.map(|(_, m)| m),
        })
    }

    /// The mark as last made durable, if any.
    pub fn mark(&self) -> Option<Mark> {
        self.last
    }

    /// Makes `mark` durable (no-op when unchanged). Blocking: one pwrite, one fdatasync.
    pub fn set(&mut self, mark: Mark) -> io::Result<()> {
        if self.last == Some(mark) {
            return Ok(());
        }
        let generation = self.generation + 1;
        self.file
            .write_all_at(&encode(generation, mark), (generation % 2) * SLOT)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.last = Some(mark);
        Ok(())
    }
}

fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What opening found, to be raised as gateway events once the writer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The store came back behind its high-water mark: seqs `first..=last` of
    /// `old_epoch` may have been acknowledged or forwarded and are gone.
    Rollback {
        /// The epoch the lost seqs belong to.
        old_epoch: u64,
        /// The epoch the store goes on with.
        new_epoch: u64,
        /// First seq gone: the store's own next seq on opening, or 1 when it opened with
        /// another epoch.
        first_lost: u64,
        /// Last seq gone (one below the mark's `next_seq`).
        last_lost: u64,
    },
    /// The store could not be opened and was moved to `moved_to`.
    Quarantined {
        /// Why sled could not open it (its error or panic message).
        error: String,
        /// The folder it now lives in (`quarantine/<time>-store`).
        moved_to: PathBuf,
        /// The fresh store's epoch.
        new_epoch: u64,
        /// Events read back from the old store and appended to the new one.
        salvaged: u64,
    },
}

impl Finding {
    /// The finding as its gateway event (severity 2, on the alarms lane).
    pub fn event(&self, gateway_id: &str, estate_id: &str) -> Event {
        let (code, detail) = match self {
            Finding::Rollback {
                old_epoch,
                new_epoch,
                first_lost,
                last_lost,
            } => (
                "GW.STORE_ROLLBACK",
                serde_json::json!({
                    "old_epoch": old_epoch.to_string(),
                    "new_epoch": new_epoch.to_string(),
                    "first_lost_seq": first_lost,
                    "last_lost_seq": last_lost,
                }),
            ),
            Finding::Quarantined {
                error,
                moved_to,
                new_epoch,
                salvaged,
            } => (
                "GW.STORE_QUARANTINED",
                serde_json::json!({
                    "error": error,
                    "moved_to": moved_to.display().to_string(),
                    "new_epoch": new_epoch.to_string(),
                    "salvaged_events": salvaged,
                }),
            ),
        };
        crate::events::gateway_event(
            gateway_id,
            estate_id,
            code,
            EventState::Active,
            None,
            detail,
        )
    }

    /// The `/healthz` reason.
    pub fn reason(&self) -> String {
        match self {
            Finding::Rollback {
                old_epoch,
                first_lost,
                last_lost,
                ..
            } => format!(
                "the store came back behind its high-water mark: seqs {first_lost}..={last_lost} of epoch {old_epoch} are lost; a new epoch started"
            ),
            Finding::Quarantined {
                error,
                moved_to,
                salvaged,
                ..
            } => format!(
                "the store could not be opened ({error}); moved to {}, a fresh store started, {salvaged} events salvaged",
                moved_to.display()
            ),
        }
    }
}

/// Compares the opened store (`epoch`, `next_seq`) with the mark. `None` when the store
/// is where it was, or when there is no mark (first start with this version).
pub fn behind(mark: Option<Mark>, epoch: u64, next_seq: u64) -> Option<Mark> {
    let mark = mark?;
    (mark.epoch != epoch || next_seq < mark.next_seq).then_some(mark)
}

/// Whether an open error means the store itself is broken (quarantine it) rather than
/// the machine (I/O, permissions, a lock held by another gateway: fail the start).
pub fn is_corruption(err: &super::StoreError) -> bool {
    use super::StoreError as E;
    match err {
        E::Sled(sled::Error::Corruption { .. })
        | E::Sled(sled::Error::Unsupported(_))
        | E::Sled(sled::Error::ReportableBug(_))
        | E::Corrupt { .. }
        | E::BadMetadata { .. } => true,
        E::Sled(sled::Error::Io(e)) | E::Io(e) => {
            // sled reports a garbled file it cannot parse as InvalidData / UnexpectedEof.
            matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            )
        }
        _ => false,
    }
}

/// Moves `store_dir` aside to `quarantine/<time>-<name>` beside it and deletes all but
/// the newest [`QUARANTINE_KEEP`] quarantined stores.
pub fn quarantine(store_dir: &Path) -> io::Result<PathBuf> {
    let parent = store_dir.parent().unwrap_or(Path::new("."));
    let qdir = parent.join("quarantine");
    std::fs::create_dir_all(&qdir)?;
    let name = store_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    // Names sort by age: the time, then a counter within the same millisecond.
    let mut n = 0;
    let mut target = qdir.join(format!("{stamp}-{n:03}-{name}"));
    while target.exists() {
        n += 1;
        target = qdir.join(format!("{stamp}-{n:03}-{name}"));
    }
    std::fs::rename(store_dir, &target)?;
    File::open(parent)?.sync_all()?;
    File::open(&qdir)?.sync_all()?;
    let mut kept: Vec<PathBuf> = std::fs::read_dir(&qdir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    kept.sort();
    let excess = kept.len().saturating_sub(QUARANTINE_KEEP);
    for old in &kept[..excess] {
        if let Err(err) = std::fs::remove_dir_all(old) {
            warn!(path = %old.display(), %err, "Could not delete an old quarantined store.");
        }
    }
    Ok(target)
}

/// Reads what it can of the events in a quarantined store, oldest first. sled is opened
/// on the quarantined folder itself (it is kept for diagnosis, not for sled); a panic
/// inside sled ends the salvage with what was read so far.
pub fn salvage(dir: &Path) -> Vec<pb::Event> {
    let dir = dir.to_path_buf();
    let run = std::panic::catch_unwind(move || {
        let mut out = Vec::new();
        let db = match sled::Config::new().path(&dir).open() {
            Ok(db) => db,
            Err(err) => {
                warn!(%err, "Nothing salvaged: sled cannot open the quarantined store.");
                return out;
            }
        };
        for item in db.range(super::keys::records_from(
            estate_protocols::model::Lane::Alarms,
            0,
        )) {
            collect(item, &mut out);
        }
        for item in db.range(super::keys::records_from(
            estate_protocols::model::Lane::Events,
            0,
        )) {
            collect(item, &mut out);
        }
        out
    });
    run.unwrap_or_else(|_| {
        error!("sled panicked while salvaging the quarantined store; nothing salvaged.");
        Vec::new()
    })
}

fn collect(item: sled::Result<(sled::IVec, sled::IVec)>, out: &mut Vec<pb::Event>) {
    use prost::Message;
    match item {
        Ok((_, v)) => match pb::EventBatch::decode(&*v) {
            Ok(rec) => out.extend(rec.events),
            Err(err) => warn!(%err, "A salvaged record does not decode; skipped."),
        },
        Err(err) => warn!(%err, "A salvaged record cannot be read; skipped."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_survives_reopening_and_a_torn_slot_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.highwater");
        let mut hw = HighWater::open(&path).expect("open");
        assert_eq!(hw.mark(), None);
        let a = Mark {
            epoch: 7,
            next_seq: 10,
        };
        let b = Mark {
            epoch: 7,
            next_seq: 25,
        };
        hw.set(a).expect("set the mark");
        hw.set(b).expect("set the mark");
        assert_eq!(HighWater::open(&path).expect("open").mark(), Some(b));

        // Tear the newest slot (generation 2 lives in slot 0): the older mark remains.
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.write_all_at(&[0xff; 8], 8).expect("write");
        let mut hw = HighWater::open(&path).expect("open");
        assert_eq!(hw.mark(), Some(a));
        // Writing on from there goes to the torn slot's place and wins again.
        hw.set(b).expect("set the mark");
        assert_eq!(HighWater::open(&path).expect("open").mark(), Some(b));
    }

    #[test]
    fn a_garbled_file_reads_as_no_mark_instead_of_failing_the_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.highwater");
        std::fs::write(&path, b"not a high-water file at all, just bytes....").expect("write");
        assert_eq!(HighWater::open(&path).expect("open").mark(), None);
    }

    #[test]
    fn behind_means_a_lower_next_seq_or_another_epoch() {
        let m = Some(Mark {
            epoch: 1,
            next_seq: 100,
        });
        assert_eq!(behind(None, 1, 5), None);
        assert_eq!(behind(m, 1, 100), None);
        assert_eq!(behind(m, 1, 120), None);
        assert_eq!(behind(m, 1, 99), m);
        assert_eq!(behind(m, 2, 100), m);
    }

    #[test]
    fn quarantine_keeps_the_newest_three() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut moved = Vec::new();
        for i in 0..5 {
            let store = dir.path().join("store");
            std::fs::create_dir_all(&store).expect("create the folder");
            std::fs::write(store.join("db"), format!("store {i}")).expect("write");
            moved.push(quarantine(&store).expect("quarantine"));
            assert!(!store.exists());
        }
        let left: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
            .expect("the quarantine folder")
            .map(|e| e.expect("folder entry").path())
            .collect();
        assert_eq!(left.len(), QUARANTINE_KEEP);
        for kept in &moved[2..] {
            assert!(kept.exists(), "{} was kept", kept.display());
        }
    }
}
