//! The lifecycle: the one place that decides what happens to a node and what it boots.
//! `machine` is the pure state machine, `plan` the rack plan and SKU matching; this module
//! carries their decisions out against the store, one node at a time, and keeps a copy of
//! every node's state in memory so that the boot plane can ask without waiting.

pub mod admission;
mod agent;
mod booting;
mod burnin;
mod drivers;
mod errors;
mod feed;
mod install;
pub mod machine;
mod operator;
pub mod plan;
mod timeouts;

pub use agent::REFUSALS_PER_MINUTE;
pub use errors::{ActionError, AgentAuthError, AgentError};
pub use feed::Change;
pub use install::{InstallSettings, hostname_of};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use provisioner_protocol::{InspectionReport, Instruction};
use sha2::Digest;
use tokio::sync::{Mutex, broadcast};
use tracing::{info, warn};

use crate::boot::{Available, BootDecision, BootTarget};
use crate::burnin::profile::Profiles;
use crate::clock::now_ms;
use crate::error::Kind;
use crate::store as db;
use crate::store::{Pool, StoreError};
use crate::types::MacAddr;
use admission::Identity;
use admission::{NewNodes, Requester};
use machine::{Action, Actor, Effect, Input, State, Step};
use plan::{Claim, Skus, Taken};

/// How long each step may take before the node fails with "timed out".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts(pub HashMap<Step, Duration>);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts(HashMap::from([
            (Step::Discovered, Duration::from_secs(30 * 60)),
            (Step::Inspecting, Duration::from_secs(15 * 60)),
            (Step::Installing, Duration::from_secs(60 * 60)),
            (Step::BurningIn, Duration::from_secs(24 * 60 * 60)),
        ]))
    }
}

#[derive(Debug)]
pub struct Lifecycle {
    pool: Pool,
    skus: Arc<Skus>,
    profiles: Arc<Profiles>,
    timeouts: Timeouts,
    /// Every node's state, as committed: read by the boot plane without touching the store.
    /// Owned by this `Lifecycle`: loaded once at `open`, then written only by `commit`, after
    /// the transaction that changed a node has committed (never before, so a rolled back
    /// change is never seen). Every change of a node's state goes through this `Lifecycle`
    /// (under `write`), so the copy cannot drift from the store; a second appliance on the
    /// same store would not be seen until the store can notify (the PostgreSQL issue).
    states: RwLock<HashMap<MacAddr, State>>,
    /// One change at a time: each reads a node, decides, and writes it back.
    write: Mutex<()>,
    /// Committed changes, for the pages that show them live.
    changes: broadcast::Sender<Change>,
    /// Counts the committed changes of state: what the pages cache is keyed on. Moved only by
    /// `announce`, so a page cached under one generation saw every change before it.
    generation: std::sync::atomic::AtomicU64,
    /// How many new nodes peers and the site may bring into being.
    new_nodes: NewNodes,
    /// How inspected nodes are installed.
    install: InstallSettings,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A new random token: 32 bytes from the kernel, as hex.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the kernel's random source is available");
    hex::encode(b)
}

impl Lifecycle {
    /// A lifecycle with no image library: inspected nodes wait for one.
    pub async fn open(
        pool: Pool,
        skus: Skus,
        profiles: Profiles,
        timeouts: Timeouts,
        new_nodes: NewNodes,
    ) -> Result<Arc<Self>, StoreError> {
        Self::open_with(
            pool,
            skus,
            profiles,
            timeouts,
            new_nodes,
            InstallSettings::default(),
        )
        .await
    }

    pub async fn open_with(
        pool: Pool,
        skus: Skus,
        profiles: Profiles,
        timeouts: Timeouts,
        new_nodes: NewNodes,
        install: InstallSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let mut states = HashMap::new();
        for n in db::nodes::all_nodes(&pool).await? {
            states.insert(n.mac, n.state);
        }
        Ok(Arc::new(Lifecycle {
            pool,
            skus: Arc::new(skus),
            profiles: Arc::new(profiles),
            timeouts,
            states: RwLock::new(states),
            write: Mutex::new(()),
            changes: broadcast::channel(feed::CHANGES_QUEUE).0,
            generation: std::sync::atomic::AtomicU64::new(0),
            new_nodes,
            install,
        }))
    }

    pub fn skus(&self) -> &Skus {
        &self.skus
    }

    /// The burn-in profiles in use: the node page draws their floors.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// How many nodes are in each state, every state named (zero included).
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let states = self.states.read().expect("not poisoned");
        machine::STATE_NAMES
            .iter()
            .map(|name| (*name, states.values().filter(|s| s.name() == *name).count()))
            .collect()
    }

    pub fn state(&self, mac: MacAddr) -> Option<State> {
        self.states.read().expect("not poisoned").get(&mac).cloned()
    }

    /// Commits `tx` and then, only then, keeps each node's new state for the boot plane and
    /// tells the live pages, with the node's rack; a node that left a rack is told to that
    /// rack's pages too. The one way a change of a node reaches the copy in memory.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Sqlite>,
        done: impl IntoIterator<Item = Applied>,
    ) -> Result<(), StoreError> {
        tx.commit().await?;
        for d in done {
            self.cache(d);
        }
        Ok(())
    }

    fn cache(&self, d: Applied) {
        let name = d.state.name();
        self.states
            .write()
            .expect("not poisoned")
            .insert(d.mac, d.state);
        let before = d.slot_before.as_deref().and_then(rack_of);
        let after = d.slot.as_deref().and_then(rack_of);
        let left = before.filter(|b| Some(b) != after.as_ref());
        self.announce(Change {
            node: Some(d.mac.to_string()),
            state: Some(name),
            rack: after.map(|r| r.to_string()),
        });
        if let Some(left) = left {
            self.announce(Change {
                node: Some(d.mac.to_string()),
                state: None,
                rack: Some(left.to_string()),
            });
        }
    }
}

