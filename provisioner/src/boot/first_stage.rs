//! The first stage: which boot file a PXE client gets (RFC 4578 client architecture, option 93; the iPXE user
//! class, option 77, RFC 3004). The map is editable; its defaults are right without help.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use dhcproto::v4::{DhcpOption, Message, OptionCode};

use crate::types::MacAddr;

/// RFC 4578 / IANA processor architecture types that the defaults name.
pub mod arch {
    pub const X86_BIOS: u16 = 0;
    pub const X64_UEFI: u16 = 7;
    pub const EFI_BC: u16 = 9;
    pub const ARM64_UEFI: u16 = 11;
    pub const X64_UEFI_HTTP: u16 = 16;
    pub const ARM64_UEFI_HTTP: u16 = 19;
}

/// The file served to one architecture, by TFTP or, with `http`, as an HTTP URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    pub file: String,
    pub http: bool,
}

/// Architecture → boot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootMap(BTreeMap<u16, BootFile>);

impl Default for BootMap {
    fn default() -> Self {
        let tftp = |f: &str| BootFile {
            file: f.into(),
            http: false,
        };
        let http = |f: &str| BootFile {
            file: f.into(),
            http: true,
        };
        BootMap(BTreeMap::from([
            (arch::X86_BIOS, tftp("undionly.kpxe")),
            (arch::X64_UEFI, tftp("ipxe.efi")),
            (arch::EFI_BC, tftp("ipxe.efi")),
            (arch::ARM64_UEFI, tftp("ipxe-arm64.efi")),
            (arch::X64_UEFI_HTTP, http("ipxe.efi")),
            (arch::ARM64_UEFI_HTTP, http("ipxe-arm64.efi")),
        ]))
    }
}

impl BootMap {
    pub fn with_overrides(entries: impl IntoIterator<Item = (u16, BootFile)>) -> Self {
        let mut map = BootMap::default();
        map.0.extend(entries);
        map
    }

    pub fn get(&self, arch: u16) -> Option<&BootFile> {
        self.0.get(&arch)
    }
}

/// What a request says about network booting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PxeRequest {
    /// Option 60 starts with `PXEClient`.
    pub pxe_client: bool,
    /// Option 60 starts with `HTTPClient` (UEFI HTTP boot).
    pub http_client: bool,
    /// Option 93, the first architecture listed.
    pub arch: Option<u16>,
    /// Option 77 names iPXE: the client already runs iPXE and wants its script.
    pub ipxe: bool,
    /// Option 97, echoed back as the PXE spec asks.
    pub uuid: Option<Vec<u8>>,
}

impl PxeRequest {
    pub fn parse(msg: &Message) -> Self {
        let opts = msg.opts();
        let class = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => v.as_slice(),
            _ => &[],
        };
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
            _ => None,
        };
        let ipxe = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(v)) => names_ipxe(v),
            _ => false,
        };
        let uuid = match opts.get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
            _ => None,
        };
        PxeRequest {
            pxe_client: class.starts_with(b"PXEClient"),
            http_client: class.starts_with(b"HTTPClient"),
            arch,
            ipxe,
            uuid,
        }
    }

    /// A network-boot client, the only kind a proxy answers.
    pub fn is_netboot(&self) -> bool {
        self.pxe_client || self.http_client
    }
}

/// iPXE sends the bare string `iPXE`; RFC 3004 clients send length-prefixed instances.
fn names_ipxe(user_class: &[u8]) -> bool {
    if user_class == b"iPXE" {
        return true;
    }
    let mut rest = user_class;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Where DHCP sends a booting client first: the network-boot binary (or URL) it loads before
/// it asks for its script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstStage {
    /// A file name fetched by TFTP from `next_server`.
    Tftp { file: String },
    /// A URL fetched by UEFI HTTP boot; the reply carries option 60 `HTTPClient`.
    Http { url: String },
    /// The per-node iPXE script over HTTP (the client is already iPXE).
    IpxeScript { url: String },
}

/// Why a network-boot client gets no boot file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoBoot {
    #[error("client architecture {0} has no boot file in the map")]
    UnknownArch(u16),
    #[error("PXE client sent no client architecture (option 93)")]
    NoArch,
}

/// Addresses that boot URLs are built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootServer {
    /// The address nodes use to reach the appliance (siaddr, option 66, URLs).
    pub advertise: Ipv4Addr,
    pub http_port: u16,
}

