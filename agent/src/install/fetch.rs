//! Fetching from the appliance's artifact server over plain HTTP: small files whole, the image
//! as a stream that resumes where a dropped connection left it (`Range: bytes=N-`, RFC 9110
//! section 14), with a bounded number of retries, and hashes every byte it hands out.
//!
//! A resumed answer must be a 206 whose `Content-Range` starts at the byte asked for and has
//! the same total, with the same `ETag`: anything else could splice two different files. A
//! server that answers a Range request with 200 sends the whole file again; the bytes already
//! handed out are read again, checked to be the same, and skipped.

use std::io::{self, Read};
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::http::{StatusCode, header};

/// How dropped connections are retried: `attempts` in all for one download, waiting `first`,
/// doubling, at most `max` before each.
#[derive(Clone, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 8,
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Retry {
    /// The wait before retry `n` (from 1).
    pub fn delay(&self, n: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        doubled.min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: {source}")]
    Request { url: String, source: ureq::Error },
    #[error("GET {url}: gave up after {} tries: {}", tries.len(), tries.join("; "))]
    Exhausted { url: String, tries: Vec<String> },
    #[error("GET {url}: the ETag changed from {before} to {after}: the file changed")]
    EtagChanged {
        url: String,
        before: String,
        after: String,
    },
    #[error(
        "GET {url} from byte {from}: Content-Range {:?}, expected bytes {from}-{}/{}",
        got.as_deref().unwrap_or("(none)"),
        total.map_or("?".into(), |t| t.saturating_sub(1).to_string()),
        total.map_or("?".into(), |t| t.to_string()),
    )]
    ContentRange {
        url: String,
        from: u64,
        total: Option<u64>,
        got: Option<String>,
    },
    #[error("GET {url}: the server sent bytes 0-{at} again, and they differ from the first time")]
    PrefixChanged { url: String, at: u64 },
    #[error("GET {url}: the server did not say the length (Content-Length)")]
    NoLength { url: String },
    #[error("GET {url}: more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
}

/// The HTTP client for one install.
pub struct Http {
    agent: ureq::Agent,
    retry: Retry,
}

/// Why an attempt did not give a body: worth another try, or not.
enum Attempt {
    Again(String),
    Fatal(FetchError),
}

impl Http {
    /// `stall` bounds each read from the network (not the whole transfer, which takes
    /// minutes), `connect` each connection.
    pub fn new(connect: Duration, stall: Duration, retry: Retry) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The appliance is on the local network: never through a proxy from the environment.
            .proxy(None)
            .timeout_connect(Some(connect))
            .timeout_recv_response(Some(stall))
            .timeout_per_read(Some(stall))
            .user_agent(concat!("provisioner-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.new_agent(),
            retry,
        }
    }

    /// The whole body of `url`, at most `limit` bytes, retried as a download is.
    pub fn get_small(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut tries = Vec::new();
        loop {
            let why = match self.agent.get(url).call() {
                Ok(mut response) => {
                    let status = response.status();
                    if status == StatusCode::OK {
                        let body = response.body_mut().with_config().limit(limit).read_to_vec();
                        match body {
                            Ok(body) => return Ok(body),
                            Err(ureq::Error::BodyExceedsLimit(_)) => {
                                return Err(FetchError::TooLarge {
                                    url: url.into(),
                                    limit,
                                });
                            }
                            Err(e) => e.to_string(),
                        }
                    } else if status.is_server_error() {
                        format!("the server answered {status}")
                    } else {
                        return Err(FetchError::Status {
                            url: url.into(),
                            status: status.as_u16(),
                        });
                    }
                }
                Err(e) if retriable(&e) => e.to_string(),
                Err(source) => {
                    return Err(FetchError::Request {
                        url: url.into(),
                        source,
                    });
                }
            };
            tries.push(why);
            self.wait(url, &mut tries)?;
        }
    }

    /// Sleeps before the next try, or gives up when the tries are spent.
    fn wait(&self, url: &str, tries: &mut Vec<String>) -> Result<(), FetchError> {
        let n = tries.len() as u32;
        if n > self.retry.attempts {
            return Err(FetchError::Exhausted {
                url: url.into(),
                tries: std::mem::take(tries),
            });
        }
        std::thread::sleep(self.retry.delay(n));
        Ok(())
    }

    /// A resuming, hashing stream of `url`'s body.
    pub fn download(&self, url: &str) -> Download<'_> {
        Download {
            http: self,
            url: url.to_string(),
            body: None,
            etag: None,
            total: None,
            pos: 0,
            received: 0,
            hasher: Sha256::new(),
            tries: Vec::new(),
        }
    }
}

/// Transport trouble is retried; a request that cannot be made is not.
fn retriable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
    )
}

/// The body of one URL as a [`Read`]: a dropped connection is resumed inside `read`, and
/// what cannot be resumed comes out as an `io::Error` holding a [`FetchError`].
pub struct Download<'a> {
    http: &'a Http,
    url: String,
    body: Option<ureq::BodyReader<'static>>,
    etag: Option<String>,
    /// The body's length, from the first answer.
    total: Option<u64>,
    /// Bytes handed out so far (and hashed).
    pos: u64,
    /// Bytes received from the network, including any sent twice.
    received: u64,
    hasher: Sha256,
    /// Each failed try, for the error when they are spent.
    tries: Vec<String>,
}

