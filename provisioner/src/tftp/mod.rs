//! Read-only TFTP server (RFC 1350; options RFC 2347, 2348, 2349, 7440). It serves the
//! firmware set and per-node iPXE scripts (`MAC.ipxe`), nothing else; each transfer runs on
//! its own socket and task (`transfer.rs`), on a thread of its own. Transfers are bounded
//! (`slots.rs`): per client address, in all, and in time.

mod packet;
mod slots;
mod transfer;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::boot::Boot;
use crate::config::Limits;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::store::journal::EventKind;
use crate::types::MacAddr;

pub use packet::{Options, PacketError, Reply, parse_reply};
pub use slots::{Admitted, Slots};
pub use transfer::Params;

/// How long a transfer waits for an ACK before resending, and how often it tries: a client
/// that vanishes frees its transfer after about ten seconds.
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_SEND_RETRIES: u32 = 5;
/// A transfer whose first packet is never acknowledged (a request from a spoofed address, a
/// client gone) ends after this many resends, not `MAX_SEND_RETRIES`.
const FIRST_PACKET_RETRIES: u32 = 2;
/// The longest one transfer may take: a firmware file is a megabyte or two.
const MAX_TRANSFER_TIME: Duration = Duration::from_secs(300);
/// RFC 2348's largest block.
const MAX_BLKSIZE: u16 = packet::MAX_BLKSIZE;
/// RFC 7440 windows larger than this gain nothing on a LAN.
const MAX_WINDOW: u16 = 64;

#[derive(Debug, thiserror::Error)]
pub enum TftpServeError {
    #[error("cannot start TFTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TFTP server stopped: {0}")]
    Stopped(String),
}

/// Why a requested name is refused (logged; the client gets error 1 or 2).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("name contains NUL")]
    Nul,
    #[error("absolute path")]
    Absolute,
    #[error("backslash path")]
    Backslash,
    #[error("`..` leaves the root")]
    DotDot,
    #[error("empty name")]
    Empty,
}

/// What a client may ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum Name {
    Firmware(String),
    Script(MacAddr),
}

/// Checks a requested name; a name that could reach outside the served set is refused.
pub fn check_name(raw: &str) -> Result<Name, Refused> {
    if raw.contains('\0') {
        return Err(Refused::Nul);
    }
    if raw.contains('\\') {
        return Err(Refused::Backslash);
    }
    if raw.starts_with('/') {
        return Err(Refused::Absolute);
    }
    if raw.split('/').any(|c| c == "..") {
        return Err(Refused::DotDot);
    }
    if raw.is_empty() {
        return Err(Refused::Empty);
    }
    if let Some(mac) = raw.strip_suffix(".ipxe").and_then(|m| m.parse().ok()) {
        return Ok(Name::Script(mac));
    }
    Ok(Name::Firmware(raw.to_string()))
}

/// The largest block a datagram on an interface of `mtu` carries: IP, UDP and TFTP headers
/// (20 + 8 + 4 bytes) come off.
pub fn blksize_for_mtu(mtu: u32) -> u16 {
    u16::try_from(mtu.saturating_sub(32))
        .unwrap_or(MAX_BLKSIZE)
        .clamp(512, MAX_BLKSIZE)
}

struct Files {
    boot: Boot,
    events: Events,
}

/// What a transfer reads: a firmware file, or a generated script.
pub enum Source {
    /// Buffered: a block is 512 to 1468 bytes, a read syscall per block would dominate.
    File(std::io::BufReader<std::fs::File>),
    Bytes(std::io::Cursor<Vec<u8>>),
}

/// A transfer's data, and its record: its end (or its abandonment) is the node's event.
pub struct Transfer {
    source: Source,
    name: String,
    client: SocketAddr,
    sent: u64,
    done: bool,
    events: Events,
}