/// What a transition left, to be kept once committed: the node's new state, and its slot
/// before and after the transition's effects.
#[derive(Debug)]
struct Applied {
    mac: MacAddr,
    state: State,
    slot_before: Option<String>,
    slot: Option<String>,
}

impl Applied {
    /// A node as it is, for a change that did not move it (a new node, a provisional run).
    fn unchanged(node: &db::nodes::NodeRecord) -> Self {
        Applied {
            mac: node.mac,
            state: node.state.clone(),
            slot_before: node.slot.clone(),
            slot: node.slot.clone(),
        }
    }
}

/// Applies `input` to `node` inside `tx`: the new state, its transition and its effects.
/// The outer error is the store's; the inner one a transition the state does not allow.
async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    node: &db::nodes::NodeRecord,
    input: &Input,
    actor: &Actor,
    now: i64,
) -> Result<Result<Applied, machine::Refused>, StoreError> {
    let t = match machine::next(&node.state, input) {
        Ok(t) => t,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut slot = node.slot.clone();
    for effect in &t.effects {
        match effect {
            Effect::AssignSlot(s) => {
                db::nodes::set_slot(tx, node.id, Some(s)).await?;
                slot = Some(s.clone());
            }
            Effect::ReleaseSlot => {
                db::nodes::set_slot(tx, node.id, None).await?;
                slot = None;
            }
            Effect::ClearFacts => db::nodes::set_facts(tx, node.id, None, None).await?,
        }
    }
    // (A retired node's wipe keeps it retired: that boot's token still stands, to be told off.)
    if matches!(t.to, State::Discovered | State::Retired { .. })
        && !matches!(node.state, State::Retired { .. })
    {
        // Starting over (retry, reprovision) or retired: no token of an earlier boot stands,
        // nor the credential of an earlier install.
        db::tokens::end_agent_tokens(tx, node.mac).await?;
        db::installs::end_all(tx, node.id, now).await?;
    }
    db::nodes::set_state(tx, node.id, &t.to, now).await?;
    db::nodes::add_transition(
        tx,
        node.id,
        &db::nodes::TransitionRow {
            at_ms: now,
            from: node.state.name().into(),
            to: t.to.name().into(),
            cause: t.cause,
            actor: actor.to_string(),
        },
    )
    .await?;
    Ok(Ok(Applied {
        mac: node.mac,
        state: t.to,
        slot_before: node.slot.clone(),
        slot,
    }))
}

/// The rack (`site/row/rack`) of a slot (`site/row/rack/U10`).
pub fn rack_of(slot: &str) -> Option<crate::types::RackId> {
    slot.parse::<crate::types::SlotId>().ok().map(|s| s.rack)
}

#[cfg(test)]
mod tests {
    use super::agent::instruction;
    use super::*;

    #[test]
    fn a_slot_names_its_rack() {
        assert_eq!(
            rack_of("dc1/r1/a01/U10").map(|r| r.to_string()),
            Some("dc1/r1/a01".to_string())
        );
        assert_eq!(rack_of("U10"), None);
        assert_eq!(rack_of("dc1/r1/a01/10"), None);
    }

    #[test]
    fn changes_are_told_flat_for_the_live_pages() {
        let c = Change {
            node: Some("52:54:00:00:00:01".into()),
            state: Some("held"),
            rack: Some("dc1/r1/a01".into()),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"node":"52:54:00:00:00:01","state":"held","rack":"dc1/r1/a01"}"#
        );
        let progress = Change {
            node: Some("52:54:00:00:00:01".into()),
            ..Change::default()
        };
        assert_eq!(
            serde_json::to_string(&progress).unwrap(),
            r#"{"node":"52:54:00:00:00:01"}"#
        );
    }

    #[test]
    fn the_agent_is_told_what_its_state_means() {
        assert_eq!(
            instruction(&State::Inspecting, None, false),
            Instruction::Report
        );
        assert!(matches!(
            instruction(&State::Inspecting, None, true),
            Instruction::Wait { .. }
        ));
        let Instruction::PowerOff { reason } =
            instruction(&State::Inspected, Some("dc1/r1/a01/U10"), true)
        else {
            panic!()
        };
        assert!(reason.contains("dc1/r1/a01/U10"));
        assert!(matches!(
            instruction(&State::Installing { written: true }, None, true),
            Instruction::Reboot { .. }
        ));
        let failed = State::Failed {
            step: Step::Inspecting,
            reason: "not in the rack plan".into(),
        };
        let Instruction::PowerOff { reason } = instruction(&failed, None, true) else {
            panic!()
        };
        assert!(reason.contains("not in the rack plan"), "{reason}");
        assert!(matches!(
            instruction(&State::Discovered, None, false),
            Instruction::Reboot { .. }
        ));
    }

    #[test]
    fn tokens_are_random_and_kept_only_as_hashes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }
}
