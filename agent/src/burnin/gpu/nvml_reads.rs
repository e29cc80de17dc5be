//! The supervisor's NVML reads of each GPU: who it is and its health before the run, samples
//! while it computes, its health after. Each read runs on a thread of its own, bounded: a
//! wedged driver hangs that thread, not the burn-in, and the GPU it hung on says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::health::{self, Health};
use super::samples;
use super::{Card, supervise};

/// An NVML read takes milliseconds; this long, and the driver is wedged.
const NVML_LIMIT: Duration = Duration::from_secs(30);

impl Card {
    /// `read` on a thread of its own, bounded by `limit`. A read that does not come back
    /// (or panics) makes the GPU unvalidated, naming `what` was read, and no NVML read of
    /// it is tried again: `None` then, and for a GPU given up on before.
    pub(super) fn nvml_read<T: Send + 'static>(
        &mut self,
        what: &str,
        limit: Duration,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        if self.nvml_hung {
            return None;
        }
        match supervise::bounded(limit, read) {
            Ok(value) => Some(value),
            Err(e) => {
                self.nvml_hung = true;
                self.cannot_validate(format!("NVML {what} {e}"));
                None
            }
        }
    }

    /// `read` of this card's GPU, looked up by its PCI address, bounded by `NVML_LIMIT`.
    fn read_device<T: Send + 'static>(
        &mut self,
        nvml: &Arc<Nvml>,
        what: &str,
        read: impl FnOnce(&Device) -> T + Send + 'static,
    ) -> Option<Result<T, NvmlError>> {
        let nvml = nvml.clone();
        let id = self.result.id.clone();
        self.nvml_read(what, NVML_LIMIT, move || {
            nvml.device_by_pci_bus_id(id.as_str()).map(|d| read(&d))
        })
    }
}

/// Who a GPU is, from NVML.
struct Identity {
    driver: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    health: Health,
    /// Current gen and width, then the most the link can do.
    pcie: Option<(u32, u32, u32, u32)>,
}

fn read_identity(device: &Device) -> Identity {
    let pcie = match (
        device.current_pcie_link_gen(),
        device.current_pcie_link_width(),
        device.max_pcie_link_gen(),
        device.max_pcie_link_width(),
    ) {
        (Ok(link_gen), Ok(width), Ok(max_gen), Ok(max_width)) => {
            Some((link_gen, width, max_gen, max_width))
        }
        _ => None,
    };
    Identity {
        driver: device.nvml().sys_driver_version().ok(),
        model: device.name().ok(),
        firmware: device.vbios_version().ok(),
        health: health::read_health(device),
        pcie,
    }
}

/// Model, driver, VBIOS and the health before the run, from NVML; the CUDA ordinal.
pub fn identify(
    nvml: &Arc<Nvml>,
    ordinals: &BTreeMap<String, usize>,
    cards: &mut [Card],
    say: &mut dyn FnMut(&str),
) {
    for card in cards {
        card.ordinal = ordinals.get(&card.address).copied();
        let who = match card.read_device(nvml, "identify", read_identity) {
            Some(Ok(who)) => who,
            Some(Err(e)) => {
                card.cannot_validate(format!("not found by NVML: {e}"));
                continue;
            }
            None => continue,
        };
        card.result.driver = who.driver;
        card.result.model = who.model;
        card.result.firmware = who.firmware;
        let h = &who.health;
        if h.ecc_current == Some(false) || h.ecc_pending == Some(false) {
            say(&format!(
                "burn-in gpu {}: ECC is off (now: {:?}, after reboot: {:?})",
                card.result.id, h.ecc_current, h.ecc_pending
            ));
        }
        if let Some((link_gen, width, max_gen, max_width)) = who.pcie {
            say(&format!(
                "burn-in gpu {}: {} PCIe gen {link_gen} x{width} (max gen {max_gen} x{max_width})",
                card.result.id,
                card.result.model.as_deref().unwrap_or("?")
            ));
        }
        card.before = Some(who.health);
        if card.ordinal.is_none() {
            card.cannot_validate("not visible to CUDA (is CUDA_VISIBLE_DEVICES set?)".into());
        }
    }
}

/// One sample of a GPU while it computes; a GPU NVML cannot find now is not sampled.
pub fn sample(nvml: &Arc<Nvml>, card: &mut Card) {
    if let Some(Ok(sample)) = card.read_device(nvml, "sample", samples::read_sample) {
        card.samples.add(&sample);
    }
}

/// The health after the run: the counters are the changes since before.
pub fn finish_health(nvml: &Arc<Nvml>, cards: &mut [Card], say: &mut dyn FnMut(&str)) {
    for card in cards {
        let Some(before) = card.before.clone() else {
            continue;
        };
        match card.read_device(nvml, "health", health::read_health) {
            Some(Ok(after)) => {
                for (name, count) in health::health_counters(&before, &after) {
                    if count > 0 {
                        say(&format!("burn-in gpu {}: {name} {count}", card.result.id));
                    }
                    card.result.counters.insert(name.to_string(), count);
                }
            }
            Some(Err(e)) => card.cannot_validate(format!("lost by NVML during the run: {e}")),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const SHORT: Duration = Duration::from_millis(200);

    #[test]
    fn an_nvml_read_that_hangs_fails_its_gpu_and_is_not_tried_again() {
        let mut card = Card::new("0000:18:00.0");
        assert_eq!(card.nvml_read("sample", SHORT, || 5), Some(5));
        let hung = card.nvml_read("sample", SHORT, || {
            thread::sleep(Duration::from_secs(30));
            5
        });
        assert_eq!(hung, None);
        assert_eq!(
            card.result.cannot_validate.as_deref(),
            Some("NVML sample timed out after 0.2 s")
        );
        // A wedged driver would hang every later read too: none is started.
        assert_eq!(card.nvml_read("health", SHORT, || 7), None);
        assert!(card.nvml_hung);
    }

    #[test]
    fn an_nvml_read_that_panics_says_so() {
        let mut card = Card::new("0000:18:00.0");
        // A generous bound: the panic comes back at once, but printing its backtrace (with
        // RUST_BACKTRACE set) can take longer than SHORT on a busy machine.
        let read: Option<()> = card.nvml_read("identify", Duration::from_secs(30), || {
            panic!("missing symbol")
        });
        assert_eq!(read, None);
        assert_eq!(
            card.result.cannot_validate.as_deref(),
            Some("NVML identify panicked: missing symbol")
        );
    }
}
