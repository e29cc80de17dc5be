//! The burn-in on the node: every GPU, Neuron device and the host, measured for as long as
//! the appliance's plan says, with the conditions sampled alongside. It measures and reports;
//! the appliance judges (provisioner/src/burnin). A device that cannot be measured says why
//! (`cannot_validate`), which fails it: never a silent pass.

pub mod gpu;
pub mod host;
pub mod neuron;

use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInPlan, BurnInReport};

/// Runs every part of the burn-in the node's facts call for, and collects the results.
pub fn run(plan: &BurnInPlan, facts: &Facts, say: &mut dyn FnMut(&str)) -> BurnInReport {
    let mut devices = Vec::new();
    if !facts.gpus.is_empty() {
        say(&format!("burn-in: {} GPUs", facts.gpus.len()));
        devices.extend(gpu::run(plan, facts, say));
    }
    if !facts.neuron_devices.is_empty() {
        say(&format!(
            "burn-in: {} Neuron devices",
            facts.neuron_devices.len()
        ));
        devices.extend(neuron::run(plan, facts, say));
    }
    say("burn-in: host (CPUs, memory, disks, NICs)");
    devices.extend(host::run(plan, facts, say));
    BurnInReport { mac: None, devices }
}
