//! The fact readers against recorded trees (tests/sysfs/, see its README): one recorded on a
//! real VM, three synthetic ones for an HGX H100 server, an AWS trn1 and an arm64 Graviton.
//! And against broken trees built here, to show that what cannot be read is a problem in
//! the report, not a panic.

use std::fs;
use std::path::{Path, PathBuf};

use provisioner_agent::facts::collect;
use provisioner_protocol::{Facts, PciDevice, PciLink};

fn tree(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sysfs")
        .join(name)
}

fn pci<'a>(facts: &'a Facts, address: &str) -> &'a PciDevice {
    facts
        .pci
        .iter()
        .find(|d| d.address == address)
        .unwrap_or_else(|| panic!("no PCI device {address}"))
}

const GIB: u64 = 1 << 30;

#[test]
fn recorded_vm() {
    let facts = collect(&tree("vm"));

    assert_eq!(
        facts.problems,
        ["/sys/class/dmi/id: not present (no SMBIOS tables)"]
    );
    assert_eq!(facts.dmi, Default::default());

    assert_eq!(
        facts.cpu.model.as_deref(),
        Some("Intel(R) Xeon(R) Processor")
    );
    assert_eq!(
        (facts.cpu.sockets, facts.cpu.cores, facts.cpu.threads),
        (1, 2, 2)
    );
    assert_eq!(facts.memory.total_bytes, 24_731_708 * 1024);
    assert!(facts.memory.dimms.is_empty(), "no SMBIOS, no DIMMs");

    // loop0-7 and zram0 are in sys/block too.
    assert_eq!(facts.disks.len(), 1);
    let vda = &facts.disks[0];
    assert_eq!(vda.name, "vda");
    assert_eq!(vda.size_bytes, 536_870_912 * 512);
    assert_eq!(vda.size_bytes, 256 * GIB);
    assert_eq!(
        vda.serial.as_deref(),
        Some("overlayblk"),
        "virtio: sys/block/vda/serial"
    );
    assert_eq!(vda.model, None);
    assert!(!vda.nvme);
    assert!(
        vda.rotational,
        "virtio-blk says rotational unless told otherwise"
    );

    // lo, ifb0 and ifb1 have no device.
    assert_eq!(facts.nics.len(), 1);
    let eth0 = &facts.nics[0];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(eth0.mac, "02:fc:00:00:00:01");
    assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
    assert_eq!(
        eth0.pci_address.as_deref(),
        Some("0000:00:03.0"),
        "the PCI function above virtio2"
    );
    assert_eq!(eth0.speed_mbps, None, "virtio_net reports -1");
    assert_eq!(eth0.carrier, Some(true));

    let addresses: Vec<&str> = facts.pci.iter().map(|d| d.address.as_str()).collect();
    assert_eq!(
        addresses,
        [
            "0000:00:00.0",
            "0000:00:01.0",
            "0000:00:02.0",
            "0000:00:03.0",
            "0000:00:04.0",
            "0000:00:05.0"
        ]
    );
    let host_bridge = pci(&facts, "0000:00:00.0");
    assert_eq!(
        (host_bridge.vendor, host_bridge.device, host_bridge.class),
        (0x8086, 0x0d57, 0x060000)
    );
    assert_eq!(host_bridge.driver, None);
    let net = pci(&facts, "0000:00:03.0");
    assert_eq!(
        (net.vendor, net.device, net.class),
        (0x1af4, 0x1041, 0x020000)
    );
    assert_eq!(net.subsystem_vendor, Some(0x1af4));
    assert_eq!(net.driver.as_deref(), Some("virtio-pci"));
    assert!(
        facts.pci.iter().all(|d| d.link.is_none()),
        "a VM's virtual PCI has no PCIe link files"
    );
    assert!(facts.gpus.is_empty());
    assert!(facts.neuron_devices.is_empty());
}

