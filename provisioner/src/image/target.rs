//! The architectures a discovery image is built for, and what differs between them: Debian's
//! name for each, the GNU triplet of its libraries and cross toolchain, the Rust target the
//! agent is built for, the ELF machine, and the modules only that architecture adds.

use std::path::PathBuf;

use super::modules;
use crate::boot::KernelArch;

const MODULE_LIST: &str = include_str!("../../../images/discovery/modules");
const MODULE_LIST_ARM64: &str = include_str!("../../../images/discovery/modules.arm64");

/// What differs between the architectures a discovery image is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub arch: KernelArch,
    /// Debian's name for it: the packages' architecture.
    pub debian: &'static str,
    /// The GNU triplet: the multiarch library folder and the cross sysroot's name.
    pub triplet: &'static str,
    /// The Rust target the agent is built for.
    pub rust: &'static str,
    /// ELF `e_machine` of the agent and its libraries.
    pub machine: object::elf::Machine,
    /// Modules this architecture's image loads besides images/discovery/modules.
    extra_modules: &'static str,
}

impl Target {
    pub fn of(arch: KernelArch) -> Target {
        match arch {
            KernelArch::X86_64 => Target {
                arch,
                debian: "amd64",
                triplet: "x86_64-linux-gnu",
                rust: "x86_64-unknown-linux-gnu",
                machine: object::elf::EM_X86_64,
                extra_modules: "",
            },
            KernelArch::Arm64 => Target {
                arch,
                debian: "arm64",
                triplet: "aarch64-linux-gnu",
                rust: "aarch64-unknown-linux-gnu",
                machine: object::elf::EM_AARCH64,
                extra_modules: MODULE_LIST_ARM64,
            },
        }
    }

    /// The metapackage whose dependency is the current Debian kernel.
    pub(super) fn kernel_metapackage(&self) -> String {
        format!("linux-image-{}", self.debian)
    }

    /// Whether this is the architecture the appliance itself runs on.
    pub fn is_host(&self) -> bool {
        match self.arch {
            KernelArch::X86_64 => cfg!(target_arch = "x86_64"),
            KernelArch::Arm64 => cfg!(target_arch = "aarch64"),
        }
    }

    /// Where Debian's cross toolchain (`libc6-dev-arm64-cross`) keeps this architecture's C
    /// library on another host.
    pub(super) fn sysroot_libs(&self) -> PathBuf {
        PathBuf::from(format!("/usr/{}/lib", self.triplet))
    }

    /// The module list: images/discovery/modules, then this architecture's additions.
    pub(super) fn module_list(&self) -> Vec<String> {
        let mut list = modules::parse_module_list(MODULE_LIST);
        for m in modules::parse_module_list(self.extra_modules) {
            if !list.contains(&m) {
                list.push(m);
            }
        }
        list
    }

    /// How to get the agent for this architecture.
    pub fn agent_hint(&self) -> String {
        if self.is_host() {
            "cargo build --release -p provisioner-agent".to_string()
        } else {
            format!(
                "cargo build --release -p provisioner-agent --target {} (rustup target add {}; apt-get install gcc-{}-linux-gnu libc6-dev-{}-cross)",
                self.rust,
                self.rust,
                self.triplet.split('-').next().unwrap_or(self.triplet),
                self.debian
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_adds_its_modules_to_the_common_list_and_one_is_the_host() {
        let x86 = Target::of(KernelArch::X86_64);
        let arm = Target::of(KernelArch::Arm64);
        let common = modules::parse_module_list(MODULE_LIST);
        assert_eq!(x86.module_list(), common);
        let arm_list = arm.module_list();
        assert_eq!(arm_list[..common.len()], common[..]);
        assert!(
            arm_list.contains(&"virtio_mmio".to_string()),
            "{arm_list:?}"
        );
        assert_eq!(
            KernelArch::ALL
                .iter()
                .filter(|a| Target::of(**a).is_host())
                .count(),
            1
        );
        assert_eq!(arm.kernel_metapackage(), "linux-image-arm64");
        assert_eq!(
            arm.sysroot_libs(),
            PathBuf::from("/usr/aarch64-linux-gnu/lib")
        );
        assert!(
            arm.agent_hint()
                .contains("--target aarch64-unknown-linux-gnu")
                && arm
                    .agent_hint()
                    .contains("gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
            "{}",
            arm.agent_hint()
        );
    }
}
