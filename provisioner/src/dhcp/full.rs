//! Full mode: the appliance is the DHCP server of the provisioning network (RFC 2131 §4.3).

use dhcproto::v4::{DhcpOption, Message, MessageType};
use tracing::{info, warn};

use super::leases::{LeaseWrite, Subnet};
use super::reply::{self, add_boot, base, destination};
use super::{
    Ignored, Outcome, RecvInfo, Reply, Server, client_hostname, requested_ip, server_identifier,
};
use crate::boot::first_stage::{self as pxe, PxeRequest};
use crate::types::MacAddr;

pub fn respond(
    srv: &mut Server,
    req: &Message,
    t: MessageType,
    mac: MacAddr,
    rx: &RecvInfo,
    now: i64,
) -> Result<Outcome, Ignored> {
    match t {
        MessageType::Discover => discover(srv, req, mac, rx, now),
        MessageType::Request => request(srv, req, mac, rx, now),
        MessageType::Decline => decline(srv, req, mac, now),
        MessageType::Release => release(srv, req, mac, now),
        MessageType::Inform => inform(srv, req, mac, rx),
        other => Err(Ignored::UnexpectedType(other)),
    }
}

/// The subnet a request belongs to: the relay's (giaddr), the client's own address (a
/// renewal or INFORM), or the network of the interface it arrived on.
fn subnet_for(srv: &Server, req: &Message, rx: &RecvInfo) -> Result<usize, Ignored> {
    let iface = &srv.interfaces[rx.iface];
    let found = if !req.giaddr().is_unspecified() {
        srv.table.subnet_of(req.giaddr())
    } else if !req.ciaddr().is_unspecified() {
        srv.table.subnet_of(req.ciaddr())
    } else {
        srv.table.subnet_of(iface.addr())
    };
    found.ok_or_else(|| Ignored::NoSubnet {
        iface: iface.name.clone(),
        giaddr: req.giaddr(),
        ciaddr: req.ciaddr(),
    })
}

fn discover(
    srv: &mut Server,
    req: &Message,
    mac: MacAddr,
    rx: &RecvInfo,
    now: i64,
) -> Result<Outcome, Ignored> {
    let s = subnet_for(srv, req, rx)?;
    let requested = requested_ip(req);
    let ip = match srv.table.offer(s, mac, requested, now) {
        Some(ip) => ip,
        None => {
            // Addresses may have expired since the last sweep.
            srv.table.sweep(now);
            srv.table
                .offer(s, mac, requested, now)
                .ok_or(Ignored::PoolExhausted(srv.table.subnets()[s].cidr))?
        }
    };
    let mut m = base(req, MessageType::Offer, srv.server_id(rx));
    m.set_yiaddr(ip);
    let hostname = srv.table.reservation(mac).and_then(|r| r.hostname.clone());
    add_lease_options(&mut m, &srv.table.subnets()[s], hostname.as_deref(), true);
    add_netboot(srv, req, mac, &mut m);
    Ok(answer(srv, req, rx, m, vec![]))
}

fn request(
    srv: &mut Server,
    req: &Message,
    mac: MacAddr,
    rx: &RecvInfo,
    now: i64,
) -> Result<Outcome, Ignored> {
    let server_id = srv.server_id(rx);
    let ciaddr = req.ciaddr();
    let (ip, s) = match (server_identifier(req), requested_ip(req)) {
        // SELECTING: the client answers an OFFER, ours or another server's.
        (Some(id), requested) => {
            if !srv.is_ours(id) {
                srv.table.withdraw_offer(mac);
                return Err(Ignored::OtherServer(id));
            }
            let ip = requested
                .or((!ciaddr.is_unspecified()).then_some(ciaddr))
                .ok_or(Ignored::Malformed(
                    MessageType::Request,
                    "SELECTING without option 50",
                ))?;
            let s = subnet_for(srv, req, rx)?;
            (ip, s)
        }
        // INIT-REBOOT: the client asks to keep an address it remembers.
        (None, Some(ip)) if ciaddr.is_unspecified() => {
            let s = subnet_for(srv, req, rx)?;
            if !srv.table.subnets()[s].cidr.contains(&ip) {
                return Ok(nak(
                    srv,
                    req,
                    rx,
                    "requested address is not on this network",
                ));
            }
            let known = srv.table.lease_of(mac).map(|l| l.ip);
            let reserved = srv.table.reservation(mac).map(|r| r.ip);
            match known.or(reserved) {
                Some(k) if k == ip => {}
                Some(_) => return Ok(nak(srv, req, rx, "requested address is not this client's")),
                None if !srv.table.available_to(ip, mac, now) => {
                    return Ok(nak(
                        srv,
                        req,
                        rx,
                        "requested address belongs to another client",
                    ));
                }
                None => return Err(Ignored::NoRecord(ip)),
            }
            (ip, s)
        }
        // RENEWING (unicast) or REBINDING (broadcast): the client holds `ciaddr`.
        (None, _) => {
            if ciaddr.is_unspecified() {
                return Err(Ignored::Malformed(
                    MessageType::Request,
                    "no server identifier, requested address or ciaddr",
                ));
            }
            let s = subnet_for(srv, req, rx)?;
            (ciaddr, s)
        }
    };
    if !srv.table.can_bind(s, mac, ip, now) {
        return Ok(nak(srv, req, rx, "address not available"));
    }
    let writes = srv.table.bind(s, mac, ip, client_hostname(req), now);
    let hostname = writes.last().and_then(|w| w.after.hostname.clone());
    let mut m = base(req, MessageType::Ack, server_id);
    m.set_yiaddr(ip);
    m.set_ciaddr(ciaddr);
    add_lease_options(&mut m, &srv.table.subnets()[s], hostname.as_deref(), true);
    add_netboot(srv, req, mac, &mut m);
    Ok(answer(srv, req, rx, m, writes))
}

