//! Checks on the raw bytes of a DHCP packet (RFC 2131 §2, RFC 2132 §2) before it is decoded,
//! so that truncated packets and options running past the end are refused, not half-read.

use dhcproto::v4::{Decodable, Decoder, HType, Message};

use crate::types::MacAddr;

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
/// Larger than any DHCP message a client sends (RFC 2131 allows up to the interface MTU).
pub const MAX_PACKET: usize = 4096;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OP_BOOTREQUEST: u8 = 1;
/// Offsets of the header fields the decoder trusts (RFC 2131 §2).
const HLEN_AT: usize = 2;
const HOPS_AT: usize = 3;
/// chaddr is 16 bytes; dhcproto slices it by `hlen` and panics past that.
pub const MAX_HLEN: u8 = 16;
/// RFC 1542 §4.1.1: a relay discards a request that has come through more than 16 hops.
const MAX_HOPS: u8 = 16;
const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    #[error("packet of {0} bytes is shorter than a DHCP header")]
    Truncated(usize),
    #[error("packet of {0} bytes is larger than any DHCP message")]
    Oversized(usize),
    #[error("op code {0} is not BOOTREQUEST")]
    NotRequest(u8),
    #[error("hardware address length {0} is longer than chaddr's 16 bytes")]
    HardwareLength(u8),
    #[error("{0} relay hops, more than RFC 1542's limit of 16")]
    Hops(u8),
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("option {code} at offset {offset} runs past the end of the packet")]
    OptionOverrun { code: u8, offset: usize },
    #[error("options are not terminated by END")]
    NoEnd,
    #[error("option {code} has length {len}, which its type does not allow")]
    OptionLength { code: u8, len: u8 },
    #[error("undecodable message")]
    Undecodable,
}

impl WireError {
    /// The label of the drop counter.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated(_) => "truncated",
            WireError::Oversized(_) => "oversized",
            WireError::NotRequest(_) => "bad_op",
            WireError::HardwareLength(_) => "bad_hlen",
            WireError::Hops(_) => "too_many_hops",
            WireError::NoMagic => "no_magic",
            WireError::OptionOverrun { .. } => "option_overrun",
            WireError::NoEnd => "no_end",
            WireError::OptionLength { .. } => "option_length",
            WireError::Undecodable => "undecodable",
        }
    }
}

const OPT_MESSAGE_TYPE: u8 = 53;
/// Option 93 (RFC 4578) may list several architectures; the first is the one we act on.
const OPT_CLIENT_ARCH: u8 = 93;

/// The length an option must have where the decoder reads a fixed size whatever the length
/// byte says (and asserts it in debug builds, as fuzzing found). `None`: any length.
fn fixed_length(code: u8) -> Option<fn(u8) -> bool> {
    Some(match code {
        19 | 20 | 23 | 27 | 29 | 30 | 31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156 | 157 => {
            |len| len == 1
        }
        13 | 22 | 26 | 57 => |len| len == 2,
        2 | 24 | 35 | 38 | 51 | 58 | 59 | 91 | 106 | 152..=155 => |len| len == 4,
        80 => |len| len == 0,
        94 => |len| len == 3,
        81 => |len| len >= 3,
        151 => |len| len >= 1,
        OPT_CLIENT_ARCH => |len| len >= 2 && len % 2 == 0,
        _ => return None,
    })
}

/// The client hardware address of `msg`, as many bytes as `hlen` says. dhcproto's own
/// `chaddr()` slices its 16-byte array by `hlen` and panics past it; a message built or decoded
/// anywhere can reach this, so the length is checked here and nowhere else.
pub fn chaddr(msg: &Message) -> &[u8] {
    if msg.hlen() > MAX_HLEN {
        return &[];
    }
    msg.chaddr()
}

/// The Ethernet MAC of a message: the one way any part of the server reads it. `None` when the
/// hardware type is not Ethernet or the length is not six.
pub fn client_mac(msg: &Message) -> Option<MacAddr> {
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return None;
    }
    let bytes: [u8; 6] = chaddr(msg).get(..6)?.try_into().ok()?;
    Some(MacAddr(bytes))
}