#[test]
fn hgx_h100_identity_cpu_and_memory() {
    let facts = collect(&tree("hgx-h100"));
    assert_eq!(facts.problems, Vec::<String>::new());

    assert_eq!(facts.dmi.sys_vendor.as_deref(), Some("Supermicro"));
    assert_eq!(facts.dmi.product_name.as_deref(), Some("SYS-821GE-TNHR"));
    assert_eq!(facts.dmi.product_serial.as_deref(), Some("S000000X4000001"));
    assert_eq!(facts.dmi.board_name.as_deref(), Some("X13DEG-OAD"));
    assert_eq!(
        facts.dmi.bios_vendor.as_deref(),
        Some("American Megatrends International, LLC.")
    );
    assert_eq!(facts.dmi.bios_date.as_deref(), Some("02/22/2024"));

    assert_eq!(
        facts.cpu.model.as_deref(),
        Some("Intel(R) Xeon(R) Platinum 8480+")
    );
    assert_eq!(
        (facts.cpu.sockets, facts.cpu.cores, facts.cpu.threads),
        (2, 112, 224)
    );

    assert_eq!(facts.memory.total_bytes, 1_056_335_452 * 1024);
    // 32 slots, 16 of them empty.
    let dimms = &facts.memory.dimms;
    assert_eq!(dimms.len(), 16);
    assert!(dimms.iter().all(|d| d.size_bytes == 64 * GIB));
    assert_eq!(dimms.iter().map(|d| d.size_bytes).sum::<u64>(), 1024 * GIB);
    assert!(
        dimms.iter().all(|d| d.locator.ends_with('1')),
        "only the first slots"
    );
    let first = &dimms[0];
    assert_eq!(first.locator, "P1-DIMMA1");
    assert_eq!(first.speed_mts, Some(4800));
    assert_eq!(first.manufacturer.as_deref(), Some("SK Hynix"));
    assert_eq!(first.part_number.as_deref(), Some("HMCG94AEBRA123N"));
    assert_eq!(first.serial.as_deref(), Some("80AD00000000"));
    assert_eq!(dimms[15].locator, "P2-DIMMH1");
}

#[test]
fn hgx_h100_gpus_and_their_links() {
    let facts = collect(&tree("hgx-h100"));
    assert_eq!(facts.pci.len(), 19);
    assert_eq!(
        facts.gpus,
        [
            "0000:18:00.0",
            "0000:2a:00.0",
            "0000:3a:00.0",
            "0000:5d:00.0",
            "0000:9a:00.0",
            "0000:ab:00.0",
            "0000:ba:00.0",
            "0000:db:00.0"
        ]
    );
    for address in &facts.gpus {
        let gpu = pci(&facts, address);
        assert_eq!(
            (gpu.vendor, gpu.device, gpu.class),
            (0x10de, 0x2330, 0x030200)
        );
        assert_eq!(
            (gpu.subsystem_vendor, gpu.subsystem_device),
            (Some(0x10de), Some(0x16c1))
        );
        assert_eq!(gpu.driver.as_deref(), Some("nvidia"));
    }
    // The one fault to find: a GPU trained at x8 of x16.
    let degraded: Vec<&str> = facts
        .gpus
        .iter()
        .filter(|a| {
            let link = pci(&facts, a).link.as_ref().expect("PCIe link");
            link.width != link.max_width
        })
        .map(String::as_str)
        .collect();
    assert_eq!(degraded, ["0000:ba:00.0"]);
    assert_eq!(
        pci(&facts, "0000:ba:00.0").link,
        Some(PciLink {
            speed: Some("32.0 GT/s PCIe".to_string()),
            max_speed: Some("32.0 GT/s PCIe".to_string()),
            width: Some(8),
            max_width: Some(16),
        })
    );
    assert_eq!(
        pci(&facts, "0000:18:00.0")
            .link
            .as_ref()
            .and_then(|l| l.width),
        Some(16)
    );
    // NVSwitches are NVIDIA bridges, the BMC's VGA is ASPEED's: neither is a GPU.
    assert_eq!(pci(&facts, "0000:05:00.0").class, 0x068000);
    assert_eq!(pci(&facts, "0000:03:00.0").vendor, 0x1a03);
    assert!(facts.neuron_devices.is_empty());
}

#[test]
fn hgx_h100_nics_and_disks() {
    let facts = collect(&tree("hgx-h100"));
    let nics: Vec<_> = facts
        .nics
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.driver.as_deref(),
                n.pci_address.as_deref(),
                n.speed_mbps,
                n.carrier,
            )
        })
        .collect();
    assert_eq!(
        nics,
        [
            (
                "eth0",
                Some("i40e"),
                Some("0000:c1:00.0"),
                Some(10_000),
                Some(true)
            ),
            (
                "eth1",
                Some("i40e"),
                Some("0000:c1:00.1"),
                None,
                Some(false)
            ),
            (
                "eth2",
                Some("mlx5_core"),
                Some("0000:19:00.0"),
                Some(400_000),
                Some(true)
            ),
            ("eth3", Some("mlx5_core"), Some("0000:9b:00.0"), None, None),
        ]
    );
    assert_eq!(facts.nics[2].mac, "b8:3f:d2:00:20:00");

    let names: Vec<&str> = facts.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "nvme1n1"]);
    let nvme0 = &facts.disks[0];
    assert_eq!(nvme0.size_bytes, 3_840_755_982_336);
    assert_eq!(nvme0.model.as_deref(), Some("SAMSUNG MZQL23T8HCLS-00A07"));
    assert_eq!(nvme0.serial.as_deref(), Some("S64HNE0T000000"));
    assert!(nvme0.nvme);
    assert!(!nvme0.rotational);
}

