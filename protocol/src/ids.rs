//! The names of things the agent and the appliance both speak of, parsed once at the edge: a
//! node's boot MAC, a rack and a slot of the rack plan. A wrong string fails where it enters
//! (a request, a file, the command line), never deep inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet hardware address, written `aa:bb:cc:dd:ee:ff` (lower case) everywhere it is
/// printed; read with `:` or `-` between the octets, in either case.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl MacAddr {
    /// The form used in URLs and file names, where `:` is awkward: `52-54-00-12-34-56`.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl FromStr for MacAddr {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(s.chars().take(64).collect());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = BadMac;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A MAC that may be absent, written `""` when it is (a burn-in run without an appliance).
pub mod optional_mac {
    use super::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.collect_str(m),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// A rack of the plan: `site/row/rack`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RackId {
    pub site: String,
    pub row: String,
    pub rack: String,
}

/// A slot of the plan: its rack and its height unit, `site/row/rack/U10`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    pub rack: RackId,
    pub u: u16,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadId {
    #[error("`{0}` is not a rack (site/row/rack)")]
    Rack(String),
    #[error("`{0}` is not a slot (site/row/rack/U<number>)")]
    Slot(String),
}

impl RackId {
    /// A part of a rack's name (its site, row or rack): not empty, at most 64 bytes, no `/`,
    /// nothing a person could not type. The rack plan and every front door hold to it.
    pub fn part_ok(p: &str) -> bool {
        !p.is_empty() && p.len() <= 64 && !p.chars().any(|c| c == '/' || c.is_control())
    }

    pub fn new(site: &str, row: &str, rack: &str) -> Result<RackId, BadId> {
        if [site, row, rack].iter().all(|p| RackId::part_ok(p)) {
            Ok(RackId {
                site: site.to_string(),
                row: row.to_string(),
                rack: rack.to_string(),
            })
        } else {
            Err(BadId::Rack(format!("{site}/{row}/{rack}")))
        }
    }
}

impl FromStr for RackId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts[..] {
            [site, row, rack] => {
                RackId::new(site, row, rack).map_err(|_| BadId::Rack(s.chars().take(200).collect()))
            }
            _ => Err(BadId::Rack(s.chars().take(200).collect())),
        }
    }
}

impl fmt::Display for RackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.site, self.row, self.rack)
    }
}

impl FromStr for SlotId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadId::Slot(s.chars().take(200).collect());
        let (rack, u) = s.rsplit_once('/').ok_or_else(bad)?;
        let u = u
            .strip_prefix('U')
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        Ok(SlotId {
            rack: rack.parse().map_err(|_| bad())?,
            u,
        })
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/U{}", self.rack, self.u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_both_separators_and_prints_lower_case() {
        let m: MacAddr = "52:54:00:AB:cd:0F".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), m);
        assert_eq!(m.dashed(), "52-54-00-ab-cd-0f");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"52:54:00:ab:cd:0f\"");
        assert_eq!(
            serde_json::from_str::<MacAddr>("\"52-54-00-ab-cd-0f\"").unwrap(),
            m
        );
    }

    #[test]
    fn mac_rejects_garbage() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
            "+1:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }

    #[test]
    fn racks_and_slots_read_and_print_the_same() {
        let slot: SlotId = "dc1/r1/a01/U10".parse().unwrap();
        assert_eq!(slot.rack.to_string(), "dc1/r1/a01");
        assert_eq!(slot.u, 10);
        assert_eq!(slot.to_string(), "dc1/r1/a01/U10");
        for bad in [
            "dc1/r1/a01/10",
            "dc1/r1/U10",
            "dc1//a01/U1",
            "U10",
            "dc1/r1/a01/Ux",
        ] {
            assert!(bad.parse::<SlotId>().is_err(), "{bad}");
        }
        assert!("dc1/r1".parse::<RackId>().is_err());
        assert!("dc1/r1/a01/x".parse::<RackId>().is_err());
        assert_eq!("dc1/r1/a01".parse::<RackId>().unwrap().rack, "a01");
    }
}