impl Transfer {
    /// Fills `buf` unless the data ends first; returns how much it filled.
    fn read_block(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let got = match &mut self.source {
                Source::File(f) => f.read(&mut buf[n..])?,
                Source::Bytes(c) => c.read(&mut buf[n..])?,
            };
            if got == 0 {
                break;
            }
            n += got;
        }
        self.sent += n as u64;
        Ok(n)
    }

    /// The client acknowledged the last block.
    fn finish(&mut self) {
        self.done = true;
        let detail = format!("RRQ {} sent {} bytes", self.name, self.sent);
        record(&self.events, self.client, detail);
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.done {
            let detail = format!("RRQ {} abandoned after {} bytes", self.name, self.sent);
            record(&self.events, self.client, detail);
        }
    }
}

fn record(events: &Events, client: SocketAddr, detail: String) {
    if let IpAddr::V4(ip) = client.ip() {
        events.record_ip(ip, EventKind::Tftp, detail);
    }
}

impl Files {
    /// Opens what `raw` names for `client`, or says which TFTP error to send.
    async fn open(
        &self,
        client: &SocketAddr,
        name: &Name,
    ) -> Result<(Transfer, u64), (u16, &'static str)> {
        let (source, size, shown) = match name {
            Name::Firmware(name) => {
                let fw = self.boot.firmware.get(name).ok_or_else(|| {
                    info!(%client, name = %name.escape_debug(), "TFTP file not found");
                    (packet::code::FILE_NOT_FOUND, "file not found")
                })?;
                let f = std::fs::File::open(&fw.path).map_err(|e| {
                    error!(%client, %name, error = %e, "cannot open firmware");
                    (packet::code::FILE_NOT_FOUND, "file not found")
                })?;
                (
                    Source::File(std::io::BufReader::with_capacity(64 * 1024, f)),
                    fw.size,
                    name.clone(),
                )
            }
            &Name::Script(mac) => {
                let server = self.boot.server(None);
                // The lifecycle lives on the main runtime; this thread runs TFTP's own. The
                // decision runs there, and this transfer awaits it without holding up others.
                let boot = self.boot.clone();
                let who = self.events.neighbors().requester(client.ip(), mac);
                let body = self
                    .boot
                    .runtime
                    .spawn(async move { boot.script_for(mac, &who, &server).await })
                    .await
                    .map_err(|_| (packet::code::NOT_DEFINED, "internal error"))?
                    .into_bytes();
                let len = body.len() as u64;
                (
                    Source::Bytes(std::io::Cursor::new(body)),
                    len,
                    format!("{mac}.ipxe"),
                )
            }
        };
        record(&self.events, *client, format!("RRQ {shown} ({size} bytes)"));
        Ok((
            Transfer {
                source,
                name: shown,
                client: *client,
                sent: 0,
                done: false,
                events: self.events.clone(),
            },
            size,
        ))
    }
}

/// What one datagram on the server port asks for, decided before anything is opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// Not a request; dropped without an answer.
    Drop(PacketError),
    /// Answered with this TFTP error and nothing else.
    Refuse { code: u16, message: &'static str },
    /// A read of `name`, with the options the client proposed.
    Read { name: Name, options: Options },
}

/// Reads one datagram received on the server port: the whole decision a request gets before
/// a transfer slot is asked for (the fuzz target drives this).
pub fn read_request(buf: &[u8]) -> Asked {
    match packet::parse_request(buf) {
        Err(PacketError::Mode(_)) => Asked::Refuse {
            code: packet::code::ILLEGAL_OPERATION,
            message: "only octet and netascii",
        },
        Err(e) => Asked::Drop(e),
        Ok(packet::Request::Write { .. }) => Asked::Refuse {
            code: packet::code::ACCESS_VIOLATION,
            message: "read-only server",
        },
        Ok(packet::Request::Read { name, options }) => match check_name(&name) {
            Ok(name) => Asked::Read { name, options },
            Err(_) => Asked::Refuse {
                code: packet::code::ACCESS_VIOLATION,
                message: "access violation",
            },
        },
    }
}

