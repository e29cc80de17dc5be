//! A small HTTP/1.1 file server for the install tests: GET with `Range: bytes=N-`, strong
//! ETags, one request per connection, and faults to order (cut bodies, ignored ranges, a
//! changed file).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Each request's path and Range header, in order.
type Log = Mutex<Vec<(String, Option<String>)>>;

/// How the server misbehaves.
#[derive(Default)]
pub struct Faults {
    /// Cut this many of the next image bodies short, after `cut_at` bytes of each.
    pub cuts: u32,
    pub cut_at: u64,
    /// Answer Range requests with the whole file (200).
    pub ignore_range: bool,
    /// Give the image a new ETag after its first answer.
    pub new_etag_after_first: bool,
    /// Send no ETag at all.
    pub no_etag: bool,
    /// Answer Range requests from one byte later than asked.
    pub shifted_range: bool,
}

/// A small HTTP/1.1 file server: GET with `Range: bytes=N-`, strong ETags, one request per
/// connection.
pub struct Server {
    port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    faults: Arc<Mutex<Faults>>,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server {
            port: listener.local_addr().unwrap().port(),
            files: Arc::default(),
            faults: Arc::default(),
            log: Arc::default(),
            stop: Arc::default(),
        };
        let (files, faults, log, stop) = (
            server.files.clone(),
            server.faults.clone(),
            server.log.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut served = 0u32;
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                served += 1;
                let (files, faults, log) = (files.clone(), faults.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, served, &files, &faults, &log);
                });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.into(), body);
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    pub fn log(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    stream: TcpStream,
    nth: u32,
    files: &Mutex<HashMap<String, Vec<u8>>>,
    faults: &Mutex<Faults>,
    log: &Log,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    for _ in 0..100 {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    let body = files.lock().unwrap().get(&path).cloned();
    let mut out = stream;
    let Some(body) = body else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let (cut, ignore_range, shift, etag) = {
        let mut f = faults.lock().unwrap();
        let cut = (path.ends_with(".zst") && f.cuts > 0).then(|| {
            f.cuts -= 1;
            f.cut_at
        });
        let mut etag = hex::encode(&Sha256::digest(&body)[..8]);
        if f.new_etag_after_first && nth > 2 {
            etag = "changed".into();
        }
        let etag = match f.no_etag {
            true => String::new(),
            false => format!("ETag: \"{etag}\"\r\n"),
        };
        (cut, f.ignore_range, usize::from(f.shifted_range), etag)
    };
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| !ignore_range)
        .map(|from| from + shift);
    let len = body.len();
    let (head, part) = match from {
        Some(from) if from < len => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\n",
                len - 1,
                len - from
            ),
            &body[from..],
        ),
        Some(_) => (
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"
            ),
            &body[..0],
        ),
        None => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            &body[..],
        ),
    };
    out.write_all(
        format!("{head}{etag}Accept-Ranges: bytes\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let part = match cut {
        Some(at) => &part[..(at as usize).min(part.len())],
        None => part,
    };
    out.write_all(part)?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}
