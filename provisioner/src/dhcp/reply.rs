//! Building replies (RFC 2131 §4.3) and choosing where they go (§4.1).

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};

use super::{RecvInfo, ReplyPorts};
use crate::boot::{BootServer, FirstStage, PxeRequest};

/// PXE vendor option 43, sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: the boot file in this
/// packet is the one to use, skip boot-server discovery. Older PXE ROMs want it from a proxy.
const PXE_DISCOVERY_CONTROL_USE_FILE: [u8; 4] = [6, 1, 8, 255];
/// iPXE's encapsulated options (175) and, in them, NO_PXEDHCP (176).
const IPXE_ENCAP: u8 = 175;
const IPXE_NO_PXEDHCP: u8 = 176;

/// A reply to `req` of type `t` from `server_id`, with the fields RFC 2131 says to copy.
pub fn base(req: &Message, t: MessageType, server_id: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        super::wire::chaddr(req),
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_flags(req.flags());
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
    // RFC 3046: a relay's agent information comes back to it unchanged.
    if let Some(o) = req.opts().get(OptionCode::RelayAgentInformation) {
        m.opts_mut().insert(o.clone());
    }
    m
}

/// Adds where to boot from: siaddr and option 66 for TFTP, a URL in the file field
/// otherwise, the class identifier PXE and HTTP clients expect, and their UUID back.
pub fn add_boot(
    m: &mut Message,
    pxe: &PxeRequest,
    target: &FirstStage,
    server: &BootServer,
    proxy: bool,
) {
    m.set_siaddr(server.advertise);
    let (file, class) = match target {
        FirstStage::Tftp { file } => {
            m.opts_mut().insert(DhcpOption::TFTPServerName(
                server.advertise.to_string().into_bytes(),
            ));
            (file.as_str(), "PXEClient")
        }
        FirstStage::Http { url } => (url.as_str(), "HTTPClient"),
        FirstStage::IpxeScript { url } => (
            url.as_str(),
            if pxe.http_client {
                "HTTPClient"
            } else {
                "PXEClient"
            },
        ),
    };
    m.set_fname_str(file);
    m.opts_mut()
        .insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    // `HTTPClient` is what makes a UEFI HTTP-boot client take the offer. `PXEClient` marks a
    // proxy offer; from a full server it would make UEFI PXE (EDK2: a "BINL" offer) ask port
    // 4011 for its boot file instead of using the one given, so a full server leaves it out,
    // as ISC dhcpd and dnsmasq do.
    let http = class == "HTTPClient";
    if (proxy && pxe.is_netboot()) || http {
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
    }
    if proxy && pxe.pxe_client && matches!(target, FirstStage::Tftp { .. }) {
        m.opts_mut().insert(DhcpOption::VendorExtensions(
            PXE_DISCOVERY_CONTROL_USE_FILE.to_vec(),
        ));
    }
    if !proxy && matches!(target, FirstStage::IpxeScript { .. }) {
        // iPXE's own option space (175), NO_PXEDHCP (176) = 1: this server gave the boot
        // file, so iPXE need not wait seconds for ProxyDHCP offers that will not come.
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(IPXE_ENCAP),
            vec![IPXE_NO_PXEDHCP, 1, 1],
        )));
    }
    if let Some(uuid) = &pxe.uuid {
        m.opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
}

/// Where an OFFER or ACK goes (RFC 2131 §4.1): the relay, the client's own address, or a
/// broadcast. Without ARP injection a client with no address is reached by broadcast, which
/// the RFC allows ("MAY be sent as an IP broadcast").
pub fn destination(req: &Message, rx: &RecvInfo, ports: ReplyPorts) -> SocketAddrV4 {
    if !req.giaddr().is_unspecified() {
        return SocketAddrV4::new(req.giaddr(), ports.relay);
    }
    if !req.ciaddr().is_unspecified() {
        return SocketAddrV4::new(req.ciaddr(), ports.client);
    }
    if rx.src.ip().is_unspecified() || req.flags().broadcast() {
        return SocketAddrV4::new(Ipv4Addr::BROADCAST, ports.client);
    }
    SocketAddrV4::new(*rx.src.ip(), ports.client)
}

/// A NAK: to the relay with the broadcast bit set, else broadcast (RFC 2131 §4.3.2).
pub fn nak(
    req: &Message,
    server_id: Ipv4Addr,
    ports: ReplyPorts,
    why: &str,
) -> (Message, SocketAddrV4) {
    let mut m = base(req, MessageType::Nak, server_id);
    m.opts_mut().insert(DhcpOption::Message(why.to_string()));
    if !req.giaddr().is_unspecified() {
        m.set_flags(Flags::default().set_broadcast());
        return (m, SocketAddrV4::new(req.giaddr(), ports.relay));
    }
    (m, SocketAddrV4::new(Ipv4Addr::BROADCAST, ports.client))
}