/// The options the server accepts for a file of `size` bytes, and the OACK that says so
/// (none when nothing was accepted). A timeout over `max_timeout` seconds is not accepted
/// (RFC 2349 lets the server only take it as asked or leave it): the transfer keeps the
/// server's own, so a client cannot make a slot wait minutes per packet.
pub fn negotiate(
    options: &Options,
    size: u64,
    blksize_limit: u16,
    max_timeout: u8,
) -> (Params, Option<Vec<u8>>) {
    let mut accepted: Vec<(&str, u64)> = Vec::new();
    let mut blksize = packet::DEFAULT_BLKSIZE;
    if let Some(b) = options.blksize {
        blksize = b.min(blksize_limit);
        accepted.push(("blksize", u64::from(blksize)));
    }
    let mut wait = TIMEOUT;
    if let Some(t) = options.timeout.filter(|t| *t <= max_timeout) {
        wait = Duration::from_secs(u64::from(t));
        accepted.push(("timeout", u64::from(t)));
    }
    if options.tsize {
        accepted.push(("tsize", size));
    }
    let mut window = 1;
    if let Some(w) = options.windowsize {
        window = w.min(MAX_WINDOW);
        accepted.push(("windowsize", u64::from(window)));
    }
    let oack = (!accepted.is_empty()).then(|| packet::oack(&accepted));
    let params = Params {
        blksize: usize::from(blksize),
        window: usize::from(window),
        timeout: wait,
        retries: MAX_SEND_RETRIES,
        first_retries: FIRST_PACKET_RETRIES,
    };
    (params, oack)
}

/// Serves on `socket` until `shutdown`, or until its thread stops (then the error says why,
/// and the caller's supervisor starts it again). `blksize_limit` comes from the provisioning
/// interfaces' MTU.
///
/// The server runs on a thread of its own with a single-threaded runtime: a transfer that
/// waits a round trip per block is bound by wake-up latency, and a thread hop per ACK (as
/// on the shared runtime) costs a third of the rate.
pub async fn serve(
    socket: std::net::UdpSocket,
    boot: Boot,
    events: Events,
    server: TftpLimits,
    shutdown: CancellationToken,
) -> Result<(), TftpServeError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let bind_err = |source| TftpServeError::Bind { addr, source };
    socket.set_nonblocking(true).map_err(bind_err)?;
    // A rack powering on sends its requests together: they should queue, not be dropped.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(bind_err)?;
    let files = Arc::new(Files { boot, events });
    let token = shutdown.clone();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || {
            // Dropped when the thread ends, by return or by panic: the caller hears of it.
            let _ended = ended_tx;
            runtime.block_on(async move {
                let listener = match UdpSocket::from_std(socket) {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "TFTP socket unusable");
                        return;
                    }
                };
                info!(%addr, blksize_limit = server.blksize_limit, "TFTP serving");
                listen(listener, files, server, token).await;
            })
        })
        .map_err(bind_err)?;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = ended_rx => {}
    }
    let joined = tokio::task::spawn_blocking(move || thread.join()).await;
    if shutdown.is_cancelled() {
        return Ok(());
    }
    Err(match joined {
        Ok(Err(panic)) => TftpServeError::Stopped(format!(
            "panicked: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
        _ => TftpServeError::Stopped("its thread ended".into()),
    })
}

/// What bounds the TFTP server: block size from the MTU, and the configured limits.
#[derive(Clone, Debug)]
pub struct TftpLimits {
    pub blksize_limit: u16,
    pub transfers: usize,
    pub per_client: usize,
    pub max_timeout: u8,
    pub metrics: Arc<Metrics>,
}

impl TftpLimits {
    pub fn new(blksize_limit: u16, limits: &Limits, metrics: Arc<Metrics>) -> Self {
        TftpLimits {
            blksize_limit,
            transfers: limits.tftp_transfers,
            per_client: limits.tftp_transfers_per_client,
            max_timeout: limits.tftp_max_timeout,
            metrics,
        }
    }
}

async fn listen(
    listener: UdpSocket,
    files: Arc<Files>,
    limits: TftpLimits,
    shutdown: CancellationToken,
) {
    let local = listener
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let slots = Slots::new(limits.transfers, limits.per_client);
    let m = limits.metrics.clone();
    let mut buf = vec![0u8; 1024];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "TFTP socket read failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (name, options) = match read_request(&buf[..n]) {
            Asked::Drop(e) => {
                debug!(%peer, error = %e, "dropping TFTP packet");
                continue;
            }
            Asked::Refuse { code, message } => {
                warn!(%peer, message, "TFTP request refused");
                reply_error(local, peer, code, message).await;
                continue;
            }
            Asked::Read { name, options } => (name, options),
        };
        let slot = match slots.admit(peer) {
            Admitted::Go { slot, evicted } => {
                if evicted {
                    m.limits.hit("tftp", "evicted_unacknowledged");
                }
                slot
            }
            // A client resends its request while it waits: one transfer per client port.
            Admitted::Duplicate => continue,
            Admitted::Busy(reason) => {
                m.limits.hit("tftp", reason);
                reply_error(local, peer, packet::code::NOT_DEFINED, "server busy, retry").await;
                continue;
            }
        };
        let (files, limits) = (files.clone(), limits.clone());
        tokio::spawn(async move {
            let cancelled = slot.cancelled();
            let work = start(&files, local, peer, &name, &options, &limits, &slot);
            let result = tokio::select! {
                r = tokio::time::timeout(MAX_TRANSFER_TIME, work) => match r {
                    Ok(r) => r,
                    Err(_) => {
                        limits.metrics.limits.hit("tftp", "transfer_time");
                        Err(transfer::TransferError::TookTooLong(MAX_TRANSFER_TIME))
                    }
                },
                _ = cancelled => Err(transfer::TransferError::GaveWay),
            };
            if let Err(e) = result {
                debug!(%peer, name = ?name, error = %e, "TFTP transfer ended");
            }
            // The slot goes back when it is dropped here, even if the transfer panicked.
            drop(slot);
        });
    }
}

