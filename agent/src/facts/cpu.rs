//! Processors: model, sockets, cores and hardware threads from `/proc/cpuinfo`, with the
//! topology from sysfs where cpuinfo does not give it (arm64 prints no `physical id`).

use std::collections::BTreeSet;

use provisioner_protocol::Cpu;

use super::read::Tree;

const CPUINFO: &str = "proc/cpuinfo";
const CPU_DIR: &str = "sys/devices/system/cpu";

pub fn read(tree: &mut Tree) -> Cpu {
    let info = tree
        .required(CPUINFO)
        .map(|text| parse_cpuinfo(&text))
        .unwrap_or_default();
    let mut cpu = Cpu {
        arch: machine(tree),
        model: info.model,
        sockets: 0,
        cores: 0,
        threads: info.threads,
    };
    let packages = match info.packages {
        Some(packages) => packages,
        None => topology(tree),
    };
    if packages.is_empty() {
        tree.problem(CPU_DIR, "no CPU topology in cpuinfo nor in sysfs");
    } else {
        cpu.sockets = count(packages.iter().map(|(package, _)| *package));
        cpu.cores = count(packages.iter().copied());
        if cpu.threads == 0 {
            cpu.threads = count_u32(packages.len());
        }
    }
    cpu
}

/// `uname -m`, as procfs gives it (`kernel.arch`); on the live root, where procfs lacks it
/// (kernels before 5.x), uname(2) itself. A recorded tree without it has none.
fn machine(tree: &Tree) -> Option<String> {
    if let Some(arch) = tree.quiet("proc/sys/kernel/arch") {
        return Some(arch);
    }
    if tree.path("") != std::path::Path::new("/") {
        return None;
    }
    // SAFETY: uname fills the struct it is given; the strings it writes are NUL-terminated.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = name
        .machine
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// What `/proc/cpuinfo` says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuInfo {
    pub model: Option<String>,
    /// `processor` entries.
    pub threads: u32,
    /// (physical id, core id) of every processor, when every entry has both (x86).
    pub packages: Option<Vec<(i64, i64)>>,
}

pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut arm_ids = (None, None);
    let mut packages = Vec::new();
    let mut complete = true;
    for entry in text.split("\n\n").filter(|entry| !entry.trim().is_empty()) {
        let mut processor = false;
        let (mut package, mut core) = (None, None);
        for (key, value) in entry.lines().filter_map(|line| line.split_once(':')) {
            let value = value.trim();
            match key.trim() {
                "processor" => processor = true,
                "model name" if info.model.is_none() => info.model = Some(value.to_string()),
                "physical id" => package = value.parse::<i64>().ok(),
                "core id" => core = value.parse::<i64>().ok(),
                "CPU implementer" if arm_ids.0.is_none() => arm_ids.0 = parse_hex(value),
                "CPU part" if arm_ids.1.is_none() => arm_ids.1 = parse_hex(value),
                _ => {}
            }
        }
        if !processor {
            continue;
        }
        info.threads += 1;
        match (package, core) {
            (Some(package), Some(core)) => packages.push((package, core)),
            _ => complete = false,
        }
    }
    if info.model.is_none()
        && let (Some(implementer), Some(part)) = arm_ids
    {
        info.model = Some(arm_model(implementer, part));
    }
    if complete && !packages.is_empty() {
        info.packages = Some(packages);
    }
    info
}

/// arm64 cpuinfo names no model, only the implementer and part numbers of the core (MIDR).
fn arm_model(implementer: u32, part: u32) -> String {
    const ARM: u32 = 0x41;
    let name = match (implementer, part) {
        (ARM, 0xd0c) => Some("Neoverse-N1"),
        (ARM, 0xd40) => Some("Neoverse-V1"),
        (ARM, 0xd49) => Some("Neoverse-N2"),
        (ARM, 0xd4f) => Some("Neoverse-V2"),
        _ => None,
    };
    match name {
        Some(name) => format!("ARM {name}"),
        None => format!("CPU implementer {implementer:#04x} part {part:#05x}"),
    }
}

fn parse_hex(value: &str) -> Option<u32> {
    u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()
}

/// (package, core) of every CPU from `cpuN/topology`.
fn topology(tree: &mut Tree) -> Vec<(i64, i64)> {
    let mut packages = Vec::new();
    for name in tree.entries(CPU_DIR) {
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        let package = tree.number(&format!("{CPU_DIR}/{name}/topology/physical_package_id"));
        let core = tree.number(&format!("{CPU_DIR}/{name}/topology/core_id"));
        if let (Some(package), Some(core)) = (package, core) {
            packages.push((package, core));
        }
    }
    packages
}

fn count<T: Ord>(items: impl Iterator<Item = T>) -> u32 {
    count_u32(items.collect::<BTreeSet<_>>().len())
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_comes_from_procfs_and_a_recorded_tree_without_it_has_none() {
        let root = tempfile::tempdir().unwrap();
        let tree = Tree::new(root.path());
        assert_eq!(machine(&tree), None);
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(root.path().join("proc/sys/kernel/arch"), "aarch64\n").unwrap();
        assert_eq!(machine(&tree).as_deref(), Some("aarch64"));
        // The live root always says, from procfs or uname(2).
        let live = machine(&Tree::new(std::path::Path::new("/")));
        assert_eq!(live.as_deref(), Some(std::env::consts::ARCH));
    }

    fn x86_entry(processor: u32, package: u32, core: u32) -> String {
        format!(
            "processor\t: {processor}\nvendor_id\t: GenuineIntel\n\
             model name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: {package}\n\
             core id\t\t: {core}\n"
        )
    }

    #[test]
    fn x86_counts_sockets_cores_and_threads() {
        // 2 sockets x 2 cores x 2 threads, siblings listed after all first threads as Linux does.
        let ids = [(0, 0), (0, 1), (1, 0), (1, 1)];
        let entries: Vec<String> = ids
            .iter()
            .chain(ids.iter())
            .enumerate()
            .map(|(n, (p, c))| x86_entry(n as u32, *p, *c))
            .collect();
        let info = parse_cpuinfo(&entries.join("\n"));
        assert_eq!(info.threads, 8);
        assert_eq!(
            info.model.as_deref(),
            Some("Intel(R) Xeon(R) Platinum 8480+")
        );
        let packages = info.packages.expect("x86 cpuinfo has topology");
        assert_eq!(count(packages.iter().map(|(p, _)| *p)), 2);
        assert_eq!(count(packages.iter().copied()), 4);
    }

    #[test]
    fn arm64_has_no_topology_and_names_the_core_from_its_part_number() {
        let entry = |n: u32| {
            format!(
                "processor\t: {n}\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd\n\
                 CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n\
                 CPU part\t: 0xd40\nCPU revision\t: 1\n"
            )
        };
        let text = (0..4).map(entry).collect::<Vec<_>>().join("\n");
        let info = parse_cpuinfo(&text);
        assert_eq!(info.threads, 4);
        assert_eq!(info.packages, None);
        assert_eq!(info.model.as_deref(), Some("ARM Neoverse-V1"));
    }

    #[test]
    fn an_unknown_arm_core_is_named_by_its_numbers() {
        assert_eq!(arm_model(0xc0, 0xac3), "CPU implementer 0xc0 part 0xac3");
    }

    #[test]
    fn one_entry_without_physical_id_drops_the_cpuinfo_topology() {
        let text = format!("{}\nprocessor\t: 1\n", x86_entry(0, 0, 0));
        let info = parse_cpuinfo(&text);
        assert_eq!(info.threads, 2);
        assert_eq!(info.packages, None);
    }
}