/// A reply sent where RFC 2131 §4.1 says, once `writes` are stored.
fn answer(
    srv: &Server,
    req: &Message,
    rx: &RecvInfo,
    msg: Message,
    writes: Vec<LeaseWrite>,
) -> Outcome {
    Outcome {
        reply: Some(Reply {
            dest: destination(req, rx, srv.ports),
            msg,
        }),
        writes,
    }
}

fn nak(srv: &Server, req: &Message, rx: &RecvInfo, why: &'static str) -> Outcome {
    info!(mac = ?client_mac_str(req), requested = ?requested_ip(req), ciaddr = %req.ciaddr(), why, "DHCPNAK");
    let (msg, dest) = reply::nak(req, srv.server_id(rx), srv.ports, why);
    Outcome {
        reply: Some(Reply { msg, dest }),
        writes: vec![],
    }
}

fn client_mac_str(req: &Message) -> Option<MacAddr> {
    super::wire::client_mac(req)
}

fn check_server_id(srv: &Server, req: &Message) -> Result<(), Ignored> {
    match server_identifier(req) {
        Some(id) if !srv.is_ours(id) => Err(Ignored::OtherServer(id)),
        _ => Ok(()),
    }
}

fn decline(srv: &mut Server, req: &Message, mac: MacAddr, now: i64) -> Result<Outcome, Ignored> {
    check_server_id(srv, req)?;
    let ip = requested_ip(req).ok_or(Ignored::Malformed(
        MessageType::Decline,
        "no requested address",
    ))?;
    let write = srv
        .table
        .decline(mac, ip, now)
        .ok_or(Ignored::NoRecord(ip))?;
    warn!(%mac, %ip, "client declined the address (in use on the network); quarantined");
    Ok(Outcome {
        reply: None,
        writes: vec![write],
    })
}

fn release(srv: &mut Server, req: &Message, mac: MacAddr, now: i64) -> Result<Outcome, Ignored> {
    check_server_id(srv, req)?;
    let ip = req.ciaddr();
    let write: LeaseWrite = srv
        .table
        .release(mac, ip, now)
        .ok_or(Ignored::NoRecord(ip))?;
    Ok(Outcome {
        reply: None,
        writes: vec![write],
    })
}

/// DHCPINFORM: configuration for a client that already has its address; no lease.
fn inform(
    srv: &mut Server,
    req: &Message,
    mac: MacAddr,
    rx: &RecvInfo,
) -> Result<Outcome, Ignored> {
    if req.ciaddr().is_unspecified() {
        return Err(Ignored::Malformed(MessageType::Inform, "ciaddr is zero"));
    }
    let s = subnet_for(srv, req, rx)?;
    let mut m = base(req, MessageType::Ack, srv.server_id(rx));
    m.set_ciaddr(req.ciaddr());
    add_lease_options(&mut m, &srv.table.subnets()[s], None, false);
    add_netboot(srv, req, mac, &mut m);
    Ok(answer(srv, req, rx, m, vec![]))
}

fn add_lease_options(m: &mut Message, subnet: &Subnet, hostname: Option<&str>, with_times: bool) {
    let o = m.opts_mut();
    if with_times {
        let t = subnet.lease_time;
        o.insert(DhcpOption::AddressLeaseTime(t));
        o.insert(DhcpOption::Renewal(t / 2));
        o.insert(DhcpOption::Rebinding(t / 8 * 7));
    }
    o.insert(DhcpOption::SubnetMask(subnet.cidr.netmask()));
    o.insert(DhcpOption::BroadcastAddr(subnet.cidr.broadcast()));
    if let Some(r) = subnet.router {
        o.insert(DhcpOption::Router(vec![r]));
    }
    if !subnet.dns.is_empty() {
        o.insert(DhcpOption::DomainNameServer(subnet.dns.clone()));
    }
    if let Some(d) = &subnet.domain {
        o.insert(DhcpOption::DomainName(d.clone()));
    }
    if let Some(h) = hostname {
        o.insert(DhcpOption::Hostname(h.to_string()));
    }
}

/// Boot information for network-boot clients; an unknown architecture gets an address but no
/// boot file, and a log line.
fn add_netboot(srv: &Server, req: &Message, mac: MacAddr, m: &mut Message) {
    let p = PxeRequest::parse(req);
    if !p.is_netboot() && !p.ipxe {
        return;
    }
    if srv.boots_locally.check(mac) {
        return;
    }
    match pxe::choose(&srv.boot, &srv.boot_server, &p, mac) {
        Ok(target) => add_boot(m, &p, &target, &srv.boot_server, false),
        Err(e) => warn!(%mac, error = %e, "network-boot client gets no boot file"),
    }
}