impl Download<'_> {
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// How many times the transfer was resumed or retried.
    pub fn retries(&self) -> u32 {
        self.tries.len() as u32
    }

    /// sha256 of the bytes handed out so far.
    pub fn sha256(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    fn fatal(e: FetchError) -> io::Error {
        io::Error::other(e)
    }

    /// Records a failed try, then waits or gives up.
    fn failed(&mut self, why: String) -> io::Result<()> {
        self.body = None;
        self.tries.push(format!("at byte {}: {why}", self.pos));
        let url = self.url.clone();
        self.http.wait(&url, &mut self.tries).map_err(Self::fatal)
    }

    /// Asks for the body from `pos` on.
    fn open(&mut self) -> Result<(), Attempt> {
        let mut request = self.http.agent.get(&self.url);
        if self.pos > 0 {
            request = request.header(header::RANGE, format!("bytes={}-", self.pos));
            if let Some(etag) = self.etag.as_ref().filter(|e| !e.starts_with("W/")) {
                request = request.header(header::IF_RANGE, etag);
            }
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(e) if retriable(&e) => return Err(Attempt::Again(e.to_string())),
            Err(source) => {
                return Err(Attempt::Fatal(FetchError::Request {
                    url: self.url.clone(),
                    source,
                }));
            }
        };
        let status = response.status();
        let head = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = head(header::ETAG);
        let content_range = head(header::CONTENT_RANGE);
        let length = head(header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok());
        if status.is_server_error() {
            return Err(Attempt::Again(format!("the server answered {status}")));
        }
        if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
            return Err(Attempt::Fatal(FetchError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
            }));
        }
        self.check_etag(etag)?;
        let mut body = response.into_body().into_reader();
        if status == StatusCode::PARTIAL_CONTENT && self.pos > 0 {
            self.check_range(content_range.as_deref())?;
        } else if status == StatusCode::OK && self.total.is_none() {
            // Known from the start, so that every read below is bounded.
            let Some(length) = length else {
                return Err(Attempt::Fatal(FetchError::NoLength {
                    url: self.url.clone(),
                }));
            };
            self.total = Some(length);
        } else if status == StatusCode::OK {
            // The whole file again: skip what was handed out, once it proves to be the same.
            if length != self.total {
                return Err(Attempt::Fatal(FetchError::ContentRange {
                    url: self.url.clone(),
                    from: 0,
                    total: self.total,
                    got: length.map(|l| format!("(Content-Length {l})")),
                }));
            }
            self.skip_prefix(&mut body)?;
        } else {
            // 206 to a request without a Range.
            return Err(Attempt::Fatal(FetchError::ContentRange {
                url: self.url.clone(),
                from: 0,
                total: self.total,
                got: content_range,
            }));
        }
        self.body = Some(body);
        Ok(())
    }

    fn check_etag(&mut self, etag: Option<String>) -> Result<(), Attempt> {
        match (&self.etag, etag) {
            // The first answer sets it (a server may send none: ranges are still checked).
            (None, etag) if self.total.is_none() => self.etag = etag,
            (before, after) if *before == after => {}
            (before, after) => {
                return Err(Attempt::Fatal(FetchError::EtagChanged {
                    url: self.url.clone(),
                    before: before.clone().unwrap_or_else(|| "(none)".into()),
                    after: after.unwrap_or_else(|| "(none)".into()),
                }));
            }
        }
        Ok(())
    }

    /// `Content-Range: bytes POS-(TOTAL-1)/TOTAL`, with the total known from the start.
    fn check_range(&self, got: Option<&str>) -> Result<(), Attempt> {
        let parsed = got.and_then(|v| {
            let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
            let (first, last) = range.split_once('-')?;
            let n = |s: &str| s.trim().parse::<u64>().ok();
            Some((n(first)?, n(last)?, n(total)?))
        });
        let ok = match (parsed, self.total) {
            (Some((first, last, total)), Some(known)) => {
                first == self.pos && total == known && last.checked_add(1) == Some(total)
            }
            _ => false,
        };
        if ok {
            return Ok(());
        }
        Err(Attempt::Fatal(FetchError::ContentRange {
            url: self.url.clone(),
            from: self.pos,
            total: self.total,
            got: got.map(str::to_string),
        }))
    }

    /// Reads the first `pos` bytes of a full answer and checks they hash as before.
    fn skip_prefix(&mut self, body: &mut impl Read) -> Result<(), Attempt> {
        let mut again = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = self.pos;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match body.read(&mut buf[..want]) {
                Ok(0) => return Err(Attempt::Again("connection closed while skipping".into())),
                Ok(n) => {
                    again.update(&buf[..n]);
                    left -= n as u64;
                    self.received += n as u64;
                }
                Err(e) => return Err(Attempt::Again(e.to_string())),
            }
        }
        if again.finalize()[..] != self.sha256()[..] {
            return Err(Attempt::Fatal(FetchError::PrefixChanged {
                url: self.url.clone(),
                at: self.pos,
            }));
        }
        Ok(())
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Each turn either returns or spends one of the bounded tries.
        loop {
            let Some(body) = self.body.as_mut() else {
                if self.total == Some(self.pos) {
                    return Ok(0);
                }
                match self.open() {
                    Ok(()) => {}
                    Err(Attempt::Again(why)) => self.failed(why)?,
                    Err(Attempt::Fatal(e)) => return Err(Self::fatal(e)),
                }
                continue;
            };
            match body.read(buf) {
                Ok(0) => match self.total {
                    Some(total) if self.pos < total => {
                        self.failed(format!("connection closed before byte {total}"))?
                    }
                    _ => {
                        self.body = None;
                        return Ok(0);
                    }
                },
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.pos += n as u64;
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(e) => self.failed(e.to_string())?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_stop_at_the_cap() {
        let r = Retry {
            attempts: 9,
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ms: Vec<u128> = (1..=6).map(|n| r.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(Retry::default().delay(40), Duration::from_secs(30));
    }
}
