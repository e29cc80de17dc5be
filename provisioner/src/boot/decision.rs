//! What a node boots, decided from its state and from what the appliance has to give: the one
//! place the answer is made. DHCP, TFTP and HTTP ask through `BootContext`; the lifecycle
//! asks here when a node requests its script.

use crate::lifecycle::machine::State;

/// What a node is given when it network-boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// The discovery kernel and initramfs with the agent (which also writes the OS image).
    Discovery,
    /// Its own disk.
    LocalDisk,
    /// Nothing to boot now: print why and ask again later.
    Wait(String),
}

/// What the appliance has to give a node now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Available {
    /// A discovery image is imported.
    pub discovery: bool,
}

/// Why a node that should boot the discovery image waits instead.
pub const NO_DISCOVERY: &str = "no discovery image is configured (build one with `provisioner image build-discovery`, or give --discovery-kernel and --discovery-initrd)";

/// What a node in `state` (none: never seen) boots, given what is available.
pub fn boot_target(state: Option<&State>, have: Available) -> BootTarget {
    match state {
        // The agent in the discovery image inspects, and writes the OS image: a node whose
        // disk is not written yet (a power loss mid-write) boots it again and starts over.
        None
        | Some(State::Discovered | State::Inspecting | State::Installing { written: false })
            if have.discovery =>
        {
            BootTarget::Discovery
        }
        None
        | Some(State::Discovered | State::Inspecting | State::Installing { written: false }) => {
            BootTarget::Wait(NO_DISCOVERY.into())
        }
        // Inspected and powered on again: its agent is told to install (the image is there
        // now) or, again, why not.
        Some(State::Inspected) if have.discovery => BootTarget::Discovery,
        Some(State::Inspected) => BootTarget::Wait(NO_DISCOVERY.into()),
        Some(State::Installing { written: true } | State::BurningIn | State::Enrolled) => {
            BootTarget::LocalDisk
        }
        // Retired: once more the discovery image, whose agent wipes the disk it was given.
        Some(State::Retired { wiped: false }) if have.discovery => BootTarget::Discovery,
        Some(s @ (State::Failed { .. } | State::Held { .. } | State::Retired { .. })) => {
            BootTarget::Wait(format!("this node is {s}; waiting for an operator"))
        }
    }
}

/// What a node gets when it asks for its boot script: the target, and a fresh agent token
/// when it boots something that runs the agent.
#[derive(Clone, Debug)]
pub struct BootDecision {
    pub target: BootTarget,
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::machine::Step;

    const ALL: Available = Available { discovery: true };

    #[test]
    fn what_a_node_boots_follows_its_state_and_what_there_is() {
        assert_eq!(boot_target(None, ALL), BootTarget::Discovery);
        assert_eq!(
            boot_target(Some(&State::Inspecting), ALL),
            BootTarget::Discovery
        );
        assert_eq!(
            boot_target(Some(&State::Installing { written: false }), ALL),
            BootTarget::Discovery,
            "the agent writes the disk"
        );
        assert_eq!(
            boot_target(Some(&State::Installing { written: true }), ALL),
            BootTarget::LocalDisk,
            "written and read back: the installed system reports next"
        );
        assert_eq!(
            boot_target(Some(&State::Enrolled), ALL),
            BootTarget::LocalDisk
        );
        assert_eq!(
            boot_target(Some(&State::Inspected), ALL),
            BootTarget::Discovery,
            "an inspected node powered on again is told to install or why not"
        );
        let failed = State::Failed {
            step: Step::Inspecting,
            reason: "no slot".into(),
        };
        let BootTarget::Wait(why) = boot_target(Some(&failed), ALL) else {
            panic!()
        };
        assert!(why.contains("failed at inspecting: no slot"), "{why}");
        let held = State::Held {
            from: Box::new(State::Enrolled),
        };
        assert!(matches!(boot_target(Some(&held), ALL), BootTarget::Wait(_)));
        // Retired: the discovery image once more to wipe its disk, then nothing.
        assert_eq!(
            boot_target(Some(&State::Retired { wiped: false }), ALL),
            BootTarget::Discovery
        );
        assert!(matches!(
            boot_target(Some(&State::Retired { wiped: true }), ALL),
            BootTarget::Wait(_)
        ));
        // What is missing makes the node wait, saying what.
        let none = Available { discovery: false };
        assert_eq!(
            boot_target(None, none),
            BootTarget::Wait(NO_DISCOVERY.into())
        );
        assert_eq!(
            boot_target(Some(&State::Installing { written: false }), none),
            BootTarget::Wait(NO_DISCOVERY.into())
        );
        assert_eq!(
            boot_target(Some(&State::BurningIn), none),
            BootTarget::LocalDisk
        );
    }
}