impl BootServer {
    pub fn base_url(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::from((self.advertise, self.http_port))
        )
    }

    pub fn script_url(&self, mac: MacAddr) -> String {
        format!("{}/boot/{}.ipxe", self.base_url(), mac.dashed())
    }

    pub fn firmware_url(&self, file: &str) -> String {
        format!("{}/firmware/{}", self.base_url(), file)
    }
}

/// Decides the boot target of one client; pure, so every case is a unit test.
pub fn choose(
    map: &BootMap,
    server: &BootServer,
    req: &PxeRequest,
    mac: MacAddr,
) -> Result<FirstStage, NoBoot> {
    if req.ipxe {
        return Ok(FirstStage::IpxeScript {
            url: server.script_url(mac),
        });
    }
    let arch = req.arch.ok_or(NoBoot::NoArch)?;
    let entry = map.get(arch).ok_or(NoBoot::UnknownArch(arch))?;
    Ok(if entry.http {
        FirstStage::Http {
            url: server.firmware_url(&entry.file),
        }
    } else {
        FirstStage::Tftp {
            file: entry.file.clone(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Architecture;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const SERVER: BootServer = BootServer {
        advertise: Ipv4Addr::new(10, 99, 0, 1),
        http_port: 8080,
    };

    fn req(class: &str, arch: Option<u16>, user_class: Option<&[u8]>) -> PxeRequest {
        let mut m = Message::default();
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
        if let Some(a) = arch {
            m.opts_mut()
                .insert(DhcpOption::ClientSystemArchitecture(Architecture(a)));
        }
        if let Some(u) = user_class {
            m.opts_mut().insert(DhcpOption::UserClass(u.to_vec()));
        }
        PxeRequest::parse(&m)
    }

    fn boot(r: &PxeRequest) -> Result<FirstStage, NoBoot> {
        choose(&BootMap::default(), &SERVER, r, MAC)
    }

    #[test]
    fn default_map_by_architecture() {
        let tftp = |f: &str| Ok(FirstStage::Tftp { file: f.into() });
        let cases = [
            (0, tftp("undionly.kpxe")),
            (7, tftp("ipxe.efi")),
            (9, tftp("ipxe.efi")),
            (11, tftp("ipxe-arm64.efi")),
            (
                16,
                Ok(FirstStage::Http {
                    url: "http://10.99.0.1:8080/firmware/ipxe.efi".into(),
                }),
            ),
            (
                19,
                Ok(FirstStage::Http {
                    url: "http://10.99.0.1:8080/firmware/ipxe-arm64.efi".into(),
                }),
            ),
            (6, Err(NoBoot::UnknownArch(6))),
            (0x1234, Err(NoBoot::UnknownArch(0x1234))),
        ];
        for (arch, want) in cases {
            let r = req("PXEClient:Arch:00000:UNDI:002001", Some(arch), None);
            assert_eq!(boot(&r), want, "arch {arch}");
        }
    }

    #[test]
    fn ipxe_gets_its_script_whatever_its_architecture() {
        for uc in [&b"iPXE"[..], b"\x04iPXE", b"\x03foo\x04iPXE"] {
            let r = req("PXEClient:Arch:00007:UNDI:003016", Some(7), Some(uc));
            assert_eq!(
                boot(&r),
                Ok(FirstStage::IpxeScript {
                    url: "http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe".into()
                })
            );
        }
        let r = req("PXEClient", Some(0), Some(b"\x09iPXE"));
        assert!(!r.ipxe, "a length byte running past the data is not iPXE");
    }

    #[test]
    fn vendor_class_prefixes() {
        assert!(req("PXEClient:Arch:00000", Some(0), None).is_netboot());
        let h = req("HTTPClient:Arch:00016", Some(16), None);
        assert!(h.http_client && h.is_netboot());
        assert!(!req("MSFT 5.0", None, None).is_netboot());
        assert!(!req("pxeclient", None, None).is_netboot());
        assert_eq!(boot(&req("PXEClient", None, None)), Err(NoBoot::NoArch));
    }

    #[test]
    fn overrides_replace_one_architecture() {
        let map = BootMap::with_overrides([(
            7,
            BootFile {
                file: "snponly.efi".into(),
                http: false,
            },
        )]);
        let r = req("PXEClient", Some(7), None);
        assert_eq!(
            choose(&map, &SERVER, &r, MAC),
            Ok(FirstStage::Tftp {
                file: "snponly.efi".into()
            })
        );
        assert_eq!(map.get(9).unwrap().file, "ipxe.efi");
    }
}
