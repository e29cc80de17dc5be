//! Checks on the raw bytes of a DHCP packet (RFC 2131 §2, RFC 2132 §2) before it is decoded,
//! so that truncated packets and options running past the end are refused, not half-read.

use dhcproto::v4::{Decodable, Decoder, Message};

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
/// Larger than any DHCP message a client sends (RFC 2131 allows up to the interface MTU).
pub const MAX_PACKET: usize = 4096;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OP_BOOTREQUEST: u8 = 1;
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
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("option {code} at offset {offset} runs past the end of the packet")]
    OptionOverrun { code: u8, offset: usize },
    #[error("options are not terminated by END")]
    NoEnd,
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
            WireError::NoMagic => "no_magic",
            WireError::OptionOverrun { .. } => "option_overrun",
            WireError::NoEnd => "no_end",
            WireError::Undecodable => "undecodable",
        }
    }
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
    if buf[236..240] != MAGIC_COOKIE {
        return Err(WireError::NoMagic);
    }
    let mut at = HEADER_LEN;
    loop {
        let Some(&code) = buf.get(at) else {
            return Err(WireError::NoEnd);
        };
        match code {
            OPT_PAD => at += 1,
            OPT_END => break,
            _ => {
                let Some(&len) = buf.get(at + 1) else {
                    return Err(WireError::OptionOverrun { code, offset: at });
                };
                let end = at + 2 + usize::from(len);
                if end > buf.len() {
                    return Err(WireError::OptionOverrun { code, offset: at });
                }
                at = end;
            }
        }
    }
    Message::decode(&mut Decoder::new(buf)).map_err(|_| WireError::Undecodable)
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
    fn accepts_a_well_formed_message() {
        let m = decode_request(&discover()).unwrap();
        assert_eq!(m.xid(), 7);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
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
        let unterminated = &good[..good.len() - 1];
        assert_eq!(decode_request(unterminated), Err(WireError::NoEnd));
        assert_eq!(decode_request(&good[..HEADER_LEN]), Err(WireError::NoEnd));
    }
}
