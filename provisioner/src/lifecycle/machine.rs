//! The node lifecycle as a pure function: a state and an input give the next state and the
//! effects to carry out, or a refusal that says why. Nothing here touches the store, the
//! clock or the network; the service in `lifecycle/mod.rs` does, with what this returns.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a node is. `held` remembers where it was, so a release puts it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Discovered,
    Inspecting,
    Inspected,
    /// Its disk is being written from the discovery image; `written`: the image is on it and
    /// was read back, so it boots its disk from now on and its installed system reports next.
    Installing {
        #[serde(default)]
        written: bool,
    },
    BurningIn,
    Enrolled,
    Failed {
        step: Step,
        reason: String,
    },
    Held {
        from: Box<State>,
    },
    /// Out of service for good. `wiped`: the disk an install wrote had its signatures wiped
    /// (or there was none), so the node is only told to stay off; until then it boots the
    /// discovery image once more for its agent to wipe it.
    Retired {
        #[serde(default)]
        wiped: bool,
    },
}

/// The steps that can fail or time out: the working states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Discovered,
    Inspecting,
    Installing,
    BurningIn,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::Discovered,
        Step::Inspecting,
        Step::Installing,
        Step::BurningIn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Discovered => "discovered",
            Step::Inspecting => "inspecting",
            Step::Installing => "installing",
            Step::BurningIn => "burning_in",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Every state's name, in the order of the flow.
pub const STATE_NAMES: [&str; 9] = [
    "discovered",
    "inspecting",
    "inspected",
    "installing",
    "burning_in",
    "enrolled",
    "failed",
    "held",
    "retired",
];

impl State {
    /// The name stored and shown: `discovered`, `failed`, `held`...
    pub fn name(&self) -> &'static str {
        match self {
            State::Discovered => "discovered",
            State::Inspecting => "inspecting",
            State::Inspected => "inspected",
            State::Installing { .. } => "installing",
            State::BurningIn => "burning_in",
            State::Enrolled => "enrolled",
            State::Failed { .. } => "failed",
            State::Held { .. } => "held",
            State::Retired { .. } => "retired",
        }
    }

    /// The step this state is, when it is one that works towards the next and so can time out.
    pub fn step(&self) -> Option<Step> {
        match self {
            State::Discovered => Some(Step::Discovered),
            State::Inspecting => Some(Step::Inspecting),
            State::Installing { .. } => Some(Step::Installing),
            State::BurningIn => Some(Step::BurningIn),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Failed { step, reason } => write!(f, "failed at {}: {reason}", step.as_str()),
            State::Held { from } => write!(f, "held (from {})", from.name()),
            s => f.write_str(s.name()),
        }
    }
}

/// What an operator may ask of a node (`POST /api/v1/nodes/{id}/actions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop the node where it is.
    Hold,
    /// Undo a hold: back to where it was.
    Release,
    /// After a failure, go through discovery and inspection again.
    Retry,
    /// Start over from discovery, whatever the state (the slot is given up).
    Reprovision,
    /// Take the node out of service for good.
    Retire,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Hold,
        Action::Release,
        Action::Retry,
        Action::Reprovision,
        Action::Retire,
    ];

    /// The actions `state` allows, for the buttons a page offers.
    pub fn allowed(state: &State) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| next(state, &Input::Operator(*a)).is_ok())
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Hold => "hold",
            Action::Release => "release",
            Action::Retry => "retry",
            Action::Reprovision => "reprovision",
            Action::Retire => "retire",
        }
    }
}

/// What happened to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// It fetched its boot script and was given the discovery image.
    DiscoveryBooted,
    /// Its agent reported facts that matched a slot of the rack plan.
    Matched { slot: String },
    /// Its agent reported facts that do not fit the plan: why, naming the slot and what differs.
    Mismatched { reason: String },
    /// The appliance chose its image and disk: the agent is told to write it (what, in words).
    InstallStarted { what: String },
    /// An inspected node cannot be installed: no disk or several match its hints (why,
    /// naming the candidates).
    CannotInstall { reason: String },
    /// The agent wrote the image and read it back; the node boots its disk from now on.
    DiskWritten,
    /// The installed system booted and reported the image it runs.
    Installed,
    /// The agent wiped the disk of a retired node (or there was nothing to wipe).
    DiskWiped,
    /// Burn-in passed.
    BurnInPassed,
    /// A step failed, with why.
    StepFailed { reason: String },
    /// The state's timeout ran out.
    TimedOut { after: Duration },
    /// Another node claims this node's slot: it stops where it is until an operator decides
    /// which of the two is genuine (why, naming the other).
    Contested { reason: String },
    /// An operator asked.
    Operator(Action),
}