#[test]
fn trn1_neuron_devices_beside_amazon_nics_and_storage() {
    let facts = collect(&tree("trn1"));
    assert_eq!(facts.problems, Vec::<String>::new());
    // ENA and EFA (network), EBS (NVMe) and Nitro's VGA are Amazon's too.
    assert_eq!(facts.neuron_devices, ["0000:10:1c.0", "0000:10:1d.0"]);
    assert!(facts.pci.iter().all(|d| d.vendor == 0x1d0f));
    assert_eq!(facts.pci.len(), 6);
    let trainium = pci(&facts, "0000:10:1c.0");
    assert_eq!((trainium.device, trainium.class), (0x7164, 0x088000));
    assert_eq!(trainium.driver.as_deref(), Some("neuron"));
    assert!(facts.gpus.is_empty());

    assert_eq!(facts.dmi.product_name.as_deref(), Some("trn1.32xlarge"));
    assert_eq!(
        facts.dmi.board_name, None,
        "EC2 has none: no file, no problem"
    );
    assert_eq!(
        (facts.cpu.sockets, facts.cpu.cores, facts.cpu.threads),
        (2, 64, 128)
    );
    assert!(facts.memory.dimms.is_empty());

    assert_eq!(facts.nics.len(), 1);
    assert_eq!(facts.nics[0].driver.as_deref(), Some("ena"));
    assert_eq!(facts.nics[0].pci_address.as_deref(), Some("0000:00:05.0"));
    assert_eq!(facts.nics[0].speed_mbps, None);
    assert_eq!(
        facts.disks[0].model.as_deref(),
        Some("Amazon Elastic Block Store")
    );
    assert_eq!(
        facts.disks[0].serial.as_deref(),
        Some("vol0000000000000001")
    );
    assert_eq!(facts.disks[0].size_bytes, 512 * GIB);
}

#[test]
fn graviton_topology_comes_from_sysfs() {
    let facts = collect(&tree("graviton"));
    assert_eq!(facts.problems, Vec::<String>::new());
    assert_eq!(facts.cpu.model.as_deref(), Some("ARM Neoverse-V1"));
    assert_eq!(
        (facts.cpu.sockets, facts.cpu.cores, facts.cpu.threads),
        (1, 4, 4)
    );
    // The Nitro host bridge and serial port are Amazon's, and not Neuron devices.
    assert_eq!(facts.pci.len(), 4);
    assert!(facts.neuron_devices.is_empty());
}

#[test]
fn the_same_tree_gives_the_same_facts_and_they_survive_json() {
    let facts = collect(&tree("hgx-h100"));
    assert_eq!(facts, collect(&tree("hgx-h100")));
    let json = serde_json::to_string(&facts).unwrap();
    assert_eq!(serde_json::from_str::<Facts>(&json).unwrap(), facts);
}

/// A tree built in the test, for what a recording cannot hold.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.0.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        self
    }

    /// A directory where a file should be: reading it fails with EISDIR, as root too.
    fn unreadable(&self, rel: &str) -> &Self {
        let path = self.0.path().join(rel);
        let _ = fs::remove_file(&path);
        fs::create_dir_all(path).unwrap();
        self
    }

    fn collect(&self) -> Facts {
        collect(self.0.path())
    }
}

fn minimal() -> Scratch {
    let s = Scratch::new();
    s.file(
        "proc/cpuinfo",
        "processor\t: 0\nmodel name\t: X\nphysical id\t: 0\ncore id\t: 0\n",
    )
    .file("proc/meminfo", "MemTotal:       1024 kB\n")
    .file("sys/class/dmi/id/sys_vendor", "Vendor\n")
    .file("sys/block/sda/size", "2048\n")
    .file("sys/block/sda/queue/rotational", "1\n");
    fs::create_dir_all(s.0.path().join("sys/class/net")).unwrap();
    fs::create_dir_all(s.0.path().join("sys/bus/pci/devices")).unwrap();
    s
}

#[test]
fn a_minimal_tree_reads_without_problems() {
    let facts = minimal().collect();
    assert_eq!(facts.problems, Vec::<String>::new());
    assert_eq!(facts.memory.total_bytes, 1024 * 1024);
    assert_eq!(facts.disks[0].size_bytes, 2048 * 512);
    assert_eq!(facts.dmi.sys_vendor.as_deref(), Some("Vendor"));
}

