//! Proxy mode (PXE spec §2.2.3, RFC 4578): beside the site's own DHCP server, answer network
//! boot clients with where to boot from and never with an address. DISCOVER is answered on
//! port 67; the client's follow-up REQUEST (or INFORM) comes to port 4011.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{Message, MessageType};

use super::reply::{add_boot, base};
use super::{Ignored, Outcome, Port, RecvInfo, Reply, Server};
use crate::boot::first_stage::{self as pxe, PxeRequest};
use crate::types::MacAddr;

pub fn respond(
    srv: &mut Server,
    req: &Message,
    t: MessageType,
    mac: MacAddr,
    rx: &RecvInfo,
) -> Result<Outcome, Ignored> {
    let p = PxeRequest::parse(req);
    if !p.is_netboot() {
        return Err(Ignored::NotNetboot);
    }
    let reply_type = match (rx.port, t) {
        (Port::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Port::Pxe, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (_, MessageType::Discover | MessageType::Request | MessageType::Inform) => {
            return Err(Ignored::ProxyPort(t));
        }
        (_, other) => return Err(Ignored::UnexpectedType(other)),
    };
    if srv.boots_locally.check(mac) {
        return Err(Ignored::BootsLocally);
    }
    let target = pxe::choose(&srv.boot, &srv.boot_server, &p, mac)?;
    let mut m = base(req, reply_type, srv.server_id(rx));
    // yiaddr stays 0.0.0.0: the address comes from the site's server.
    m.set_ciaddr(req.ciaddr());
    add_boot(&mut m, &p, &target, &srv.boot_server, true);
    let dest = match rx.port {
        Port::Pxe if !rx.src.ip().is_unspecified() => rx.src,
        _ if !req.giaddr().is_unspecified() => SocketAddrV4::new(req.giaddr(), srv.ports.relay),
        _ => SocketAddrV4::new(Ipv4Addr::BROADCAST, srv.ports.client),
    };
    Ok(Outcome {
        reply: Some(Reply { msg: m, dest }),
        writes: vec![],
    })
}
