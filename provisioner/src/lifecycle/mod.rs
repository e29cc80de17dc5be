//! The lifecycle: the one place that decides what happens to a node and what it boots.
//! `machine` is the pure state machine, `plan` the rack plan and SKU matching; this module
//! carries their decisions out against the store, one node at a time, and keeps a copy of
//! every node's state in memory so that the boot plane can ask without waiting.

pub mod admission;
mod burnin;
pub mod machine;
pub mod plan;

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

/// Why an agent's credential was refused; the refusal is recorded against the MAC it claimed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentAuthError {
    #[error("no agent token (Authorization: Bearer)")]
    NoToken,
    #[error("unknown agent token")]
    UnknownToken,
    #[error("this token belongs to another node, not {0}")]
    OtherNode(MacAddr),
    #[error("token of an earlier boot (replayed); the node has booted since")]
    EarlierBoot,
    #[error("token already carried this boot's report (replayed)")]
    AlreadyReported,
}

impl crate::error::Kinded for AgentAuthError {
    fn kind(&self) -> Kind {
        match self {
            AgentAuthError::NoToken | AgentAuthError::UnknownToken => Kind::Unauthorized,
            _ => Kind::Forbidden,
        }
    }
}

/// Why an agent's call (a report, a question) was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Auth(#[from] AgentAuthError),
    #[error("the call names no node (no MAC)")]
    NoMac,
    #[error("node {0} is not known")]
    UnknownNode(MacAddr),
    /// The node's state does not take this call now.
    #[error("node {mac} is {state}; {what} is not taken now")]
    NotNow {
        mac: MacAddr,
        state: String,
        what: &'static str,
    },
    #[error("node {0} has no slot in the rack plan")]
    NoSlot(MacAddr),
    #[error("no burn-in profile for SKU {0}")]
    NoProfile(String),
    #[error(transparent)]
    Refused(#[from] machine::Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Kinded for AgentError {
    fn kind(&self) -> Kind {
        match self {
            AgentError::Auth(e) => e.kind(),
            AgentError::NoMac => Kind::BadRequest,
            AgentError::Store(_) => Kind::Unavailable,
            AgentError::UnknownNode(_)
            | AgentError::NotNow { .. }
            | AgentError::NoSlot(_)
            | AgentError::NoProfile(_)
            | AgentError::Refused(_) => Kind::Conflict,
        }
    }
}

/// Why an operator's action was not done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no node {0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] machine::Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AgentError {
    fn from(e: sqlx::Error) -> Self {
        AgentError::Store(StoreError::Query(e))
    }
}

impl crate::error::Kinded for ActionError {
    fn kind(&self) -> Kind {
        match self {
            ActionError::NotFound(_) => Kind::NotFound,
            ActionError::Refused(_) => Kind::Conflict,
            ActionError::Store(_) => Kind::Unavailable,
        }
    }
}

impl From<sqlx::Error> for ActionError {
    fn from(e: sqlx::Error) -> Self {
        ActionError::Store(StoreError::Query(e))
    }
}

/// Refused calls recorded per peer and minute; more are only logged.
pub const REFUSALS_PER_MINUTE: i64 = 30;

