//! The download+write phase: the compressed image streams in, is hashed and decompressed, and
//! only the block map's ranges of it are written, in large writes at their offsets. The first
//! MiB is kept in memory instead: it is written last, once everything else is verified, so
//! a disk cut off halfway never boots.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use super::InstallError;
use super::bmap::{Bmap, MappedRange};
use super::fetch::{Download, FetchError, Http};
use super::meter::{Meter, Phase};

/// The part of the image held back until the end.
pub const HELD_BYTES: u64 = 1 << 20;
/// Decompressed bytes handled per turn.
const CHUNK: usize = 4 << 20;
/// Contiguous mapped bytes gathered into one write.
const WRITE: usize = 8 << 20;

/// What the phase leaves for the next ones.
pub(super) struct Streamed {
    /// The image's first [`HELD_BYTES`] (fewer for a smaller image): mapped parts filled in,
    /// the rest zero.
    pub held: Vec<u8>,
    pub retries: u32,
}

/// Gathers the mapped parts of the decompressed stream into writes.
struct RangeWriter<'a> {
    disk: &'a File,
    ranges: &'a [MappedRange],
    /// The first range that does not end before the stream's position.
    next: usize,
    held: Vec<u8>,
    pending: Vec<u8>,
    pending_at: u64,
    written: u64,
}

impl<'a> RangeWriter<'a> {
    fn new(disk: &'a File, bmap: &'a Bmap) -> Self {
        RangeWriter {
            disk,
            ranges: &bmap.ranges,
            next: 0,
            held: vec![0u8; bmap.image_size.min(HELD_BYTES) as usize],
            pending: Vec::with_capacity(WRITE),
            pending_at: 0,
            written: 0,
        }
    }

    /// Takes the image's bytes `pos..pos + data.len()`.
    fn feed(&mut self, pos: u64, data: &[u8]) -> Result<(), InstallError> {
        let end = pos + data.len() as u64;
        while self.next < self.ranges.len() && self.ranges[self.next].end <= pos {
            self.next += 1;
        }
        for range in self.ranges[self.next..]
            .iter()
            .take_while(|r| r.start < end)
        {
            let (from, to) = (range.start.max(pos), range.end.min(end));
            if from < to {
                // from - pos < data.len() and to - pos <= data.len().
                self.take(from, &data[(from - pos) as usize..(to - pos) as usize])?;
            }
        }
        Ok(())
    }

    /// Mapped bytes at image offset `at`: held if in the first MiB, else gathered.
    fn take(&mut self, at: u64, bytes: &[u8]) -> Result<(), InstallError> {
        let held_end = self.held.len() as u64;
        let (mut at, mut bytes) = (at, bytes);
        if at < held_end {
            let n = (held_end - at).min(bytes.len() as u64) as usize;
            self.held[at as usize..at as usize + n].copy_from_slice(&bytes[..n]);
            (at, bytes) = (at + n as u64, &bytes[n..]);
        }
        while !bytes.is_empty() {
            if !self.pending.is_empty() && self.pending_at + self.pending.len() as u64 != at {
                self.flush()?;
            }
            if self.pending.is_empty() {
                self.pending_at = at;
            }
            let n = (WRITE - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            (at, bytes) = (at + n as u64, &bytes[n..]);
            if self.pending.len() == WRITE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), InstallError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.disk
            .write_all_at(&self.pending, self.pending_at)
            .map_err(|source| InstallError::Write {
                offset: self.pending_at,
                len: self.pending.len() as u64,
                source,
            })?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// Pulls a [`FetchError`] back out of the `io::Error` it travelled in through the decoder.
fn fetch_error(e: io::Error) -> Result<FetchError, io::Error> {
    if !e.get_ref().is_some_and(|inner| inner.is::<FetchError>()) {
        return Err(e);
    }
    match e.into_inner().map(|inner| inner.downcast::<FetchError>()) {
        Some(Ok(fetch)) => Ok(*fetch),
        Some(Err(other)) => Err(io::Error::other(other)),
        None => Err(io::Error::other("lost error")),
    }
}

/// Streams `url` onto `disk`; checks the compressed bytes hash to `sha256`.
pub(super) fn download_and_write(
    http: &Http,
    url: &str,
    sha256: &[u8; 32],
    bmap: &Bmap,
    disk: &File,
    meter: &mut Meter<'_>,
) -> Result<Streamed, InstallError> {
    let mut download = http.download(url);
    let mut writer = RangeWriter::new(disk, bmap);
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    meter.phase(Phase::DownloadWrite, None, Instant::now());
    let (decoded, drained) = {
        let mut decoder = zstd::stream::read::Decoder::new(&mut download)
            .map_err(|source| InstallError::Decompress { at: 0, source })?;
        let decoded = decode(
            &mut decoder,
            &mut buf,
            &mut pos,
            bmap.image_size,
            &mut writer,
            meter,
        );
        // Whatever follows the last frame is part of the file and of its hash; after a
        // decompression error the rest still tells a bad transfer from a bad image.
        let drain = matches!(decoded, Ok(()) | Err(InstallError::Decompress { .. }));
        let mut rest = decoder.finish();
        let drained = match drain {
            true => io::copy(&mut rest, &mut io::sink()).map(drop),
            false => Ok(()),
        };
        (decoded, drained.map_err(|e| decode_error(e, pos)))
    };
    let decoded = decoded.and_then(|()| writer.flush());
    meter.received = download.received();
    meter.written = writer.written;
    meter.report(Instant::now());
    let got = download.sha256();
    let digest = |decompress| InstallError::ImageDigest {
        got: hex::encode(got),
        expected: hex::encode(sha256),
        decompress,
    };
    match (decoded, drained) {
        (Err(InstallError::Decompress { at, source }), Ok(())) if got != *sha256 => {
            Err(digest(Some(format!(
                "decompression had failed at image byte {at}: {source}"
            ))))
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(())) if got != *sha256 => Err(digest(None)),
        (Ok(()), Ok(())) if pos != bmap.image_size => Err(InstallError::ImageLength {
            got: pos,
            expected: bmap.image_size,
        }),
        (Ok(()), Ok(())) => Ok(Streamed {
            held: writer.held,
            retries: download.retries(),
        }),
    }
}

/// The decompression loop; `pos` is where it got to.
fn decode(
    decoder: &mut zstd::stream::read::Decoder<'_, io::BufReader<&mut Download<'_>>>,
    buf: &mut [u8],
    pos: &mut u64,
    image_size: u64,
    writer: &mut RangeWriter<'_>,
    meter: &mut Meter<'_>,
) -> Result<(), InstallError> {
    // Each turn takes at least a byte of an image whose size is bounded below.
    loop {
        let n = decoder.read(buf).map_err(|e| decode_error(e, *pos))?;
        if n == 0 {
            return Ok(());
        }
        if *pos + n as u64 > image_size {
            return Err(InstallError::ImageLength {
                got: *pos + n as u64,
                expected: image_size,
            });
        }
        writer.feed(*pos, &buf[..n])?;
        *pos += n as u64;
        meter.written = writer.written;
        meter.received = decoder.get_ref().get_ref().received();
        meter.phase_total = decoder.get_ref().get_ref().total();
        meter.tick(Instant::now());
    }
}

fn decode_error(e: io::Error, at: u64) -> InstallError {
    match fetch_error(e) {
        Ok(source) => InstallError::ImageFetch { at, source },
        Err(source) => InstallError::Decompress { at, source },
    }
}
