//! Serving files over HTTP: streamed from disk, never read whole into memory, with
//! `Content-Length`, a sha256 `ETag`, `HEAD`, conditional requests and single byte ranges
//! (RFC 9110 §14) so that a large image can be resumed.

use std::os::unix::fs::FileExt;
use std::path::Path;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::types::Sha256;

/// Bytes read from disk per chunk: what one transfer holds in memory.
const CHUNK: usize = 256 * 1024;

/// A byte range `start..=end` of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable range: the whole file (multiple ranges are answered whole, as RFC 9110 lets).
    Whole,
    Part(ByteRange),
    Unsatisfiable,
}

pub fn parse_range(value: &str, len: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        if n == 0 || len == 0 {
            return RangeAsk::Unsatisfiable;
        }
        ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                _ => return RangeAsk::Whole,
            }
        };
        if start >= len {
            return RangeAsk::Unsatisfiable;
        }
        ByteRange { start, end }
    };
    RangeAsk::Part(range)
}

/// Files up to this size are read whole in the request's task: one read of a page-cached
/// file beats three hops to a blocking thread (open, stat, read).
const SMALL: u64 = 64 * 1024;

/// Serves `path` (its digest `sha` as the ETag) for the request `headers`. Files are
/// immutable once served (artifacts are named by their digest, firmware is checked at
/// start), so opening and stat-ing in place is safe and cheap.
pub async fn serve(path: &Path, sha: Sha256, headers: &HeaderMap) -> Response {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let plan = plan(len, sha, headers);
    let Some((start, count)) = plan.body else {
        return (plan.status, plan.headers).into_response();
    };
    let body = if count <= SMALL {
        let mut buf = vec![0u8; count as usize];
        if file.read_exact_at(&mut buf, start).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Body::from(buf)
    } else {
        stream(file, start, count)
    };
    (plan.status, plan.headers, body).into_response()
}

/// What to answer for a file of `len` bytes: status, headers, and which bytes (none for 304
/// and 416). Shared by the hyper path and the sendfile path.
#[derive(Debug)]
pub struct Plan {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `(start, count)` of the bytes to send.
    pub body: Option<(u64, u64)>,
}

pub fn plan(len: u64, sha: Sha256, headers: &HeaderMap) -> Plan {
    let etag = format!("\"{sha}\"");
    let matches_etag = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v == "*"
                    || v.split(',')
                        .any(|t| t.trim().trim_start_matches("W/") == etag)
            })
    };
    let mut base = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        base.insert(header::ETAG, v);
    }
    base.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    base.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if matches_etag(header::IF_NONE_MATCH) {
        return Plan {
            status: StatusCode::NOT_MODIFIED,
            headers: base,
            body: None,
        };
    }
    // If-Range: the range holds only for the same content.
    let range_valid = headers
        .get(header::IF_RANGE)
        .is_none_or(|_| matches_etag(header::IF_RANGE));
    let ask = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if range_valid => parse_range(v, len),
        _ => RangeAsk::Whole,
    };
    let (status, start, count) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part(r) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end)) {
                base.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1)
        }
        RangeAsk::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                base.insert(header::CONTENT_RANGE, v);
            }
            base.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return Plan {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers: base,
                body: None,
            };
        }
    };
    base.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    Plan {
        status,
        headers: base,
        body: Some((start, count)),
    }
}

/// Streams `count` bytes from `start`: one blocking reader per transfer, a chunk at a time,
/// at most one chunk queued ahead, so a transfer holds a few chunks of memory however large
/// the file. Chunk buffers come back to the reader when the connection has written them, so a
/// long transfer reuses three buffers instead of allocating (and faulting in) a fresh one per
/// chunk. A client that goes away stops the reader.
fn stream(file: std::fs::File, start: u64, count: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    tokio::task::spawn_blocking(move || {
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let end = start + count;
        let mut at = start;
        while at < end {
            let n = CHUNK.min((end - at) as usize);
            let mut buf = back_rx.try_recv().unwrap_or_default();
            buf.resize(n, 0);
            let item = file.read_exact_at(&mut buf, at).map(|()| {
                Bytes::from_owner(Returned {
                    buf,
                    back: back_tx.clone(),
                })
            });
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
            at += n as u64;
        }
    });
    let chunks = futures_lite::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    });
    Body::from_stream(chunks)
}

/// A chunk that goes back to its reader's pool when the connection is done with it.
struct Returned {
    buf: Vec<u8>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        // The reader may have finished; then the buffer is simply freed.
        let _ = self.back.send(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let r = |s, e| Part(ByteRange { start: s, end: e });
        assert_eq!(parse_range("bytes=0-99", 1000), r(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), r(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), r(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), r(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), r(990, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Whole);
        assert_eq!(parse_range("items=0-1", 1000), Whole);
        assert_eq!(parse_range("bytes=x-1", 1000), Whole);
    }
}
