//! Replay at start-up (and after a restart): the committed events the engine had not
//! handled before the last stop, read back from the store a page at a time.

use tracing::warn;

use estate_protocols::model::{Event, Lane};

use super::effects::Outputs;
use super::Alerts;
use crate::store::StoreError;

impl Alerts {
    /// Replays what was committed but not handled before the last stop, a page at a
    /// time (a long backlog never sits in memory whole).
    pub(super) async fn replay(&mut self, out: &mut Outputs) {
        while self.last_seq < self.replay_until {
            match self.replay_page(self.last_seq) {
                Ok(page) if !page.is_empty() => self.handle_events(page, out).await,
                Ok(_) => break,
                Err(err) => {
                    warn!(error = %err, after = self.last_seq, "Cannot read committed events to replay; continuing with new ones.");
                    break;
                }
            }
        }
    }

    /// The next committed events after `after`, in seq order, from both lanes (at most
    /// a page of each; where both pages are full, cut at the lower of their last seqs so
    /// the merge never skips an event).
    pub(super) fn replay_page(&self, after: u64) -> Result<Vec<Event>, StoreError> {
        const PAGE: usize = 512;
        let mut all = Vec::new();
        let mut cut = u64::MAX;
        for lane in Lane::ALL {
            let page = self.reader.read_lane(lane, after, PAGE, 4 << 20)?;
            if page.len() == PAGE {
                cut = cut.min(page.last().map_or(u64::MAX, |e| e.seq));
            }
            all.extend(page);
        }
        let mut out: Vec<Event> = all
            .into_iter()
            .filter(|e| e.seq <= cut && e.seq <= self.replay_until)
            .filter_map(|e| Event::try_from(e).ok())
            .collect();
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }
}