/// Who caused a transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// The appliance itself (a boot, a timeout).
    Appliance,
    /// The node's agent.
    Agent,
    /// An operator, by the name of the token used.
    Operator(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Appliance => f.write_str("appliance"),
            Actor::Agent => f.write_str("agent"),
            Actor::Operator(name) => write!(f, "operator:{name}"),
        }
    }
}

/// What the caller must do besides storing the new state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Bind the node to this rack slot.
    AssignSlot(String),
    /// Give up its slot (reprovision, retire).
    ReleaseSlot,
    /// Drop the node's facts: the next inspection starts afresh.
    ClearFacts,
}

/// The result of one accepted input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub to: State,
    /// Why, in words, for the timeline.
    pub cause: String,
    pub effects: Vec<Effect>,
}

/// An input the state does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a node that is {state} cannot {what}")]
pub struct Refused {
    pub state: String,
    pub what: String,
}

impl crate::error::Kinded for Refused {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Conflict
    }
}

fn describe(input: &Input) -> String {
    match input {
        Input::DiscoveryBooted => "boot the discovery image".into(),
        Input::Matched { .. } | Input::Mismatched { .. } => "take an inspection report".into(),
        Input::InstallStarted { .. } => "start installing".into(),
        Input::CannotInstall { .. } => "be refused an install".into(),
        Input::DiskWritten => "have its disk written".into(),
        Input::Installed => "finish installing".into(),
        Input::DiskWiped => "have its disk wiped".into(),
        Input::BurnInPassed => "pass burn-in".into(),
        Input::StepFailed { .. } => "fail a step".into(),
        Input::TimedOut { .. } => "time out".into(),
        Input::Contested { .. } => "be held for a contested slot".into(),
        Input::Operator(a) => format!("be asked to {}", a.as_str()),
    }
}

/// The one place the lifecycle is decided: `state` given `input`.
pub fn next(state: &State, input: &Input) -> Result<Transition, Refused> {
    use Effect::*;
    use Input::*;
    use State::*;
    let go = |to: State, cause: String, effects: Vec<Effect>| Ok(Transition { to, cause, effects });
    match (state, input) {
        (Discovered, DiscoveryBooted) => {
            go(Inspecting, "booted the discovery image".into(), vec![])
        }
        (Inspecting, Matched { slot }) => go(
            Inspected,
            format!("inspected; matched to slot {slot}"),
            vec![AssignSlot(slot.clone())],
        ),
        (Inspecting, Mismatched { reason }) => go(
            Failed {
                step: Step::Inspecting,
                reason: reason.clone(),
            },
            reason.clone(),
            vec![],
        ),
        (Inspected, InstallStarted { what }) => {
            go(Installing { written: false }, what.clone(), vec![])
        }
        (Inspected, CannotInstall { reason }) => go(
            Failed {
                step: Step::Installing,
                reason: reason.clone(),
            },
            reason.clone(),
            vec![],
        ),
        (Installing { written: false }, DiskWritten) => go(
            Installing { written: true },
            "image written and read back; it boots its disk from now on".into(),
            vec![],
        ),
        (Retired { wiped: false }, DiskWiped) => go(
            Retired { wiped: true },
            "its disk's signatures wiped: it boots nothing".into(),
            vec![],
        ),
        (Installing { written: true }, Installed) => go(
            BurningIn,
            "the installed system booted the image it was given".into(),
            vec![],
        ),
        (BurningIn, BurnInPassed) => go(Enrolled, "burn-in passed".into(), vec![]),
        (s, StepFailed { reason }) if s.step().is_some() => go(
            Failed {
                step: s.step().expect("checked"),
                reason: reason.clone(),
            },
            reason.clone(),
            vec![],
        ),
        (s, TimedOut { after }) if s.step().is_some() => {
            let step = s.step().expect("checked");
            let after = humantime::format_duration(*after);
            let reason = match step {
                Step::Discovered => format!("did not boot the discovery image within {after}"),
                _ => format!("{} timed out after {after}", step.as_str()),
            };
            go(
                Failed {
                    step,
                    reason: reason.clone(),
                },
                reason,
                vec![],
            )
        }
        (Held { .. } | Retired { .. }, Operator(Action::Hold) | Contested { .. }) => {
            Err(refused(state, input))
        }
        (s, Contested { reason }) => go(
            Held {
                from: Box::new(s.clone()),
            },
            reason.clone(),
            vec![],
        ),
        (s, Operator(Action::Hold)) => go(
            Held {
                from: Box::new(s.clone()),
            },
            "held by an operator".into(),
            vec![],
        ),
        (Held { from }, Operator(Action::Release)) => {
            go((**from).clone(), "released by an operator".into(), vec![])
        }
        (Failed { .. }, Operator(Action::Retry)) => go(
            Discovered,
            "retried by an operator".into(),
            vec![ReleaseSlot, ClearFacts],
        ),
        (Retired { .. }, Operator(Action::Reprovision)) => Err(refused(state, input)),
        (_, Operator(Action::Reprovision)) => go(
            Discovered,
            "reprovisioned by an operator".into(),
            vec![ReleaseSlot, ClearFacts],
        ),
        (Retired { .. }, Operator(Action::Retire)) => Err(refused(state, input)),
        (_, Operator(Action::Retire)) => go(
            Retired { wiped: false },
            "retired by an operator".into(),
            vec![ReleaseSlot],
        ),
        _ => Err(refused(state, input)),
    }
}

