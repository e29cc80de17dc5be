//! Newtypes for the words of the domain, parsed at the edge so a bad string fails early.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use provisioner_protocol::{BadId, MacAddr, RackId, SlotId};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("`{0}` is not an address range (expected FIRST-LAST, e.g. 10.0.0.100-10.0.0.200)")]
    Range(String),
    #[error("address range `{0}` ends before it starts")]
    RangeOrder(String),
}

/// An inclusive range of IPv4 addresses, written `FIRST-LAST`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    pub fn size(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl FromStr for AddrRange {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| ParseError::Range(s.to_string()))?;
        let first: Ipv4Addr = a.trim().parse().map_err(|_| ParseError::Range(s.into()))?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| ParseError::Range(s.into()))?;
        if last < first {
            return Err(ParseError::RangeOrder(s.to_string()));
        }
        Ok(AddrRange { first, last })
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for AddrRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parses_and_checks_order() {
        let r: AddrRange = "10.0.0.10-10.0.0.20".parse().unwrap();
        assert_eq!(r.size(), 11);
        assert!(r.contains("10.0.0.15".parse().unwrap()));
        assert!(!r.contains("10.0.0.21".parse().unwrap()));
        assert_eq!(
            "10.0.0.20-10.0.0.10".parse::<AddrRange>(),
            Err(ParseError::RangeOrder("10.0.0.20-10.0.0.10".into()))
        );
        assert!("10.0.0.20".parse::<AddrRange>().is_err());
    }
}

/// A SHA-256 digest, written as 64 lower-case hex digits: how every artifact is named.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a sha256 (expected 64 hex digits)")]
pub struct BadSha256(pub String);

impl FromStr for Sha256 {
    type Err = BadSha256;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(BadSha256(s.chars().take(80).collect()));
        }
        Ok(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Hashes a file by streaming it; returns its digest and size.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(Sha256, u64)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Sha256(h.finalize().into()), size))
}
