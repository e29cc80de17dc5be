//! PCI functions from `/sys/bus/pci/devices`, with their PCIe link as trained against what
//! it can do, and which of them are GPUs and Neuron devices.

use provisioner_protocol::{PciDevice, PciLink, VENDOR_AMAZON, VENDOR_NVIDIA};

use super::read::Tree;

const DEVICES: &str = "sys/bus/pci/devices";

/// PCI base classes (the top byte of the 24-bit class code).
mod base_class {
    pub const STORAGE: u8 = 0x01;
    pub const NETWORK: u8 = 0x02;
    pub const DISPLAY: u8 = 0x03;
    pub const BRIDGE: u8 = 0x06;
    pub const COMMUNICATION: u8 = 0x07;
}

pub fn read(tree: &mut Tree) -> Vec<PciDevice> {
    let mut devices = Vec::new();
    for address in tree.entries(DEVICES) {
        let dir = format!("{DEVICES}/{address}");
        // Without these three it is not known what the device is: leave it out, the problem
        // says which one.
        let (Some(vendor), Some(device), Some(class)) = (
            tree.hex::<u16>(&format!("{dir}/vendor")),
            tree.hex::<u16>(&format!("{dir}/device")),
            tree.hex::<u32>(&format!("{dir}/class")),
        ) else {
            continue;
        };
        devices.push(PciDevice {
            vendor,
            device,
            subsystem_vendor: tree.optional_hex(&format!("{dir}/subsystem_vendor")),
            subsystem_device: tree.optional_hex(&format!("{dir}/subsystem_device")),
            class,
            driver: tree.link_name(&format!("{dir}/driver")),
            link: link(tree, &dir),
            address,
        });
    }
    devices
}

/// The PCIe link; `None` for a conventional PCI or integrated function, which has no link
/// files.
fn link(tree: &mut Tree, dir: &str) -> Option<PciLink> {
    let link = PciLink {
        speed: tree.optional(&format!("{dir}/current_link_speed")),
        max_speed: tree.optional(&format!("{dir}/max_link_speed")),
        width: tree.optional_number(&format!("{dir}/current_link_width")),
        max_width: tree.optional_number(&format!("{dir}/max_link_width")),
    };
    (link != PciLink::default()).then_some(link)
}

fn base(class: u32) -> u8 {
    (class >> 16) as u8
}

/// NVIDIA display controllers: VGA (0x0300) and 3D controllers (0x0302), which is what
/// data-center GPUs are. NVSwitches (bridges, 0x0680) are not GPUs.
pub fn is_gpu(device: &PciDevice) -> bool {
    device.vendor == VENDOR_NVIDIA && base(device.class) == base_class::DISPLAY
}

/// Amazon functions that are neither Amazon's other hardware: ENA and EFA adapters
/// (network), EBS and instance-store NVMe (storage), and on Nitro hosts the VGA, the serial
/// port and the host bridge.
pub fn is_neuron(device: &PciDevice) -> bool {
    use base_class::*;
    device.vendor == VENDOR_AMAZON
        && ![STORAGE, NETWORK, DISPLAY, BRIDGE, COMMUNICATION].contains(&base(device.class))
}

/// `0000:17:00.0`: domain (4 hex digits, more behind Intel VMD), bus, device, function.
pub fn is_pci_address(name: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some((domain_bus, device_function)) = name.rsplit_once(':') else {
        return false;
    };
    let Some((domain, bus)) = domain_bus.split_once(':') else {
        return false;
    };
    let Some((device, function)) = device_function.split_once('.') else {
        return false;
    };
    (domain.len() >= 4 && hex(domain, domain.len()))
        && hex(bus, 2)
        && hex(device, 2)
        && function.len() == 1
        && matches!(function.as_bytes()[0], b'0'..=b'7')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(vendor: u16, class: u32) -> PciDevice {
        PciDevice {
            address: "0000:17:00.0".to_string(),
            vendor,
            class,
            ..PciDevice::default()
        }
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:17:00.0"));
        assert!(is_pci_address("10000:e1:00.7"));
        assert!(!is_pci_address("virtio2"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("0000:17:00.8"));
        assert!(!is_pci_address("0000:17:00"));
        assert!(!is_pci_address("1-1:1.0"));
    }

    #[test]
    fn gpus_are_nvidia_display_or_3d_controllers() {
        assert!(is_gpu(&device(VENDOR_NVIDIA, 0x030200)));
        assert!(is_gpu(&device(VENDOR_NVIDIA, 0x030000)));
        assert!(!is_gpu(&device(VENDOR_NVIDIA, 0x068000)), "NVSwitch");
        assert!(!is_gpu(&device(VENDOR_NVIDIA, 0x040300)), "HDMI audio");
        assert!(!is_gpu(&device(0x1002, 0x030200)), "not NVIDIA");
    }

    #[test]
    fn neuron_devices_are_amazon_functions_that_are_nothing_else() {
        assert!(is_neuron(&device(VENDOR_AMAZON, 0x088000)));
        assert!(!is_neuron(&device(VENDOR_AMAZON, 0x020000)), "ENA / EFA");
        assert!(!is_neuron(&device(VENDOR_AMAZON, 0x010802)), "EBS NVMe");
        assert!(!is_neuron(&device(VENDOR_AMAZON, 0x030000)), "Nitro VGA");
        assert!(!is_neuron(&device(0x8086, 0x088000)), "not Amazon");
    }
}
