//! Block maps as `bmaptool create` writes them (bmap-tools' XML, format 2.x): which byte
//! ranges of the raw image hold data, each with its sha256. Only those ranges are written and
//! read back; a map that is not exactly what bmaptool makes is refused before a byte is written.

use std::fmt;

use quick_xml::events::Event;
use quick_xml::reader::Reader;
use sha2::{Digest, Sha256};

/// Format major version this reader understands (2.x: per-range checksums, `ChecksumType`).
const FORMAT_MAJOR: &str = "2";
/// The only checksum the agent verifies with.
const CHECKSUM_TYPE: &str = "sha256";
/// A range of a 16 GiB image at 4 KiB blocks needs at most 4 Mi ranges; far fewer in practice.
const MAX_RANGES: usize = 1 << 22;
/// bmaptool uses the filesystem's block size (4096); anything outside this is not its output.
const BLOCK_SIZES: std::ops::RangeInclusive<u64> = 512..=(1 << 20);

/// A parsed, checked block map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub mapped_blocks: u64,
    /// In image order, not overlapping, each inside the image.
    pub ranges: Vec<MappedRange>,
}

/// Bytes `start..end` of the image (block-aligned, except that the last may end with the image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedRange {
    pub start: u64,
    pub end: u64,
    pub sha256: [u8; 32],
}

impl MappedRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl Bmap {
    /// Bytes in the mapped ranges.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(MappedRange::len).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    #[error("not UTF-8 text: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    #[error("not XML at byte {at}: {why}")]
    Xml { at: u64, why: String },
    #[error("no <bmap> element")]
    NotBmap,
    #[error("format version {0:?}: this agent reads 2.x")]
    Version(String),
    #[error("no <{0}>")]
    Missing(&'static str),
    #[error("<{0}> given twice")]
    Duplicate(&'static str),
    #[error("<{field}> is {text:?}, not a number")]
    Number { field: &'static str, text: String },
    #[error("checksum type {0:?}: only sha256 is accepted")]
    ChecksumType(String),
    #[error("block size {0} is not a power of two in 512..=1048576")]
    BlockSize(u64),
    #[error("<BlocksCount> {said} but an image of {image_size} bytes has {computed} blocks")]
    BlocksCount {
        said: u64,
        image_size: u64,
        computed: u64,
    },
    #[error("<Range> {0:?} is not N or N-M")]
    RangeSyntax(String),
    #[error("range {range} has no sha256 chksum (found {found:?})")]
    RangeChecksum { range: Blocks, found: String },
    #[error(
        "range {range} does not start after the previous one ({previous}): out of order or overlapping"
    )]
    Order { range: Blocks, previous: Blocks },
    #[error("range {range} ends past the image's {blocks} blocks")]
    Beyond { range: Blocks, blocks: u64 },
    #[error("more than {MAX_RANGES} ranges")]
    TooManyRanges,
    #[error("<MappedBlocksCount> {said} but the ranges hold {counted} blocks")]
    MappedCount { said: u64, counted: u64 },
    #[error("<BmapFileChecksum> {expected} but the file's sha256 is {got}")]
    FileChecksum { got: String, expected: String },
}

/// A range in blocks, inclusive, as the file writes it: for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    pub first: u64,
    pub last: u64,
}

impl fmt::Display for Blocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocks {}-{}", self.first, self.last)
    }
}

/// Scalar fields as read, before they are checked against each other.
#[derive(Default)]
struct Fields {
    version: Option<String>,
    image_size: Option<u64>,
    block_size: Option<u64>,
    blocks_count: Option<u64>,
    mapped_blocks: Option<u64>,
    checksum_type: Option<String>,
    file_checksum: Option<String>,
    ranges: Vec<(Blocks, String)>,
}

/// Which element's text is being read.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    ImageSize,
    BlockSize,
    BlocksCount,
    MappedBlocksCount,
    ChecksumType,
    BmapFileChecksum,
    Range,
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        match name {
            "ImageSize" => Field::ImageSize,
            "BlockSize" => Field::BlockSize,
            "BlocksCount" => Field::BlocksCount,
            "MappedBlocksCount" => Field::MappedBlocksCount,
            "ChecksumType" => Field::ChecksumType,
            "BmapFileChecksum" => Field::BmapFileChecksum,
            "Range" => Field::Range,
            _ => Field::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::ImageSize => "ImageSize",
            Field::BlockSize => "BlockSize",
            Field::BlocksCount => "BlocksCount",
            Field::MappedBlocksCount => "MappedBlocksCount",
            Field::ChecksumType => "ChecksumType",
            Field::BmapFileChecksum => "BmapFileChecksum",
            Field::Range => "Range",
            Field::Other => "?",
        }
    }
}

/// Parses and checks a block map as fetched.
pub fn parse_bytes(bytes: &[u8]) -> Result<Bmap, BmapError> {
    parse(std::str::from_utf8(bytes)?)
}

/// Parses and checks a block map.
pub fn parse(text: &str) -> Result<Bmap, BmapError> {
    let fields = read_fields(text)?;
    if let Some(expected) = &fields.file_checksum {
        check_file_checksum(text, expected)?;
    }
    check(fields)
}

