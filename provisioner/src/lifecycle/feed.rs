//! The live feed: every committed change, told to the pages that follow it, and a generation
//! counter the pages' caches are keyed on.

use super::*;

/// A committed change, as the live pages hear of it: a node's new state, a node's burn-in
/// progress, or a rack's checklist. Serialized flat: `{"node": MAC, "state": "failed"}`,
/// `{"node": MAC}`, `{"rack": "site/row/rack"}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Change {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// Changes a slow listener may fall behind by before it is told to read everything again.
pub(super) const CHANGES_QUEUE: usize = 1024;

impl Lifecycle {
    /// Tells the live pages of a committed change. Nobody listening is fine.
    pub fn announce(&self, change: Change) {
        if change.state.is_some() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let _ = self.changes.send(change);
    }

    /// How many changes of state were committed since the appliance started: a page built
    /// from the nodes' states at one generation is current until the next.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every change committed from now on; a listener that falls more than
    /// `CHANGES_QUEUE` behind is told it lagged.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}