#[test]
fn unreadable_files_are_problems_and_the_rest_is_read() {
    let s = minimal();
    s.unreadable("proc/meminfo")
        .unreadable("sys/class/dmi/id/product_serial")
        .unreadable("sys/block/sda/queue/rotational");
    fs::remove_file(s.0.path().join("sys/block/sda/size")).unwrap();
    let facts = s.collect();
    assert_eq!(
        facts.problems,
        [
            "/sys/class/dmi/id/product_serial: Is a directory (os error 21)",
            "/proc/meminfo: Is a directory (os error 21)",
            "/sys/block/sda/size: No such file or directory (os error 2)",
            "/sys/block/sda/queue/rotational: Is a directory (os error 21)",
        ]
    );
    assert_eq!(facts.memory.total_bytes, 0);
    assert_eq!(facts.dmi.sys_vendor.as_deref(), Some("Vendor"));
    assert_eq!(facts.dmi.product_serial, None);
    assert_eq!(facts.disks.len(), 1, "the disk is still listed");
    assert_eq!(facts.cpu.threads, 1);
}

#[test]
fn malformed_values_are_problems() {
    let s = minimal();
    let device = "sys/bus/pci/devices/0000:00:01.0";
    let other = "sys/bus/pci/devices/0000:00:02.0";
    s.file(&format!("{device}/vendor"), "0xzzzz\n")
        .file(&format!("{device}/device"), "0x1234\n")
        .file(&format!("{device}/class"), "0x030000\n")
        .file(&format!("{other}/vendor"), "0x10de\n")
        .file(&format!("{other}/device"), "0x2330\n")
        .file(&format!("{other}/class"), "0x030200\n")
        .file(&format!("{other}/current_link_width"), "wide\n")
        .file(&format!("{other}/max_link_width"), "16\n")
        .file("sys/firmware/dmi/entries/17-0/raw", [17u8, 0x28, 0, 0])
        .file("sys/firmware/dmi/entries/16-0/raw", [16u8]);
    let facts = s.collect();
    assert_eq!(
        facts.problems,
        [
            "/sys/firmware/dmi/entries/17-0/raw: 4 bytes, shorter than the 40 of its formatted area",
            "/sys/bus/pci/devices/0000:00:01.0/vendor: not a hexadecimal number: \"0xzzzz\"",
            "/sys/bus/pci/devices/0000:00:02.0/current_link_width: not a number: \"wide\"",
        ]
    );
    // A device without a vendor is left out; one with a bad width keeps the rest.
    assert_eq!(facts.pci.len(), 1);
    assert_eq!(facts.gpus, ["0000:00:02.0"]);
    let link = facts.pci[0].link.as_ref().unwrap();
    assert_eq!((link.width, link.max_width), (None, Some(16)));
}

#[test]
fn an_empty_root_is_all_problems_and_no_panic() {
    let s = Scratch::new();
    let facts = s.collect();
    assert_eq!(
        facts.problems,
        [
            "/sys/class/dmi/id: not present (no SMBIOS tables)",
            "/proc/cpuinfo: No such file or directory (os error 2)",
            "/sys/devices/system/cpu: No such file or directory (os error 2)",
            "/sys/devices/system/cpu: no CPU topology in cpuinfo nor in sysfs",
            "/proc/meminfo: No such file or directory (os error 2)",
            "/sys/block: No such file or directory (os error 2)",
            "/sys/class/net: No such file or directory (os error 2)",
            "/sys/bus/pci/devices: No such file or directory (os error 2)",
        ]
    );
    assert_eq!(facts.cpu, Default::default());
}

#[test]
fn an_unreadable_cpu_topology_is_a_problem() {
    let s = Scratch::new();
    s.file(
        "proc/cpuinfo",
        "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n",
    )
    .file(
        "sys/devices/system/cpu/cpu0/topology/physical_package_id",
        "0\n",
    )
    .unreadable("sys/devices/system/cpu/cpu0/topology/core_id");
    let facts = s.collect();
    assert!(
        facts.problems.contains(
            &"/sys/devices/system/cpu/cpu0/topology/core_id: Is a directory (os error 21)"
                .to_string()
        ),
        "{:?}",
        facts.problems
    );
    assert_eq!(facts.cpu.model.as_deref(), Some("ARM Neoverse-N1"));
    assert_eq!((facts.cpu.sockets, facts.cpu.threads), (0, 1));
}
