//! The store's view of its disk: real bytes used, free space, the write floor and the
//! reserve file.
//!
//! - **Real bytes.** `store.disk_budget` bounds what the data folder takes on disk: the
//!   blocks its files have allocated (`st_blocks × 512`, what `du` counts), not the
//!   events' logical bytes. sled's log keeps dead space until it rewrites a segment, so
//!   the two differ by up to two or three times.
//! - **Free space** on the folder's filesystem (statvfs `f_bavail`, what an unprivileged
//!   writer may use). Below `store.disk_low_free` the writer raises `GW.DISK_LOW`; below
//!   [`WRITE_FLOOR`] it pauses writes: sled never meets ENOSPC in the middle of a write
//!   (after an I/O error sled refuses every later operation until the process restarts).
//! - **The reserve.** A [`RESERVE_BYTES`] file beside sled's, allocated while there is
//!   room. When free space falls under the floor the writer deletes it, so that eviction
//!   and the alert engine's small writes still have room; it is made again once free
//!   space is back.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Below this much free space the writer commits nothing (the group fails, nothing is
/// acknowledged, the broker keeps the messages). It leaves room for a group commit
/// (256 events of at most 2 KiB of raw bytes each), sled's segment header and the alert
/// engine's writes.
pub const WRITE_FLOOR: u64 = 2 << 20;

/// Size of the reserve file.
pub const RESERVE_BYTES: u64 = 4 << 20;

/// Its name inside the store's folder.
pub const RESERVE_FILE: &str = "gateway-reserve";

/// Bytes the files under `dir` have allocated on disk (recursively; the reserve file is
/// not counted, it is free space kept back).
pub fn dir_disk_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_name() == RESERVE_FILE {
                continue;
            }
            // A file sled removes while this walks is simply not counted.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// Free space on the filesystem holding `dir`, as an unprivileged writer may use it;
/// `None` when the filesystem does not report its size (statvfs says 0 blocks in all, as
/// some FUSE filesystems do): then nothing is known to be full.
pub fn free_bytes(dir: &Path) -> std::io::Result<Option<u64>> {
    if fs2::total_space(dir)? == 0 {
        return Ok(None);
    }
    fs2::available_space(dir).map(Some)
}

/// The reserve file of one store.
#[derive(Debug)]
pub(super) struct Reserve {
    path: PathBuf,
    held: bool,
}

impl Reserve {
    pub(super) fn new(dir: &Path) -> Self {
        let path = dir.join(RESERVE_FILE);
        let held = std::fs::metadata(&path).is_ok_and(|m| m.blocks() * 512 >= RESERVE_BYTES);
        Reserve { path, held }
    }

    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Gives the reserve's space back to the filesystem.
    pub(super) fn release(&mut self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.held = false;
        Ok(())
    }

    /// Allocates the reserve (written, so that the blocks are really taken, and
    /// fsynced). On failure the partial file is removed.
    pub(super) fn take(&mut self) -> std::io::Result<()> {
        let result = (|| {
            let mut f = std::fs::File::create(&self.path)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = RESERVE_BYTES;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match result {
            Ok(()) => {
                self.held = true;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_bytes_count_allocated_blocks_and_skip_the_reserve() {
        let dir = tempfile::tempdir().expect("test I/O");
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).expect("test I/O");
        std::fs::create_dir(dir.path().join("sub")).expect("test I/O");
        std::fs::write(dir.path().join("sub/b"), vec![1u8; 50_000]).expect("test I/O");
        let before = dir_disk_bytes(dir.path()).expect("test I/O");
        assert!((150_000..=170_000).contains(&before), "{before}");
        let mut r = Reserve::new(dir.path());
        assert!(!r.held());
        r.take().expect("test I/O");
        assert!(Reserve::new(dir.path()).held());
        assert_eq!(dir_disk_bytes(dir.path()).expect("test I/O"), before);
        r.release().expect("test I/O");
        assert!(!dir.path().join(RESERVE_FILE).exists());
        assert!(free_bytes(dir.path())
            .expect("test I/O")
            .is_some_and(|f| f > 0));
    }
}
