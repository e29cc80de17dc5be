//! A zero-copy path for boot files. A connection whose first request is a GET or HEAD of
//! `/artifacts/…` or `/firmware/…` is served here: the head is parsed with httparse and the
//! bytes go from the page cache to the socket with sendfile(2), as nginx does. A request of
//! any other kind on such a connection hands the connection, with what was read of it, to
//! hyper and the router.
//!
//! The head is read under one deadline (from its first byte, or from the end of the previous
//! response), not a timeout per read, and its framing is strict (RFC 9112 §6.3): two
//! `Content-Length`s, or one beside `Transfer-Encoding`, are refused, so no body is ever taken
//! for the next request.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::AppState;
use super::conns::Conn;
use super::files::plan;
use crate::types::Sha256;

/// Longest request head accepted here.
const MAX_HEAD: usize = 16 * 1024;
/// Headers one head may carry.
const MAX_HEADERS: usize = 48;

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
pub enum Target {
    Artifact(Sha256),
    Firmware(String),
}

pub fn target(path: &str) -> Option<Target> {
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

/// One request head, as this path reads it.
#[derive(Debug)]
pub struct Head {
    /// Its length in bytes, the blank line included.
    pub len: usize,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The client asked to close after this request (or spoke HTTP/1.0 without keep-alive).
    pub close: bool,
    /// A body follows (a `Content-Length` over 0, or `Transfer-Encoding`): not for this path.
    pub has_body: bool,
}

/// Why a head is refused with 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("more than one Content-Length")]
    DuplicateLength,
    #[error("Content-Length beside Transfer-Encoding")]
    LengthAndEncoding,
    #[error("Content-Length `{0}` is not a number of bytes")]
    BadLength(String),
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(HeadError::TooLong),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLong);
    }
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Err(HeadError::Malformed(format!(
                "header `{}`",
                h.name.escape_debug()
            )));
        };
        headers.append(k, v);
    }
    let lengths: Vec<&HeaderValue> = headers.get_all("content-length").iter().collect();
    let encoded = headers.contains_key("transfer-encoding");
    if lengths.len() > 1 {
        return Err(HeadError::DuplicateLength);
    }
    if encoded && !lengths.is_empty() {
        return Err(HeadError::LengthAndEncoding);
    }
    let length = match lengths.first() {
        None => 0,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadLength(text.chars().take(40).collect()));
            }
            text.parse::<u64>()
                .map_err(|_| HeadError::BadLength(text.chars().take(40).collect()))?
        }
    };
    let conn = headers
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let close = req.version == Some(0) && !conn.contains("keep-alive") || conn.contains("close");
    Ok(Some(Head {
        len,
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        headers,
        close,
        has_body: encoded || length > 0,
    }))
}

/// Reads one request head into `buf` by `deadline`; `None` when the connection must close
/// (it ended, went quiet past the deadline, or sent a head refused with 400).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> Option<Head> {
    loop {
        match parse_head(buf) {
            Ok(Some(head)) => return Some(head),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "refusing a request head");
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, conn: &Conn, st: &AppState) -> After {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let deadline = tokio::time::Instant::now() + conn.head_timeout();
        let Some(head) = read_head(&mut stream, &mut buf, deadline).await else {
            return After::Closed;
        };
        conn.headed();
        let Head {
            len: head_len,
            method,
            path,
            headers,
            close,
            has_body,
        } = head;
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

    fn head(text: &str) -> Result<Option<Head>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_head_is_framed_strictly() {
        let ok = head("GET /firmware/ipxe.efi HTTP/1.1\r\nHost: a\r\n\r\nGET /next")
            .unwrap()
            .unwrap();
        assert_eq!(
            ok.len,
            "GET /firmware/ipxe.efi HTTP/1.1\r\nHost: a\r\n\r\n".len()
        );
        assert!(!ok.has_body && !ok.close);
        assert!(
            head("GET /firmware/ipxe.efi HTTP/1.1\r\nHost")
                .unwrap()
                .is_none()
        );
        // Two lengths, as a smuggler sends them: the second would be the next request.
        assert_eq!(
            head("GET /firmware/a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n")
                .unwrap_err(),
            HeadError::DuplicateLength
        );
        assert_eq!(
            head("GET /firmware/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n")
                .unwrap_err(),
            HeadError::LengthAndEncoding
        );
        for bad in ["-1", "+5", "5 5", "0x10", "", "99999999999999999999999"] {
            assert!(
                matches!(
                    head(&format!(
                        "GET /firmware/a HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n"
                    )),
                    Err(HeadError::BadLength(_))
                ),
                "{bad}"
            );
        }
        let chunked = head("GET /firmware/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(chunked.has_body, "a body: hyper frames it");
        let zero = head("GET /firmware/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!zero.has_body);
        assert!(
            head("HEAD /firmware/a HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
        let long = format!("GET /firmware/a HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&long).unwrap_err(), HeadError::TooLong);
        assert!(matches!(
            head("\0\0\0\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

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
