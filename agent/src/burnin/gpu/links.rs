//! The copies over links, one GPU at a time after the per-GPU steps, each on a thread of its
//! own bounded by its step's limit: host↔device over PCIe (GPUs behind one switch share its
//! uplink, so each is measured alone), then each GPU to the next. A copy that hangs costs its
//! own GPU (and, for a pair, its peer), not the others'.

use std::collections::BTreeMap;
use std::sync::Arc;

use nvml_wrapper::Nvml;
use provisioner_protocol::Facts;
use provisioner_protocol::burnin::{BurnInPlan, checks};

use super::steps::{self, Step};
use super::{Card, cuda, kmsg, peers, supervise};

/// Host→device and device→host on each GPU in turn, from host memory on the GPU's own NUMA
/// node: the thread that copies is pinned to the GPU's CPUs before it allocates.
pub fn pcie(plan: &BurnInPlan, nvml: &Arc<Nvml>, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    let attempt = steps::attempt(plan);
    for card in cards.iter_mut() {
        let Some(ordinal) = card.usable() else {
            continue;
        };
        if !steps::wanted(plan, &card.result.id, Step::Pcie) {
            continue;
        }
        let nvml = nvml.clone();
        let id = card.result.id.clone();
        let copy = move || (cuda::pin_to_local_cpus(&nvml, &id), peers::pcie(ordinal));
        match supervise::bounded(Step::Pcie.limit(plan), copy) {
            Ok((pinned, Ok((h2d, d2h)))) => {
                if let Err(e) = pinned {
                    say(&format!(
                        "burn-in gpu {}: pcie not pinned to the GPU's local CPUs: {e}",
                        card.result.id
                    ));
                }
                say(&format!(
                    "burn-in gpu {}: pcie: host→device {h2d:.1} GB/s, device→host {d2h:.1} GB/s",
                    card.result.id
                ));
                card.measured(checks::PCIE_H2D, h2d, "GB/s", attempt);
                card.measured(checks::PCIE_D2H, d2h, "GB/s", attempt);
            }
            Ok((_, Err(e))) => card.cannot_validate(format!("gpu pcie: {e}")),
            Err(e) => card.cannot_validate(format!("gpu pcie {e}")),
        }
    }
}

/// Each GPU copies to the next one the CUDA driver sees, one pair at a time, so every link
/// is measured alone.
pub fn p2p(
    plan: &BurnInPlan,
    facts: &Facts,
    ordinals: &BTreeMap<String, usize>,
    cards: &mut [Card],
    say: &mut dyn FnMut(&str),
) {
    // The ring is every GPU of the node, not only those retried: a retry still needs a peer.
    let mut ring: Vec<(String, usize)> = facts
        .gpus
        .iter()
        .filter_map(|id| {
            let address = kmsg::pci_address(id)?;
            Some((id.clone(), *ordinals.get(&address)?))
        })
        .collect();
    let hung = |id: &str, cards: &[Card]| {
        cards
            .iter()
            .any(|c| c.result.id == id && c.result.cannot_validate.is_some())
    };
    ring.retain(|(id, _)| !hung(id, cards));
    if ring.len() < 2 {
        return;
    }
    let attempt = steps::attempt(plan);
    for card in cards.iter_mut() {
        let Some(src) = card.usable() else { continue };
        if !steps::wanted(plan, &card.result.id, Step::P2p) {
            continue;
        }
        let Some(at) = ring.iter().position(|(id, _)| *id == card.result.id) else {
            continue;
        };
        let (peer, dst) = ring[(at + 1) % ring.len()].clone();
        match supervise::bounded(Step::P2p.limit(plan), move || peers::p2p(src, dst)) {
            Ok(Ok((gbps, direct))) => {
                let how = if direct {
                    "peer access"
                } else {
                    "no peer access: staged through the host"
                };
                say(&format!(
                    "burn-in gpu {}: p2p to {peer}: {gbps:.1} GB/s ({how})",
                    card.result.id
                ));
                card.measured(checks::P2P, gbps, "GB/s", attempt);
            }
            Ok(Err(e)) => card.cannot_validate(format!("gpu p2p to {peer}: {e}")),
            Err(e) => {
                card.cannot_validate(format!("gpu p2p to {peer} {e}"));
                // Whatever hung may hang the next pair too.
                ring.retain(|(id, _)| *id != card.result.id && *id != peer);
                if ring.len() < 2 {
                    return;
                }
            }
        }
    }
}
