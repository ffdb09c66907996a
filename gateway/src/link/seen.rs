//! The durable seen-set: every command id received, until a while after its expiry
//! (anti-replay, GB/T 22239), with its final result once there is one.
//!
//! A sled tree (`link.seen`) in the store's database, so that the store writer's group
//! commit (flush + fdatasync) makes an entry durable: the link inserts the entry, then
//! appends the command's `GW.COMMAND` audit event and waits for its commit before it
//! acknowledges the command to the broker. Blocking (sled): call from the blocking pool.
//!
//! Value: `keep_until_ms` (8 bytes, big-endian), `received_ms` (8), then the final
//! `CommandResult` encoded (nothing while the command has none).

use prost::Message;

use estate_protocols::pb;

use crate::store::{StoreError, StoreReader};

/// The tree's name in the store.
pub const TREE: &str = "link.seen";

/// How long after its expiry an id is kept: a clock set back by up to this much still
/// refuses a replay as a duplicate rather than running it.
pub const KEEP_AFTER_EXPIRY_MS: i64 = 3600 * 1000;

/// One id's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Pruned after this (Unix ms).
    pub keep_until_ms: i64,
    pub received_ms: i64,
    /// The final result, once the command has one.
    pub result: Option<pb::CommandResult>,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.keep_until_ms.to_be_bytes());
        v.extend_from_slice(&self.received_ms.to_be_bytes());
        if let Some(r) = &self.result {
            r.encode(&mut v).ok();
        }
        v
    }

    fn decode(v: &[u8]) -> Option<Entry> {
        let keep_until_ms = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
        let received_ms = i64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
        let rest = &v[16..];
        let result = if rest.is_empty() {
            None
        } else {
            // A result that no longer decodes still marks the id as seen.
            pb::CommandResult::decode(rest).ok()
        };
        Some(Entry {
            keep_until_ms,
            received_ms,
            result,
        })
    }
}

/// When an id received at `now_ms` with `expires_at_ms` may be forgotten: after its
/// expiry (at most a day away, whatever the command says) and [`KEEP_AFTER_EXPIRY_MS`].
pub fn keep_until(now_ms: i64, expires_at_ms: i64) -> i64 {
    let day = super::command::MAX_LIFETIME_MS;
    expires_at_ms
        .clamp(now_ms, now_ms.saturating_add(day))
        .saturating_add(KEEP_AFTER_EXPIRY_MS)
}

#[derive(Debug, Clone)]
pub struct Seen {
    tree: sled::Tree,
}

impl Seen {
    pub fn open(reader: &StoreReader) -> Result<Seen, StoreError> {
        Ok(Seen {
            tree: reader.open_tree(TREE)?,
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.tree.get(id.as_bytes())?.map(|v| {
            Entry::decode(&v).unwrap_or(Entry {
                keep_until_ms: i64::MAX,
                received_ms: 0,
                result: None,
            })
        }))
    }

    pub fn insert(&self, id: &str, entry: &Entry) -> Result<(), StoreError> {
        self.tree.insert(id.as_bytes(), entry.encode())?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.tree.remove(id.as_bytes())?;
        Ok(())
    }

    /// Forgets the ids kept past their time; returns how many.
    pub fn prune(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if Entry::decode(&v).is_some_and(|e| e.keep_until_ms < now_ms) {
                self.tree.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The ids recorded without a final result: the gateway stopped between recording
    /// a command and answering it.
    pub fn unanswered(&self) -> Result<Vec<(String, Entry)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            if let Some(e) = Entry::decode(&v).filter(|e| e.result.is_none()) {
                out.push((String::from_utf8_lossy(&k).into_owned(), e));
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_options() -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            gateway_id: "gw".into(),
            estate_id: "E1".into(),
            batch_max_events: 256,
            batch_linger: std::time::Duration::ZERO,
            disk_budget: 64 * 1024 * 1024,
            disk_low_free: 1024,
            cache_capacity: 1024 * 1024,
            record_max_bytes: 48 * 1024,
            dead_letter_max: 100,
            keep_forwarded: false,
            resend_window: std::time::Duration::ZERO,
            queue_capacity: 64,
            pack_backlog: crate::store::PACK_BACKLOG,
            pack_bytes: crate::store::PACK_BYTES,
        }
    }

    /// Ids outlive a reopened store; pruning forgets only what is past its time; the
    /// unanswered are those without a result.
    #[tokio::test]
    async fn the_seen_set_lives_in_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = 1_767_000_000_000;
        let answered = Some(pb::CommandResult {
            command_id: "old".into(),
            outcome: pb::CommandOutcome::Ok.into(),
            ..Default::default()
        });
        for round in 0..2 {
            let metrics = std::sync::Arc::new(crate::telemetry::Metrics::new());
            let (handle, reader, writer) =
                crate::store::open(&dir.path().join("store"), store_options(), metrics)
                    .expect("store opens");
            let writer = tokio::task::spawn_blocking(move || writer.run());
            let seen = Seen::open(&reader).expect("tree opens");
            if round == 0 {
                let e = |keep, result| Entry {
                    keep_until_ms: keep,
                    received_ms: now - 10,
                    result,
                };
                seen.insert("old", &e(now - 1, answered.clone()))
                    .expect("insert");
                seen.insert("live", &e(now + 60_000, answered.clone()))
                    .expect("insert");
                seen.insert("running", &e(now + 60_000, None))
                    .expect("insert");
            } else {
                assert_eq!(seen.len(), 3, "every id survived the reopen");
                assert_eq!(seen.prune(now).expect("prune"), 1);
                assert!(seen.get("old").expect("get").is_none());
                assert_eq!(
                    seen.get("live").expect("get").map(|e| e.result),
                    Some(answered.clone())
                );
                let open: Vec<String> = seen
                    .unanswered()
                    .expect("scan")
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(open, vec!["running".to_owned()]);
            }
            drop(handle);
            writer.await.expect("joins").expect("writer stops cleanly");
        }
    }

    #[test]
    fn entries_round_trip() {
        for result in [
            None,
            Some(pb::CommandResult {
                command_id: "c1".into(),
                outcome: pb::CommandOutcome::Ok.into(),
                detail: "done".into(),
                ..Default::default()
            }),
        ] {
            let e = Entry {
                keep_until_ms: 1_767_000_000_000,
                received_ms: 1_766_000_000_000,
                result,
            };
            assert_eq!(Entry::decode(&e.encode()), Some(e));
        }
        assert_eq!(Entry::decode(b"short"), None);
    }

    #[test]
    fn ids_are_kept_past_their_expiry_but_never_past_a_day_and_an_hour() {
        let now = 1_767_000_000_000;
        assert_eq!(
            keep_until(now, now + 60_000),
            now + 60_000 + KEEP_AFTER_EXPIRY_MS
        );
        assert_eq!(keep_until(now, now - 60_000), now + KEEP_AFTER_EXPIRY_MS);
        assert_eq!(
            keep_until(now, i64::MAX),
            now + super::super::command::MAX_LIFETIME_MS + KEEP_AFTER_EXPIRY_MS
        );
    }
}
