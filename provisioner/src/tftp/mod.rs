//! Read-only TFTP server (RFC 1350; options RFC 2347, 2348, 2349, 7440). It serves the
//! firmware set and per-node iPXE scripts (`MAC.ipxe`), nothing else; each transfer runs on
//! its own socket and task (`transfer.rs`), on a thread of its own.

mod packet;
mod transfer;

use std::collections::HashSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::events::Events;
use crate::http::boot::Boot;
use crate::store::nodes::EventKind;
use crate::types::MacAddr;

/// How long a transfer waits for an ACK before resending, and how often it tries: a client
/// that vanishes frees its transfer after about ten seconds.
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_SEND_RETRIES: u32 = 5;
/// RFC 2348's largest block.
const MAX_BLKSIZE: u16 = packet::MAX_BLKSIZE;
/// RFC 7440 windows larger than this gain nothing on a LAN.
const MAX_WINDOW: u16 = 64;
/// Transfers at once; past this a request gets "busy" and the client retries.
const MAX_TRANSFERS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TftpServeError {
    #[error("cannot start TFTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
        raw: &str,
    ) -> Result<(Transfer, u64), (u16, &'static str)> {
        let name = check_name(raw).map_err(|why| {
            warn!(%client, name = %raw.escape_debug(), %why, "TFTP request refused");
            (packet::code::ACCESS_VIOLATION, "access violation")
        })?;
        let (source, size, shown) = match name {
            Name::Firmware(name) => {
                let fw = self.boot.firmware.get(&name).ok_or_else(|| {
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
                    name,
                )
            }
            Name::Script(mac) => {
                let server = crate::dhcp::pxe::BootServer {
                    advertise: self.boot.advertise.unwrap_or(Ipv4Addr::LOCALHOST),
                    http_port: self.boot.http_port,
                };
                // The lifecycle lives on the main runtime; this thread runs TFTP's own. The
                // decision runs there, and this transfer awaits it without holding up others.
                let boot = self.boot.clone();
                let body = self
                    .boot
                    .runtime
                    .spawn(async move { boot.script_for(mac, &server).await })
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

/// Serves on `socket` until `shutdown`. `blksize_limit` comes from the provisioning
/// interfaces' MTU.
///
/// The server runs on a thread of its own with a single-threaded runtime: a transfer that
/// waits a round trip per block is bound by wake-up latency, and a thread hop per ACK (as
/// on the shared runtime) costs a third of the rate.
pub async fn serve(
    socket: std::net::UdpSocket,
    boot: Boot,
    events: Events,
    blksize_limit: u16,
    shutdown: CancellationToken,
) -> Result<(), TftpServeError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let bind_err = |source| TftpServeError::Bind { addr, source };
    socket.set_nonblocking(true).map_err(bind_err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(bind_err)?;
    let files = Arc::new(Files { boot, events });
    let token = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match UdpSocket::from_std(socket) {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "TFTP socket unusable");
                        return;
                    }
                };
                info!(%addr, blksize_limit, "TFTP serving");
                listen(listener, files, blksize_limit, token).await;
            })
        })
        .map_err(bind_err)?;
    shutdown.cancelled().await;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok(())
}

async fn listen(
    listener: UdpSocket,
    files: Arc<Files>,
    blksize_limit: u16,
    shutdown: CancellationToken,
) {
    let local = listener
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let slots = Arc::new(Semaphore::new(MAX_TRANSFERS));
    // A client resends its request while it waits: one transfer per client address.
    let active: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
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
        let request = match packet::parse_request(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                debug!(%peer, error = %e, "dropping TFTP packet");
                if matches!(e, packet::PacketError::Mode(_)) {
                    reply_error(
                        local,
                        peer,
                        packet::code::ILLEGAL_OPERATION,
                        "only octet and netascii",
                    )
                    .await;
                }
                continue;
            }
        };
        let (name, options) = match request {
            packet::Request::Write { name } => {
                warn!(%peer, name = %name.escape_debug(), "TFTP write request refused (read-only server)");
                reply_error(
                    local,
                    peer,
                    packet::code::ACCESS_VIOLATION,
                    "read-only server",
                )
                .await;
                continue;
            }
            packet::Request::Read { name, options } => (name, options),
        };
        if !active.lock().map(|mut a| a.insert(peer)).unwrap_or(false) {
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            active.lock().map(|mut a| a.remove(&peer)).ok();
            reply_error(local, peer, packet::code::NOT_DEFINED, "server busy, retry").await;
            continue;
        };
        let (files, active) = (files.clone(), active.clone());
        tokio::spawn(async move {
            let result = start(&files, local, peer, &name, options, blksize_limit).await;
            if let Err(e) = result {
                debug!(%peer, name = %name.escape_debug(), error = %e, "TFTP transfer ended");
            }
            active.lock().map(|mut a| a.remove(&peer)).ok();
            drop(slot);
        });
    }
}

/// Opens the file, negotiates the options, runs the transfer.
async fn start(
    files: &Files,
    local: IpAddr,
    peer: SocketAddr,
    name: &str,
    options: packet::Options,
    blksize_limit: u16,
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
    let mut accepted: Vec<(&str, u64)> = Vec::new();
    let mut blksize = packet::DEFAULT_BLKSIZE;
    if let Some(b) = options.blksize {
        blksize = b.min(blksize_limit);
        accepted.push(("blksize", u64::from(blksize)));
    }
    let mut wait = TIMEOUT;
    if let Some(t) = options.timeout {
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
    let params = transfer::Params {
        blksize: usize::from(blksize),
        window: usize::from(window),
        timeout: wait,
        retries: MAX_SEND_RETRIES,
    };
    transfer::run(socket, source, params, oack).await
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
