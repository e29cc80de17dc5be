//! DHCPv4 server (RFC 2131, options RFC 2132, PXE RFC 4578) in three modes: off, proxy (the
//! default, boot information only) and full (address pools). Decode → decide → encode: the
//! decision is `Server::respond`, a function of a request and the lease table; the socket
//! loop in `serve` is a thin shell around it.

pub mod full;
pub mod leases;
pub mod proxy;
pub mod reply;
pub mod serve;
pub mod wire;

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use ipnet::Ipv4Net;

use crate::boot::{BootMap, BootServer};
use crate::config::DhcpMode;
use crate::types::MacAddr;
use leases::{LeaseTable, LeaseWrite};

pub use serve::serve;

/// Well-known ports: the server's, the client's, and the PXE boot server's (proxy mode).
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const PXE_PORT: u16 = 4011;

/// An interface DHCP is served on: its name and its own address and network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub net: Ipv4Net,
}

impl Interface {
    pub fn addr(&self) -> Ipv4Addr {
        self.net.addr()
    }
}

/// Which listening port a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// 67: DHCP proper.
    Dhcp,
    /// 4011: PXE boot server discovery (proxy mode).
    Pxe,
}

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvInfo {
    pub src: SocketAddrV4,
    /// Index into `Server::interfaces`.
    pub iface: usize,
    pub port: Port,
}

/// Ports replies are sent to; tests point them at sockets they own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyPorts {
    pub client: u16,
    pub relay: u16,
}

impl Default for ReplyPorts {
    fn default() -> Self {
        ReplyPorts {
            client: CLIENT_PORT,
            relay: SERVER_PORT,
        }
    }
}

/// A reply and where it goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub msg: Message,
    pub dest: SocketAddrV4,
}

/// What the server does with one request: perhaps a reply, perhaps lease writes that must
/// reach the store before the reply may leave.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Outcome {
    pub reply: Option<Reply>,
    pub writes: Vec<LeaseWrite>,
}

/// Why a request got no answer. Each is counted; none is an error of the server.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum Ignored {
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("message type {0:?} is not one a server answers")]
    UnexpectedType(MessageType),
    #[error("hardware address is not Ethernet")]
    NotEthernet,
    #[error("not a PXE or HTTP boot client (proxy mode answers only those)")]
    NotNetboot,
    #[error("proxy mode answers {0:?} only on the PXE port")]
    ProxyPort(MessageType),
    #[error(
        "no configured subnet for this client (interface {iface}, giaddr {giaddr}, ciaddr {ciaddr})"
    )]
    NoSubnet {
        iface: String,
        giaddr: Ipv4Addr,
        ciaddr: Ipv4Addr,
    },
    #[error("addressed to another server ({0})")]
    OtherServer(Ipv4Addr),
    #[error("address pool of {0} is exhausted")]
    PoolExhausted(Ipv4Net),
    #[error("no record of this client's lease on {0}")]
    NoRecord(Ipv4Addr),
    #[error("malformed {0:?}: {1}")]
    Malformed(MessageType, &'static str),
    #[error("{0}")]
    NoBoot(#[from] crate::boot::NoBoot),
    #[error("the node boots from its own disk now")]
    BootsLocally,
}

impl Ignored {
    /// The label of the drop counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Ignored::NoMessageType => "no_message_type",
            Ignored::UnexpectedType(_) => "unexpected_type",
            Ignored::NotEthernet => "not_ethernet",
            Ignored::NotNetboot => "not_netboot",
            Ignored::BootsLocally => "boots_locally",
            Ignored::ProxyPort(_) => "proxy_port",
            Ignored::NoSubnet { .. } => "no_subnet",
            Ignored::OtherServer(_) => "other_server",
            Ignored::PoolExhausted(_) => "pool_exhausted",
            Ignored::NoRecord(_) => "no_record",
            Ignored::Malformed(..) => "malformed",
            Ignored::NoBoot(_) => "no_boot_file",
        }
    }
}

/// Everything a DHCP decision needs.
#[derive(Debug)]
pub struct Server {
    pub mode: DhcpMode,
    pub interfaces: Vec<Interface>,
    pub table: LeaseTable,
    pub boot: BootMap,
    pub boot_server: BootServer,
    pub ports: ReplyPorts,
    /// Asks the lifecycle whether a node boots from its own disk now: such a node gets no
    /// boot file (and, in proxy mode, no answer), so its firmware moves on to the disk.
    pub boots_locally: LocalBoot,
}

/// Whether a MAC boots from its own disk, as the lifecycle says.
#[derive(Clone)]
pub struct LocalBoot(Option<std::sync::Arc<dyn Fn(MacAddr) -> bool + Send + Sync>>);

impl std::fmt::Debug for LocalBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "LocalBoot(lifecycle)"
        } else {
            "LocalBoot(never)"
        })
    }
}

impl LocalBoot {
    /// Every client network-boots (no lifecycle: tests, benchmarks).
    pub fn never() -> Self {
        LocalBoot(None)
    }

    pub fn new(f: impl Fn(MacAddr) -> bool + Send + Sync + 'static) -> Self {
        LocalBoot(Some(std::sync::Arc::new(f)))
    }

    pub fn check(&self, mac: MacAddr) -> bool {
        self.0.as_ref().is_some_and(|f| f(mac))
    }
}

impl Server {
    /// Decides the answer to one request at time `now` (Unix seconds).
    pub fn respond(&mut self, req: &Message, rx: &RecvInfo, now: i64) -> Result<Outcome, Ignored> {
        let msg_type = req.opts().msg_type().ok_or(Ignored::NoMessageType)?;
        let mac = client_mac(req)?;
        match self.mode {
            DhcpMode::Full => full::respond(self, req, msg_type, mac, rx, now),
            DhcpMode::Proxy => proxy::respond(self, req, msg_type, mac, rx),
            // An `off` server has no sockets; answering nothing is the safe reading.
            DhcpMode::Off => Err(Ignored::UnexpectedType(msg_type)),
        }
    }

    /// The server identifier for replies on this interface.
    pub fn server_id(&self, rx: &RecvInfo) -> Ipv4Addr {
        self.interfaces[rx.iface].addr()
    }

    /// Whether option 54 names this appliance.
    pub fn is_ours(&self, id: Ipv4Addr) -> bool {
        self.interfaces.iter().any(|i| i.addr() == id)
    }
}

fn client_mac(req: &Message) -> Result<MacAddr, Ignored> {
    wire::client_mac(req).ok_or(Ignored::NotEthernet)
}

/// Option 50, the address a client asks for.
pub fn requested_ip(req: &Message) -> Option<Ipv4Addr> {
    match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

/// Option 54, the server a client chose.
pub fn server_identifier(req: &Message) -> Option<Ipv4Addr> {
    match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// Option 12, the name a client calls itself.
pub fn client_hostname(req: &Message) -> Option<String> {
    match req.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() && h.len() <= 63 => Some(h.clone()),
        _ => None,
    }
}

/// The message type as a label for counters.
pub fn type_label(t: MessageType) -> &'static str {
    match t {
        MessageType::Discover => "discover",
        MessageType::Offer => "offer",
        MessageType::Request => "request",
        MessageType::Decline => "decline",
        MessageType::Ack => "ack",
        MessageType::Nak => "nak",
        MessageType::Release => "release",
        MessageType::Inform => "inform",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