#[derive(Debug)]
pub struct Lifecycle {
    pool: Pool,
    skus: Arc<Skus>,
    profiles: Arc<Profiles>,
    timeouts: Timeouts,
    /// Every node's state, as committed: read by the boot plane without touching the store.
    states: RwLock<HashMap<MacAddr, State>>,
    /// One change at a time: each reads a node, decides, and writes it back.
    write: Mutex<()>,
    /// Committed changes, for the pages that show them live.
    changes: broadcast::Sender<Change>,
    /// Counts the committed changes of state: what the pages cache is keyed on.
    generation: std::sync::atomic::AtomicU64,
    /// How many new nodes peers and the site may bring into being.
    new_nodes: NewNodes,
}

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
const CHANGES_QUEUE: usize = 1024;

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
    pub async fn open(
        pool: Pool,
        skus: Skus,
        profiles: Profiles,
        timeouts: Timeouts,
        new_nodes: NewNodes,
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
            changes: broadcast::channel(CHANGES_QUEUE).0,
            generation: std::sync::atomic::AtomicU64::new(0),
            new_nodes,
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

    /// A node asks for its boot script. An unknown node is created (discovered); a node given
    /// the discovery image moves to inspecting and gets a new agent token, which supersedes
    /// the tokens of its earlier boots. What it boots is `boot::boot_target` of its state and of
    /// what the appliance `has`: a node with nothing to boot is told why and stays where it is,
    /// without a token.
    ///
    /// The token goes only to the node itself (`admission`): a requester the network knows as
    /// another MAC gets none and makes no node; while the node's boot has a token not yet used,
    /// a requester at another address gets none and supersedes nothing, unless the network
    /// vouches for it. A refused request is told why in its script and recorded against the
    /// MAC it named.
    pub async fn boot_requested(
        &self,
        mac: MacAddr,
        who: &Requester,
        has: Available,
    ) -> Result<BootDecision, StoreError> {
        if let Identity::Other(real) = who.identity {
            let why = format!(
                "{} is {real} on the provisioning network, not {mac}: no boot script with a token for it",
                who.addr
            );
            return Ok(self.refuse_boot(mac, who, why).await);
        }
        let one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut node = match db::nodes::node_by_mac(&mut tx, mac).await? {
            Some(n) => n,
            None => {
                if let Err(limited) = self.new_nodes.take(who, now) {
                    return Ok(BootDecision {
                        target: BootTarget::Wait(limited.to_string()),
                        token: None,
                    });
                }
                let n = db::nodes::insert_node(&mut tx, mac, &State::Discovered, now).await?;
                db::nodes::add_transition(
                    &mut tx,
                    n.id,
                    &db::nodes::TransitionRow {
                        at_ms: now,
                        from: "(new)".into(),
                        to: State::Discovered.name().into(),
                        cause: "first network boot".into(),
                        actor: Actor::Appliance.to_string(),
                    },
                )
                .await?;
                n
            }
        };
        let target = crate::boot::boot_target(Some(&node.state), has);
        let mut token = None;
        if target == BootTarget::Discovery {
            let addr = who.addr.to_string();
            if who.identity != Identity::Confirmed
                && let Some(holder) = db::tokens::unreported_agent_token(&mut tx, mac).await?
                && holder != addr
            {
                drop(tx);
                let why = format!(
                    "the boot of {mac} is being served to {holder}; a request from {addr} gets no token until that boot's report, its timeout or an operator's retry"
                );
                drop(one);
                return Ok(self.refuse_boot(mac, who, why).await);
            }
            if node.state == State::Discovered {
                node.state = apply(
                    &mut tx,
                    &node,
                    &Input::DiscoveryBooted,
                    &Actor::Appliance,
                    now,
                )
                .await?
                .expect("discovered nodes boot discovery")
                .state;
            }
            let t = new_token();
            db::tokens::issue_agent_token(&mut tx, &hash_token(&t), mac, &addr, now).await?;
            token = Some(t);
        }
        tx.commit().await?;
        let slot = node.slot.as_deref();
        self.cache(mac, node.state.clone(), slot, slot);
        Ok(BootDecision { target, token })
    }

    /// A boot script refused to `who`: recorded against the MAC it named, and said in the
    /// script so a person at the console reads why.
    async fn refuse_boot(&self, mac: MacAddr, who: &Requester, why: String) -> BootDecision {
        self.record_refusal(Some(mac), &who.addr.to_string(), "boot script", &why)
            .await;
        BootDecision {
            target: BootTarget::Wait(why),
            token: None,
        }
    }

    /// A committed state: kept for the boot plane, and told to the live pages, with the
    /// node's rack; a node that left a rack is told to that rack's pages too.
    fn cache(&self, mac: MacAddr, state: State, slot_before: Option<&str>, slot: Option<&str>) {
        let name = state.name();
        self.states
            .write()
            .expect("not poisoned")
            .insert(mac, state);
        let (before, after) = (slot_before.and_then(rack_of), slot.and_then(rack_of));
        self.announce(Change {
            node: Some(mac.to_string()),
            state: Some(name),
            rack: after.map(str::to_string),
        });
        if before.is_some() && before != after {
            self.announce(Change {
                node: Some(mac.to_string()),
                state: None,
                rack: before.map(str::to_string),
            });
        }
    }

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

    /// Checks an agent's bearer token against the MAC it speaks for. Refusals are recorded.
    async fn authenticate(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        bearer: Option<&str>,
        mac: MacAddr,
        for_report: bool,
    ) -> Result<String, AgentError> {
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            return Err(AgentAuthError::NoToken.into());
        };
        let hash = hash_token(token);
        let Some(rec) = db::tokens::agent_token(tx, &hash).await? else {
            return Err(AgentAuthError::UnknownToken.into());
        };
        if rec.mac != mac {
            return Err(AgentAuthError::OtherNode(mac).into());
        }
        match rec.status {
            db::tokens::TokenStatus::Superseded => Err(AgentAuthError::EarlierBoot.into()),
            db::tokens::TokenStatus::Reported if for_report => {
                Err(AgentAuthError::AlreadyReported.into())
            }
            _ => Ok(hash),
        }
    }

    /// Records a refused call against the MAC it claimed. A peer that keeps being refused is
    /// only logged past [`REFUSALS_PER_MINUTE`], so it cannot fill the store.
    pub async fn record_refusal(&self, mac: Option<MacAddr>, peer: &str, path: &str, why: &str) {
        let mac = mac.map(|m| m.to_string());
        warn!(
            mac = mac.as_deref().unwrap_or("-"),
            peer,
            path,
            reason = why,
            "call refused"
        );
        let now = now_ms();
        match db::refusals::refusals_since(&self.pool, peer, now - 60_000).await {
            Ok(n) if n >= REFUSALS_PER_MINUTE => return,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot count refused calls"),
        }
        if let Err(e) =
            db::refusals::add_refusal(&self.pool, mac.as_deref(), peer, path, why, now).await
        {
            warn!(error = %e, "cannot record a refused call");
        }
    }

    /// The node an agent's call speaks for: its MAC parsed, its token checked, the node found,
    /// all inside `tx`. Returns the MAC, the token's hash and the node.
    async fn calling_node(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        bearer: Option<&str>,
        mac: Option<MacAddr>,
        for_report: bool,
    ) -> Result<(MacAddr, String, db::nodes::NodeRecord), AgentError> {
        let mac = mac.ok_or(AgentError::NoMac)?;
        let hash = self.authenticate(tx, bearer, mac, for_report).await?;
        let Some(node) = db::nodes::node_by_mac(tx, mac).await? else {
            return Err(AgentError::UnknownNode(mac));
        };
        Ok((mac, hash, node))
    }

    /// The agent's inspection report: matched against the rack plan, it moves the node to
    /// inspected or fails it with the reason.
    pub async fn report(
        &self,
        bearer: Option<&str>,
        report: &InspectionReport,
    ) -> Result<State, AgentError> {
        let _one = self.write.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (mac, hash, node) = self
            .calling_node(&mut tx, bearer, Some(report.mac), true)
            .await?;
        if node.state != State::Inspecting {
            return Err(AgentError::NotNow {
                mac,
                state: node.state.to_string(),
                what: "an inspection report",
            });
        }
        let facts = serde_json::to_string(&report.facts).expect("facts serialize");
        db::nodes::set_facts(&mut tx, node.id, Some(&facts), Some(now)).await?;
        let plan = db::plan::plan(&mut tx).await?;
        let taken: Vec<Taken> = db::nodes::taken_slots(&mut tx)
            .await?
            .into_iter()
            .filter_map(|(slot, m)| m.parse().ok().map(|by| Taken { slot, by }))
            .collect();
        let mut contested = None;
        let input = match plan::match_slot(mac, &report.facts, &plan, &self.skus, &taken) {
            Claim::Matched(slot) => Input::Matched { slot },
            Claim::Mismatch(reason) => Input::Mismatched { reason },
            Claim::Conflict { reason, hold } => {
                warn!(%mac, reason = %reason, "slot conflict: an operator decides");
                if let Some(holder) = hold {
                    contested = Some((holder, reason.clone()));
                }
                Input::Mismatched {
                    reason: format!("conflict: {reason}"),
                }
            }
        };
        let applied = apply(&mut tx, &node, &input, &Actor::Agent, now).await??;
        // The holder of a contested slot stops where it is until an operator decides.
        let mut held = None;
        if let Some((holder, reason)) = contested
            && let Some(h) = db::nodes::node_by_mac(&mut tx, holder).await?
        {
            let why = format!("conflict: {reason}; held until an operator decides");
            if let Ok(done) = apply(
                &mut tx,
                &h,
                &Input::Contested { reason: why },
                &Actor::Appliance,
                now,
            )
            .await?
            {
                held = Some((holder, h.slot.clone(), done));
            }
        }
        db::tokens::mark_token_reported(&mut tx, &hash).await?;
        tx.commit().await?;
        info!(%mac, state = %applied.state, "inspection report taken");
        let state = applied.state.clone();
        self.cache(
            mac,
            applied.state,
            node.slot.as_deref(),
            applied.slot.as_deref(),
        );
        if let Some((holder, before, done)) = held {
            warn!(mac = %holder, "held: its slot is contested");
            self.cache(holder, done.state, before.as_deref(), done.slot.as_deref());
        }
        Ok(state)
    }

    /// What the agent on `mac` should do now, from the node's state.
    pub async fn next_for_agent(
        &self,
        bearer: Option<&str>,
        mac: MacAddr,
    ) -> Result<Instruction, AgentError> {
        let mut tx = self.pool.begin().await?;
        let hash = self.authenticate(&mut tx, bearer, mac, false).await?;
        let reported = db::tokens::agent_token(&mut tx, &hash)
            .await?
            .is_some_and(|t| t.status == db::tokens::TokenStatus::Reported);
        let node = db::nodes::node_by_mac(&mut tx, mac).await?;
        let Some(node) = node else {
            return Err(AgentError::UnknownNode(mac));
        };
        let next = match node.state {
            State::BurningIn => self.burnin_instruction(&mut tx, &node).await?,
            _ => instruction(&node.state, node.slot.as_deref(), reported),
        };
        tx.commit().await?;
        Ok(next)
    }

    /// An operator's action on a node.
    pub async fn act(
        &self,
        node: &str,
        action: Action,
        actor: &Actor,
    ) -> Result<State, ActionError> {
        let state = self
            .apply_input(node, Input::Operator(action), actor)
            .await?;
        info!(node, action = action.as_str(), %actor, state = %state, "operator action");
        Ok(state)
    }

    /// A node by its id or its MAC.
    pub async fn find(&self, node: &str) -> Result<Option<db::nodes::NodeRecord>, StoreError> {
        if let Ok(id) = node.parse::<i64>() {
            return db::nodes::node_by_id(&self.pool, id).await;
        }
        let Ok(mac) = node.parse::<MacAddr>() else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        let n = db::nodes::node_by_mac(&mut tx, mac).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Fails every node whose step has run past its timeout. Returns how many.
    pub async fn expire(&self) -> Result<usize, StoreError> {
        self.expire_at(now_ms()).await
    }

    /// [`Lifecycle::expire`] with the clock given (Unix ms).
    pub async fn expire_at(&self, now: i64) -> Result<usize, StoreError> {
        let _one = self.write.lock().await;
        let mut failed = 0;
        let timed: Vec<&str> = Step::ALL
            .iter()
            .filter(|s| self.timeouts.0.contains_key(s))
            .map(|s| s.as_str())
            .collect();
        for node in db::nodes::nodes_in_states(&self.pool, &timed).await? {
            let Some(step) = node.state.step() else {
                continue;
            };
            let Some(limit) = self.timeouts.0.get(&step) else {
                continue;
            };
            if now - node.state_since_ms < limit.as_millis() as i64 {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let input = Input::TimedOut { after: *limit };
            if let Ok(applied) = apply(&mut tx, &node, &input, &Actor::Appliance, now).await? {
                tx.commit().await?;
                warn!(mac = %node.mac, state = %applied.state, "step timed out");
                self.cache(
                    node.mac,
                    applied.state,
                    node.slot.as_deref(),
                    applied.slot.as_deref(),
                );
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Checks the timeouts every `every` until `shutdown`.
    pub async fn run_timeouts(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.expire().await {
                warn!(error = %e, "cannot check step timeouts");
            }
        }
    }
}

/// What a transition left: the node's new state, and its slot after the transition's effects.
struct Applied {
    state: State,
    slot: Option<String>,
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
    if matches!(t.to, State::Discovered | State::Retired) {
        // Starting over (retry, reprovision) or retired: no token of an earlier boot stands.
        db::tokens::end_agent_tokens(tx, node.mac).await?;
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
    Ok(Ok(Applied { state: t.to, slot }))
}

/// The rack (`site/row/rack`) of a slot (`site/row/rack/U10`).
pub fn rack_of(slot: &str) -> Option<&str> {
    slot.rsplit_once('/').map(|(rack, _)| rack)
}

/// The agent's next instruction for a node in `state`.
fn instruction(state: &State, slot: Option<&str>, reported: bool) -> Instruction {
    match state {
        State::Inspecting if !reported => Instruction::Report,
        State::Inspecting => Instruction::Wait {
            seconds: 10,
            reason: "report received; waiting for the appliance".into(),
        },
        State::Inspected => Instruction::PowerOff {
            reason: format!(
                "inspected and matched to slot {}; powering off until installation",
                slot.unwrap_or("?")
            ),
        },
        State::Held { .. } => Instruction::Wait {
            seconds: 30,
            reason: "held by an operator".into(),
        },
        s @ (State::Failed { .. } | State::Retired) => Instruction::PowerOff {
            reason: format!("this node is {s}"),
        },
        s @ (State::Discovered | State::Installing | State::BurningIn | State::Enrolled) => {
            Instruction::Reboot {
                reason: format!("this node is {}; rebooting into what that needs", s.name()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_names_its_rack() {
        assert_eq!(rack_of("dc1/r1/a01/U10"), Some("dc1/r1/a01"));
        assert_eq!(rack_of("U10"), None);
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
