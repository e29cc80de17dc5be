//! The host's network interfaces and the sockets the boot plane binds on them.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot list network interfaces: {0}")]
    List(nix::Error),
    #[error("interface `{0}` does not exist")]
    NoSuchInterface(String),
    #[error("interface `{0}` has no IPv4 address")]
    NoIpv4(String),
    #[error("cannot bind UDP port {port} on interface `{iface}`: {source}")]
    Bind {
        iface: String,
        port: u16,
        source: std::io::Error,
    },
}

/// An IPv4 peer seen through an IPv6 socket is still an IPv4 peer.
pub fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The first IPv4 address of interface `name`, with its network.
pub fn interface_ipv4(name: &str) -> Result<Ipv4Net, NetError> {
    let mut seen = false;
    for ifa in nix::ifaddrs::getifaddrs().map_err(NetError::List)? {
        if ifa.interface_name != name {
            continue;
        }
        seen = true;
        let addr = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip());
        let mask = ifa
            .netmask
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip());
        if let (Some(addr), Some(mask)) = (addr, mask) {
            let prefix = u32::from(mask).leading_ones() as u8;
            if let Ok(net) = Ipv4Net::new(addr, prefix) {
                return Ok(net);
            }
        }
    }
    Err(if seen {
        NetError::NoIpv4(name.into())
    } else {
        NetError::NoSuchInterface(name.into())
    })
}

/// The MTU of an interface, from sysfs.
pub fn interface_mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A UDP socket on `0.0.0.0:port` that sees only traffic of interface `iface`, including
/// broadcasts, as a DHCP server needs. Several such sockets share a port, one per interface.
pub fn bind_udp_on_interface(iface: &str, port: u16) -> Result<std::net::UdpSocket, NetError> {
    let err = |source| NetError::Bind {
        iface: iface.into(),
        port,
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    s.bind_device(Some(iface.as_bytes())).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    // Bursts of PXE clients powering on together should queue, not drop.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .map_err(err)?;
    Ok(s.into())
}
