//! A zero-copy path for boot files. A connection whose first request is a GET or HEAD of
//! `/artifacts/…` or `/firmware/…` is served here: the head is parsed with httparse and the
//! bytes go from the page cache to the socket with sendfile(2), as nginx does. A request of
//! any other kind on such a connection hands the connection, with what was read of it, to
//! hyper and the router.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::AppState;
use super::files::plan;
use crate::types::Sha256;

/// Longest request head accepted here.
const MAX_HEAD: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this.
const IDLE: Duration = Duration::from_secs(60);

/// Whether a connection that starts with `head` belongs here.
pub fn wants(head: &[u8]) -> bool {
    [
        b"GET /artifacts/".as_slice(),
        b"HEAD /artifacts/",
        b"GET /firmware/",
        b"HEAD /firmware/",
    ]
    .iter()
    .any(|p| head.starts_with(p))
}

/// What to do with the connection afterwards.
pub enum After {
    Closed,
    /// Serve the rest with hyper: `Rewind` replays what was read.
    Hyper(Rewind),
}

/// A file request this path can answer.
enum Target {
    Artifact(Sha256),
    Firmware(String),
}

fn target(path: &str) -> Option<Target> {
    let path = path.split('?').next()?;
    if let Some(rest) = path.strip_prefix("/artifacts/") {
        let sha = rest.split('/').next()?;
        if rest.split('/').count() > 2 {
            return None;
        }
        return sha.parse().ok().map(Target::Artifact);
    }
    let name = path.strip_prefix("/firmware/")?;
    (!name.is_empty() && !name.contains('/')).then(|| Target::Firmware(name.to_string()))
}

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, st: &AppState) -> After {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read one request head.
        let (head_len, method, path, headers, close) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 48];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut headers = HeaderMap::new();
                    for h in req.headers.iter() {
                        if let (Ok(k), Ok(v)) = (
                            HeaderName::from_bytes(h.name.as_bytes()),
                            HeaderValue::from_bytes(h.value),
                        ) {
                            headers.append(k, v);
                        }
                    }
                    let conn = headers
                        .get("connection")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    let close = req.version == Some(0) && !conn.contains("keep-alive")
                        || conn.contains("close");
                    break (
                        n,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        headers,
                        close,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => {
                    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return After::Closed;
                }
            }
            match tokio::time::timeout(IDLE, stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return After::Closed,
            }
        };
        let has_body = headers.contains_key("transfer-encoding")
            || headers
                .get("content-length")
                .is_some_and(|v| v.as_bytes() != b"0");
        let head_only = method == "HEAD";
        let found = match target(&path) {
            Some(t) if (method == "GET" || head_only) && !has_body => t,
            _ => {
                return After::Hyper(Rewind {
                    prefix: buf,
                    pos: 0,
                    inner: stream,
                });
            }
        };
        let file = match found {
            Target::Artifact(sha) => st.boot.artifacts.path(sha).map(|p| (p, sha, None)),
            Target::Firmware(name) => st
                .boot
                .firmware
                .get(&name)
                .map(|f| (f.path.clone(), f.sha256, Some(name))),
        };
        let opened = file.and_then(|(p, sha, fw)| {
            let f = std::fs::File::open(p).ok()?;
            let len = f.metadata().ok()?.len();
            Some((f, len, sha, fw))
        });
        let Some((file, len, sha, fw)) = opened else {
            if respond(
                &mut stream,
                StatusCode::NOT_FOUND,
                &HeaderMap::new(),
                true,
                close,
            )
            .await
            .is_err()
                || close
            {
                return After::Closed;
            }
            buf.drain(..head_len);
            continue;
        };
        match &fw {
            Some(name) => super::boot::note_firmware(st, peer, name),
            None => super::boot::note_artifact(st, peer, sha, &headers),
        }
        let p = plan(len, sha, &headers);
        if respond(&mut stream, p.status, &p.headers, false, close)
            .await
            .is_err()
        {
            return After::Closed;
        }
        if let (Some((start, count)), false) = (p.body, head_only)
            && send_file(&stream, &file, start, count).await.is_err()
        {
            return After::Closed;
        }
        if close {
            let _ = stream.shutdown().await;
            return After::Closed;
        }
        buf.drain(..head_len);
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: StatusCode,
    headers: &HeaderMap,
    empty: bool,
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in headers {
        head.push_str(k.as_str());
        head.push_str(": ");
        head.push_str(v.to_str().unwrap_or(""));
        head.push_str("\r\n");
    }
    if empty {
        head.push_str("content-length: 0\r\n");
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await
}

/// sendfile(2) until `count` bytes from `start` are out, waiting on the socket when full.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    start: u64,
    count: u64,
) -> std::io::Result<()> {
    let mut offset = start as i64;
    let end = start + count;
    while (offset as u64) < end {
        let left = (end - offset as u64).min(1 << 30) as usize;
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), file.as_fd(), Some(&mut offset), left)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewind {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(out.remaining());
            let pos = self.pos;
            out.put_slice(&self.prefix[pos..pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_take_the_sendfile_path() {
        assert!(wants(b"GET /artifacts/abc HTTP/1.1"));
        assert!(wants(b"HEAD /firmware/ipxe.efi HTTP/1.1"));
        assert!(!wants(b"GET /boot/52-54-00-12-34-56.ipxe HTTP/1.1"));
        assert!(!wants(b"POST /artifacts/x HTTP/1.1"));
        let sha = "ab".repeat(32);
        assert!(matches!(
            target(&format!("/artifacts/{sha}/vmlinuz")),
            Some(Target::Artifact(_))
        ));
        assert!(matches!(
            target(&format!("/artifacts/{sha}")),
            Some(Target::Artifact(_))
        ));
        assert!(target(&format!("/artifacts/{sha}/a/b")).is_none());
        assert!(target("/artifacts/nothex").is_none());
        assert!(
            matches!(target("/firmware/ipxe.efi"), Some(Target::Firmware(n)) if n == "ipxe.efi")
        );
        assert!(target("/firmware/a/b").is_none());
    }
}