/// Validates the framing of a client message and decodes it.
pub fn decode_request(buf: &[u8]) -> Result<Message, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Truncated(buf.len()));
    }
    if buf.len() > MAX_PACKET {
        return Err(WireError::Oversized(buf.len()));
    }
    if buf[0] != OP_BOOTREQUEST {
        return Err(WireError::NotRequest(buf[0]));
    }
    if buf[HLEN_AT] > MAX_HLEN {
        return Err(WireError::HardwareLength(buf[HLEN_AT]));
    }
    if buf[HOPS_AT] > MAX_HOPS {
        return Err(WireError::Hops(buf[HOPS_AT]));
    }
    if buf[236..240] != MAGIC_COOKIE {
        return Err(WireError::NoMagic);
    }
    // The options are copied as they are checked. A list in option 93 keeps its first entry;
    // a fixed-size option repeated back to back (which RFC 3396 would concatenate into a
    // size its type forbids) keeps its first instance.
    let mut clean = Vec::with_capacity(buf.len());
    clean.extend_from_slice(&buf[..HEADER_LEN]);
    let mut at = HEADER_LEN;
    let mut last: Option<u8> = None;
    loop {
        let Some(&code) = buf.get(at) else {
            return Err(WireError::NoEnd);
        };
        match code {
            // Kept: a pad ends an RFC 3396 run, and the decoder must see the same runs.
            OPT_PAD => {
                clean.push(OPT_PAD);
                at += 1;
                last = None;
            }
            OPT_END => {
                clean.push(OPT_END);
                break;
            }
            _ => {
                let Some(&len) = buf.get(at + 1) else {
                    return Err(WireError::OptionOverrun { code, offset: at });
                };
                let end = at + 2 + usize::from(len);
                if end > buf.len() {
                    return Err(WireError::OptionOverrun { code, offset: at });
                }
                let rule = fixed_length(code);
                let repeated = rule.is_some() && last == Some(code);
                if rule.is_some_and(|ok| !ok(len)) {
                    // Without its type the message means nothing; any other misfit option
                    // is left out (real clients send some, e.g. option 91 with no value).
                    if code == OPT_MESSAGE_TYPE {
                        return Err(WireError::OptionLength { code, len });
                    }
                } else if repeated {
                    // Left out: the first instance stands.
                } else if code == OPT_CLIENT_ARCH {
                    clean.extend_from_slice(&[code, 2, buf[at + 2], buf[at + 3]]);
                    last = Some(code);
                } else {
                    clean.extend_from_slice(&buf[at..end]);
                    last = Some(code);
                }
                at = end;
            }
        }
    }
    Message::decode(&mut Decoder::new(&clean)).map_err(|_| WireError::Undecodable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Encodable, Encoder, MessageType};

    fn discover() -> Vec<u8> {
        let mut m = Message::new_with_id(
            7,
            [0; 4].into(),
            [0; 4].into(),
            [0; 4].into(),
            [0; 4].into(),
            &[2, 0, 0, 0, 0, 1],
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn the_mac_is_read_without_trusting_hlen() {
        let mut m = decode_request(&discover()).unwrap();
        assert_eq!(client_mac(&m), Some(MacAddr([2, 0, 0, 0, 0, 1])));
        // A message whose length field is past chaddr (built here, as a decoder that did
        // not check it would leave it) reads as no address, not a panic.
        m.set_chaddr(&[7; 16]);
        assert_eq!(chaddr(&m).len(), 16);
        assert_eq!(client_mac(&m), None, "16 bytes is not Ethernet");
        let mut long = discover();
        long[HLEN_AT] = 200;
        let raw = Message::decode(&mut Decoder::new(&long)).expect("dhcproto decodes it");
        assert_eq!(chaddr(&raw), &[] as &[u8]);
        assert_eq!(client_mac(&raw), None);
    }

    #[test]
    fn accepts_a_well_formed_message() {
        let m = decode_request(&discover()).unwrap();
        assert_eq!(m.xid(), 7);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
    }

    #[test]
    fn a_list_of_architectures_keeps_the_first() {
        let good = discover();
        let mut m = good[..HEADER_LEN].to_vec();
        m.extend_from_slice(&[53, 1, 1, 93, 4, 0, 7, 0, 0, 60, 9]);
        m.extend_from_slice(b"PXEClient");
        m.push(255);
        let msg = decode_request(&m).unwrap();
        assert_eq!(
            msg.opts()
                .get(dhcproto::v4::OptionCode::ClientSystemArchitecture),
            Some(&DhcpOption::ClientSystemArchitecture(
                dhcproto::v4::Architecture(7)
            ))
        );
        assert!(
            msg.opts()
                .get(dhcproto::v4::OptionCode::ClassIdentifier)
                .is_some(),
            "later options still parse"
        );
    }

    #[test]
    fn back_to_back_fixed_options_keep_the_first_instance() {
        let good = discover();
        let mut m = good[..HEADER_LEN].to_vec();
        // Two lease times back to back would concatenate (RFC 3396) into 8 bytes.
        m.extend_from_slice(&[53, 1, 1, 51, 4, 0, 0, 0, 60, 51, 4, 0, 0, 0, 90, 255]);
        let msg = decode_request(&m).unwrap();
        assert_eq!(
            msg.opts().get(dhcproto::v4::OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(60))
        );
    }

    #[test]
    fn refuses_bad_framing() {
        let good = discover();
        assert_eq!(decode_request(&good[..100]), Err(WireError::Truncated(100)));
        assert_eq!(
            decode_request(&vec![1; MAX_PACKET + 1]),
            Err(WireError::Oversized(MAX_PACKET + 1))
        );
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(decode_request(&reply), Err(WireError::NotRequest(2)));
        let mut no_magic = good.clone();
        no_magic[236] = 0;
        assert_eq!(decode_request(&no_magic), Err(WireError::NoMagic));
        // Option 53 claims 200 bytes.
        let mut overrun = good.clone();
        overrun[241] = 200;
        assert!(matches!(
            decode_request(&overrun),
            Err(WireError::OptionOverrun { code: 53, .. })
        ));
        // Message type (53) must be one byte.
        let mut long_type = good[..HEADER_LEN].to_vec();
        long_type.extend_from_slice(&[53, 2, 1, 1, 255]);
        assert_eq!(
            decode_request(&long_type),
            Err(WireError::OptionLength { code: 53, len: 2 })
        );
        // A misfit option of another type is left out; the rest still decode.
        let mut rapid = good[..HEADER_LEN].to_vec();
        rapid.extend_from_slice(&[53, 1, 1, 80, 1, 0, 91, 0, 50, 4, 10, 0, 0, 9, 255]);
        let m = decode_request(&rapid).unwrap();
        assert!(
            m.opts()
                .get(dhcproto::v4::OptionCode::RapidCommit)
                .is_none()
        );
        assert_eq!(
            m.opts().get(dhcproto::v4::OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress([10, 0, 0, 9].into()))
        );
        for hlen in [17u8, 77, 255] {
            let mut long = good.clone();
            long[HLEN_AT] = hlen;
            assert_eq!(decode_request(&long), Err(WireError::HardwareLength(hlen)));
        }
        for hlen in [0u8, 16] {
            let mut edge = good.clone();
            edge[HLEN_AT] = hlen;
            let m = decode_request(&edge).expect("0 and 16 are lengths chaddr holds");
            assert_eq!(usize::from(m.hlen()), m.chaddr().len());
        }
        let mut hops = good.clone();
        hops[HOPS_AT] = 17;
        assert_eq!(decode_request(&hops), Err(WireError::Hops(17)));
        let unterminated = &good[..good.len() - 1];
        assert_eq!(decode_request(unterminated), Err(WireError::NoEnd));
        assert_eq!(decode_request(&good[..HEADER_LEN]), Err(WireError::NoEnd));
    }
}