fn refused(state: &State, input: &Input) -> Refused {
    Refused {
        state: match state {
            State::Failed { step, .. } => format!("failed (at {})", step.as_str()),
            State::Held { from } => format!("held (from {})", from.name()),
            s => s.name().to_string(),
        },
        what: describe(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(step: Step, reason: &str) -> State {
        State::Failed {
            step,
            reason: reason.into(),
        }
    }

    fn held(from: State) -> State {
        State::Held {
            from: Box::new(from),
        }
    }

    fn every_state() -> Vec<State> {
        vec![
            State::Discovered,
            State::Inspecting,
            State::Inspected,
            State::Installing { written: false },
            State::Installing { written: true },
            State::BurningIn,
            State::Enrolled,
            failed(Step::Inspecting, "x"),
            held(State::Inspecting),
            State::Retired { wiped: false },
            State::Retired { wiped: true },
        ]
    }

    fn every_input() -> Vec<Input> {
        vec![
            Input::DiscoveryBooted,
            Input::Matched { slot: "s".into() },
            Input::Mismatched { reason: "r".into() },
            Input::InstallStarted { what: "w".into() },
            Input::CannotInstall { reason: "r".into() },
            Input::DiskWritten,
            Input::Installed,
            Input::DiskWiped,
            Input::BurnInPassed,
            Input::StepFailed { reason: "r".into() },
            Input::TimedOut {
                after: Duration::from_secs(900),
            },
            Input::Contested { reason: "r".into() },
            Input::Operator(Action::Hold),
            Input::Operator(Action::Release),
            Input::Operator(Action::Retry),
            Input::Operator(Action::Reprovision),
            Input::Operator(Action::Retire),
        ]
    }

    /// Every legal transition, with its result; anything not listed here must be refused.
    fn legal() -> Vec<(State, Input, State, Vec<Effect>)> {
        use Effect::*;
        let timed_out = Input::TimedOut {
            after: Duration::from_secs(900),
        };
        let fail = Input::StepFailed { reason: "r".into() };
        let mut t = vec![
            (
                State::Discovered,
                Input::DiscoveryBooted,
                State::Inspecting,
                vec![],
            ),
            (
                State::Inspecting,
                Input::Matched { slot: "s".into() },
                State::Inspected,
                vec![AssignSlot("s".into())],
            ),
            (
                State::Inspecting,
                Input::Mismatched { reason: "r".into() },
                failed(Step::Inspecting, "r"),
                vec![],
            ),
            (
                State::Inspected,
                Input::InstallStarted { what: "w".into() },
                State::Installing { written: false },
                vec![],
            ),
            (
                State::Inspected,
                Input::CannotInstall { reason: "r".into() },
                failed(Step::Installing, "r"),
                vec![],
            ),
            (
                State::Installing { written: false },
                Input::DiskWritten,
                State::Installing { written: true },
                vec![],
            ),
            (
                State::Installing { written: true },
                Input::Installed,
                State::BurningIn,
                vec![],
            ),
            (
                State::Retired { wiped: false },
                Input::DiskWiped,
                State::Retired { wiped: true },
                vec![],
            ),
            (
                State::BurningIn,
                Input::BurnInPassed,
                State::Enrolled,
                vec![],
            ),
            (
                failed(Step::Inspecting, "x"),
                Input::Operator(Action::Retry),
                State::Discovered,
                vec![ReleaseSlot, ClearFacts],
            ),
            (
                held(State::Inspecting),
                Input::Operator(Action::Release),
                State::Inspecting,
                vec![],
            ),
        ];
        for (s, step) in [
            (State::Discovered, Step::Discovered),
            (State::Inspecting, Step::Inspecting),
            (State::Installing { written: false }, Step::Installing),
            (State::Installing { written: true }, Step::Installing),
            (State::BurningIn, Step::BurningIn),
        ] {
            t.push((s.clone(), fail.clone(), failed(step, "r"), vec![]));
            let reason = match step {
                Step::Discovered => "did not boot the discovery image within 15m".to_string(),
                _ => format!("{} timed out after 15m", step.as_str()),
            };
            t.push((s, timed_out.clone(), failed(step, &reason), vec![]));
        }
        for s in every_state() {
            if !matches!(s, State::Held { .. } | State::Retired { .. }) {
                t.push((
                    s.clone(),
                    Input::Operator(Action::Hold),
                    held(s.clone()),
                    vec![],
                ));
                t.push((
                    s.clone(),
                    Input::Contested { reason: "r".into() },
                    held(s.clone()),
                    vec![],
                ));
            }
            if !matches!(s, State::Retired { .. }) {
                t.push((
                    s.clone(),
                    Input::Operator(Action::Reprovision),
                    State::Discovered,
                    vec![ReleaseSlot, ClearFacts],
                ));
                t.push((
                    s,
                    Input::Operator(Action::Retire),
                    State::Retired { wiped: false },
                    vec![ReleaseSlot],
                ));
            }
        }
        t
    }

    #[test]
    fn every_legal_transition_goes_where_it_should() {
        for (from, input, to, effects) in legal() {
            let got = next(&from, &input)
                .unwrap_or_else(|e| panic!("{from:?} + {input:?} was refused: {e}"));
            assert_eq!(got.to, to, "{from:?} + {input:?}");
            assert_eq!(got.effects, effects, "{from:?} + {input:?}");
            assert!(!got.cause.is_empty());
        }
    }

    #[test]
    fn every_other_input_is_refused_with_the_state_named() {
        let legal = legal();
        let mut refused = 0;
        for from in every_state() {
            for input in every_input() {
                if legal.iter().any(|(f, i, _, _)| *f == from && *i == input) {
                    continue;
                }
                let err = next(&from, &input).expect_err(&format!("{from:?} + {input:?}"));
                assert!(err.to_string().contains(from.name()), "{err}");
                refused += 1;
            }
        }
        // 11 states (installing and retired twice each) × 17 inputs, less the legal ones: the
        // table is the whole machine.
        assert_eq!(refused + legal.len(), 11 * 17);
    }

    #[test]
    fn a_mismatch_fails_inspection_with_its_reason() {
        let t = next(
            &State::Inspecting,
            &Input::Mismatched {
                reason: "slot dc1/r1/a01/U10 expects 8 GPUs; node has 0".into(),
            },
        )
        .unwrap();
        assert_eq!(
            t.to.to_string(),
            "failed at inspecting: slot dc1/r1/a01/U10 expects 8 GPUs; node has 0"
        );
    }

    #[test]
    fn every_state_is_named_once() {
        let mut names: Vec<&str> = every_state().iter().map(State::name).collect();
        names.dedup();
        assert_eq!(names, STATE_NAMES);
    }

    #[test]
    fn states_survive_the_store() {
        for s in every_state() {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s, "{json}");
        }
        // Stored before the written flag: not written.
        assert_eq!(
            serde_json::from_str::<State>(r#"{"state":"installing"}"#).unwrap(),
            State::Installing { written: false }
        );
    }
}