fn read_fields(text: &str) -> Result<Fields, BmapError> {
    let mut reader = Reader::from_str(text);
    let xml_err = |reader: &Reader<&[u8]>, e: &dyn fmt::Display| BmapError::Xml {
        at: reader.error_position(),
        why: e.to_string(),
    };
    let mut fields = Fields::default();
    let mut saw_bmap = false;
    // The element whose text comes next, with a Range's checksum attribute.
    let mut open: Option<(Field, String)> = None;
    let mut text_of_open = String::new();
    loop {
        let event = reader.read_event().map_err(|e| xml_err(&reader, &e))?;
        match event {
            Event::Start(e) => {
                let name = e.name();
                let name = name.as_ref();
                if name == "bmap" {
                    saw_bmap = true;
                    let version = e
                        .try_get_attribute("version")
                        .map_err(|err| xml_err(&reader, &err))?
                        .map(|a| a.value.into_owned())
                        .unwrap_or_default();
                    fields.version = Some(version);
                    continue;
                }
                let field = Field::of(name);
                let chksum = match e.try_get_attribute("chksum") {
                    Ok(Some(a)) if field == Field::Range => a.value.into_owned(),
                    Ok(_) => String::new(),
                    Err(err) => return Err(xml_err(&reader, &err)),
                };
                open = Some((field, chksum));
                text_of_open.clear();
            }
            Event::Text(t) if open.is_some() => text_of_open.push_str(&t.xml10_content()),
            Event::End(_) => {
                if let Some((field, chksum)) = open.take() {
                    store(&mut fields, field, text_of_open.trim(), chksum)?;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_bmap {
        return Err(BmapError::NotBmap);
    }
    Ok(fields)
}

fn store(fields: &mut Fields, field: Field, text: &str, chksum: String) -> Result<(), BmapError> {
    let number = |field: Field| {
        text.parse::<u64>().map_err(|_| BmapError::Number {
            field: field.name(),
            text: text.to_string(),
        })
    };
    let set = |slot: &mut Option<u64>, value: u64| {
        if slot.replace(value).is_some() {
            return Err(BmapError::Duplicate(field.name()));
        }
        Ok(())
    };
    match field {
        Field::ImageSize => set(&mut fields.image_size, number(field)?)?,
        Field::BlockSize => set(&mut fields.block_size, number(field)?)?,
        Field::BlocksCount => set(&mut fields.blocks_count, number(field)?)?,
        Field::MappedBlocksCount => set(&mut fields.mapped_blocks, number(field)?)?,
        Field::ChecksumType => {
            if fields.checksum_type.replace(text.to_string()).is_some() {
                return Err(BmapError::Duplicate(field.name()));
            }
        }
        Field::BmapFileChecksum => {
            if fields.file_checksum.replace(text.to_string()).is_some() {
                return Err(BmapError::Duplicate(field.name()));
            }
        }
        Field::Range => {
            if fields.ranges.len() >= MAX_RANGES {
                return Err(BmapError::TooManyRanges);
            }
            fields.ranges.push((blocks(text)?, chksum));
        }
        Field::Other => {}
    }
    Ok(())
}

/// `N` or `N-M` (inclusive block numbers).
fn blocks(text: &str) -> Result<Blocks, BmapError> {
    let bad = || BmapError::RangeSyntax(text.to_string());
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text, text),
    };
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok(Blocks { first, last })
}

fn check(fields: Fields) -> Result<Bmap, BmapError> {
    let version = fields.version.unwrap_or_default();
    if version.split('.').next() != Some(FORMAT_MAJOR) {
        return Err(BmapError::Version(version));
    }
    let image_size = fields.image_size.ok_or(BmapError::Missing("ImageSize"))?;
    let block_size = fields.block_size.ok_or(BmapError::Missing("BlockSize"))?;
    let said_blocks = fields
        .blocks_count
        .ok_or(BmapError::Missing("BlocksCount"))?;
    let mapped_blocks = fields
        .mapped_blocks
        .ok_or(BmapError::Missing("MappedBlocksCount"))?;
    let checksum_type = fields
        .checksum_type
        .ok_or(BmapError::Missing("ChecksumType"))?;
    if checksum_type != CHECKSUM_TYPE {
        return Err(BmapError::ChecksumType(checksum_type));
    }
    if !BLOCK_SIZES.contains(&block_size) || !block_size.is_power_of_two() {
        return Err(BmapError::BlockSize(block_size));
    }
    let blocks_count = image_size.div_ceil(block_size);
    if said_blocks != blocks_count {
        return Err(BmapError::BlocksCount {
            said: said_blocks,
            image_size,
            computed: blocks_count,
        });
    }
    let mut ranges = Vec::with_capacity(fields.ranges.len());
    let mut previous: Option<Blocks> = None;
    let mut counted = 0u64;
    for (range, chksum) in fields.ranges {
        if let Some(previous) = previous
            && range.first <= previous.last
        {
            return Err(BmapError::Order { range, previous });
        }
        if range.last >= blocks_count {
            return Err(BmapError::Beyond {
                range,
                blocks: blocks_count,
            });
        }
        let sha256 = sha256_hex(&chksum).ok_or(BmapError::RangeChecksum {
            range,
            found: chksum.clone(),
        })?;
        // In range: last < blocks_count <= u64::MAX / block_size + 1.
        let start = range.first * block_size;
        let end = ((range.last + 1) * block_size).min(image_size);
        ranges.push(MappedRange { start, end, sha256 });
        counted += range.last - range.first + 1;
        previous = Some(range);
    }
    if counted != mapped_blocks {
        return Err(BmapError::MappedCount {
            said: mapped_blocks,
            counted,
        });
    }
    Ok(Bmap {
        image_size,
        block_size,
        blocks_count,
        mapped_blocks,
        ranges,
    })
}

fn sha256_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// bmaptool hashes the file with the checksum's own digits set to `0`.
fn check_file_checksum(text: &str, expected: &str) -> Result<(), BmapError> {
    let zeroed = text.replacen(expected, &"0".repeat(expected.len()), 1);
    let got = hex::encode(Sha256::digest(zeroed.as_bytes()));
    if !got.eq_ignore_ascii_case(expected) {
        return Err(BmapError::FileChecksum {
            got,
            expected: expected.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "bmap_tests.rs"]
mod tests;