/// Opens the file, negotiates the options, runs the transfer.
async fn start(
    files: &Files,
    local: IpAddr,
    peer: SocketAddr,
    name: &Name,
    options: &Options,
    limits: &TftpLimits,
    slot: &slots::Slot,
) -> Result<(), transfer::TransferError> {
    let socket = UdpSocket::bind((local, 0)).await?;
    socket.connect(peer).await?;
    let (source, size) = match files.open(&peer, name).await {
        Ok(v) => v,
        Err((code, msg)) => {
            socket.send(&packet::error(code, msg)).await?;
            return Ok(());
        }
    };
    let (params, oack) = negotiate(options, size, limits.blksize_limit, limits.max_timeout);
    transfer::run(socket, source, params, oack, || slot.confirm()).await
}

/// An error to a client, from a port of its own as a transfer would use.
async fn reply_error(local: IpAddr, peer: SocketAddr, code: u16, msg: &str) {
    if let Ok(s) = UdpSocket::bind((local, 0)).await {
        let _ = s.send_to(&packet::error(code, msg), peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(check_name("../etc/passwd"), Err(Refused::DotDot));
        assert_eq!(check_name("a/../../b"), Err(Refused::DotDot));
        assert_eq!(check_name("/etc/passwd"), Err(Refused::Absolute));
        assert_eq!(check_name("boot\\x64\\wdsnbp.com"), Err(Refused::Backslash));
        assert_eq!(check_name("ipxe.efi\0.txt"), Err(Refused::Nul));
        assert_eq!(check_name(""), Err(Refused::Empty));
        assert_eq!(
            check_name("ipxe.efi"),
            Ok(Name::Firmware("ipxe.efi".into()))
        );
        assert_eq!(
            check_name("52-54-00-12-34-56.ipxe"),
            Ok(Name::Script("52:54:00:12:34:56".parse().unwrap()))
        );
    }

    #[test]
    fn blksize_follows_the_mtu() {
        assert_eq!(blksize_for_mtu(1500), 1468);
        assert_eq!(blksize_for_mtu(9000), 8968);
        assert_eq!(blksize_for_mtu(65536), MAX_BLKSIZE);
        assert_eq!(blksize_for_mtu(100), 512);
    }
}
