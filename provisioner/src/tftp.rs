//! Read-only TFTP server (RFC 1350; options RFC 2347, 2348, 2349, 7440) on `async-tftp`,
//! which does the protocol: option negotiation, windows, retransmission with a bounded number
//! of tries, one socket per transfer. This module decides what a name may be and what it
//! serves: the firmware set, and per-node iPXE scripts (`MAC.ipxe`). Nothing else.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tftp::packet::Error as TftpError;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::events::Events;
use crate::http::boot::Boot;
use crate::store::nodes::EventKind;
use crate::types::MacAddr;

/// How long a transfer waits for an ACK before resending, and how often it tries: a client
/// that vanishes frees its transfer after about ten seconds.
const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_SEND_RETRIES: u32 = 5;
/// RFC 2348's largest block.
const MAX_BLKSIZE: u16 = 65464;
/// RFC 7440 windows larger than this gain nothing on a LAN.
const MAX_WINDOW: u16 = 64;

#[derive(Debug, thiserror::Error)]
pub enum TftpServeError {
    #[error("cannot start TFTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: async_tftp::Error,
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

/// The MTU of an interface, from sysfs.
pub fn interface_mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

struct Files {
    boot: Boot,
    events: Events,
}

struct FilesHandler(Arc<Files>);

/// What a transfer reads: a firmware file, or a generated script.
pub enum Source {
    /// Buffered: a block is 512 to 1468 bytes, a read syscall per block would dominate.
    File(std::io::BufReader<std::fs::File>),
    Bytes(std::io::Cursor<Vec<u8>>),
}

/// A transfer's reader. Boot binaries are small and in the page cache, so reads are done in
/// place; the end of the transfer (or its abandonment) is recorded as the node's event.
pub struct Transfer {
    source: Source,
    name: String,
    client: SocketAddr,
    sent: u64,
    done: bool,
    events: Events,
}

impl AsyncRead for Transfer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = match &mut self.source {
            Source::File(f) => f.read(buf),
            Source::Bytes(c) => c.read(buf),
        }?;
        self.sent += n as u64;
        if n == 0 && !self.done && !buf.is_empty() {
            self.done = true;
            let detail = format!("RRQ {} sent {} bytes", self.name, self.sent);
            record(&self.events, self.client, detail);
        }
        Poll::Ready(Ok(n))
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

/// Writes are refused; this writer is never created.
pub struct NoWrite;

impl AsyncWrite for NoWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::ErrorKind::PermissionDenied.into()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Files {
    fn open(&self, client: &SocketAddr, path: &Path) -> Result<(Transfer, Option<u64>), TftpError> {
        let raw = path.to_string_lossy();
        let name = check_name(&raw).map_err(|why| {
            warn!(%client, name = %raw.escape_debug(), %why, "TFTP request refused");
            TftpError::PermissionDenied
        })?;
        let (source, size, shown) = match name {
            Name::Firmware(name) => {
                let fw = self.boot.firmware.get(&name).ok_or_else(|| {
                    info!(%client, name = %name.escape_debug(), "TFTP file not found");
                    TftpError::FileNotFound
                })?;
                let f = std::fs::File::open(&fw.path).map_err(|e| {
                    error!(%client, %name, error = %e, "cannot open firmware");
                    TftpError::FileNotFound
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
                let body = crate::boot::script(self.boot.discovery.as_ref(), &server, mac)
                    .unwrap_or_else(|e| {
                        crate::boot::error_script(&e.to_string(), &server.script_url(mac))
                    })
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
            Some(size),
        ))
    }
}

impl Handler for FilesHandler {
    type Reader = Transfer;
    type Writer = NoWrite;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Transfer, Option<u64>), TftpError> {
        self.0.open(client, path)
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<NoWrite, TftpError> {
        warn!(%client, name = %path.display(), "TFTP write request refused (read-only server)");
        Err(TftpError::PermissionDenied)
    }
}

/// Serves on `socket` until `shutdown`. `blksize_limit` comes from the provisioning
/// interfaces' MTU.
///
/// The server runs on a thread of its own under `async_io::block_on`, which polls the socket
/// reactor itself: on tokio, every ACK would cross from async-io's reactor thread to a tokio
/// worker, and a one-block-per-round-trip transfer ran at 0.6x tftpd-hpa.
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
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("tftp".into())
        .spawn(move || {
            async_io::block_on(async move {
                let handler = FilesHandler(Arc::new(Files { boot, events }));
                let built = async {
                    TftpServerBuilder::with_handler(handler)
                        .std_socket(socket)?
                        .timeout(TIMEOUT)
                        .max_send_retries(MAX_SEND_RETRIES)
                        .block_size_limit(blksize_limit)
                        .window_size_limit(MAX_WINDOW)
                        .build()
                        .await
                }
                .await;
                let server = match built {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let serve = async {
                    if let Err(e) = server.serve().await {
                        error!(error = %e, "TFTP server stopped");
                    }
                };
                // tokio's oneshot is executor-agnostic: it wakes this thread at shutdown.
                futures_lite::future::or(serve, async {
                    let _ = stop_rx.await;
                })
                .await;
            })
        })
        .map_err(|e| TftpServeError::Bind {
            addr,
            source: async_tftp::Error::Io(e),
        })?;
    match ready_rx.await {
        Ok(Ok(())) => info!(%addr, blksize_limit, "TFTP serving"),
        Ok(Err(source)) => return Err(TftpServeError::Bind { addr, source }),
        Err(_) => {
            return Err(TftpServeError::Bind {
                addr,
                source: async_tftp::Error::Io(std::io::Error::other("TFTP thread ended")),
            });
        }
    }
    shutdown.cancelled().await;
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok(())
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
