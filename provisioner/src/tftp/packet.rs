//! TFTP packets (RFC 1350 §5) and options (RFC 2347 OACK; blksize RFC 2348; timeout and
//! tsize RFC 2349; windowsize RFC 7440).

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// RFC 1350 §5 error codes used here.
pub mod code {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const ILLEGAL_OPERATION: u16 = 4;
}

/// RFC 2348: blocks of 8 to 65464 bytes.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
pub const DEFAULT_BLKSIZE: u16 = 512;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub blksize: Option<u16>,
    pub timeout: Option<u8>,
    /// The client asked for the transfer size (it sends 0).
    pub tsize: bool,
    pub windowsize: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Read { name: String, options: Options },
    Write { name: String },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short")]
    Short,
    #[error("opcode {0} is not a request")]
    NotRequest(u16),
    #[error("strings are not NUL-terminated")]
    Unterminated,
    #[error("mode `{0}` is not octet or netascii")]
    Mode(String),
}

/// Parses a read or write request. Option names are case-insensitive; unknown or malformed
/// options are ignored (RFC 2347: the server simply does not acknowledge them).
pub fn parse_request(buf: &[u8]) -> Result<Request, PacketError> {
    if buf.len() < 4 {
        return Err(PacketError::Short);
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    if op != RRQ && op != WRQ {
        return Err(PacketError::NotRequest(op));
    }
    let body = &buf[2..];
    if body.last() != Some(&0) {
        return Err(PacketError::Unterminated);
    }
    let mut fields = body[..body.len() - 1].split(|b| *b == 0);
    let name = fields.next().ok_or(PacketError::Unterminated)?;
    let mode = fields.next().ok_or(PacketError::Unterminated)?;
    let name = String::from_utf8_lossy(name).into_owned();
    let mode = String::from_utf8_lossy(mode).to_ascii_lowercase();
    if mode != "octet" && mode != "netascii" {
        return Err(PacketError::Mode(mode));
    }
    if op == WRQ {
        return Ok(Request::Write { name });
    }
    let mut options = Options::default();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        let key = String::from_utf8_lossy(k).to_ascii_lowercase();
        let Ok(value) = std::str::from_utf8(v).unwrap_or("").parse::<u64>() else {
            continue;
        };
        match key.as_str() {
            "blksize" if value >= u64::from(MIN_BLKSIZE) => {
                options.blksize = Some(value.min(u64::from(MAX_BLKSIZE)) as u16);
            }
            "timeout" if (1..=255).contains(&value) => options.timeout = Some(value as u8),
            "tsize" if value == 0 => options.tsize = true,
            "windowsize" if (1..=65535).contains(&value) => options.windowsize = Some(value as u16),
            _ => {}
        }
    }
    Ok(Request::Read { name, options })
}

pub fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + payload.len());
    p.extend_from_slice(&DATA.to_be_bytes());
    p.extend_from_slice(&block.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

pub fn error(code: u16, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}

/// An OACK naming each accepted option and its value.
pub fn oack(accepted: &[(&str, u64)]) -> Vec<u8> {
    let mut p = OACK.to_be_bytes().to_vec();
    for (k, v) in accepted {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.to_string().as_bytes());
        p.push(0);
    }
    p
}

/// What a client sent during a transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ack(u16),
    Error(u16),
    Other,
}

pub fn parse_reply(buf: &[u8]) -> Reply {
    if buf.len() < 4 {
        return Reply::Other;
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    let n = u16::from_be_bytes([buf[2], buf[3]]);
    match op {
        ACK => Reply::Ack(n),
        ERROR => Reply::Error(n),
        _ => Reply::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn requests_and_options() {
        let r = parse_request(&rrq(&[
            "ipxe.efi",
            "OCTET",
            "blksize",
            "1468",
            "TSize",
            "0",
            "windowsize",
            "16",
            "timeout",
            "3",
            "x",
            "y",
        ]))
        .unwrap();
        assert_eq!(
            r,
            Request::Read {
                name: "ipxe.efi".into(),
                options: Options {
                    blksize: Some(1468),
                    timeout: Some(3),
                    tsize: true,
                    windowsize: Some(16)
                }
            }
        );
        let r = parse_request(&rrq(&[
            "a",
            "octet",
            "blksize",
            "4",
            "windowsize",
            "0",
            "blksize2",
            "9",
        ]))
        .unwrap();
        assert_eq!(
            r,
            Request::Read {
                name: "a".into(),
                options: Options::default()
            }
        );
        assert_eq!(
            parse_request(&rrq(&["a", "mail"])),
            Err(PacketError::Mode("mail".into()))
        );
        assert_eq!(
            parse_request(&[0, 1, b'a', b'b']),
            Err(PacketError::Unterminated)
        );
        assert_eq!(
            parse_request(&[0, 3, 0, 1]),
            Err(PacketError::NotRequest(3))
        );
        assert_eq!(parse_request(&[0]), Err(PacketError::Short));
        let mut w = rrq(&["up", "octet"]);
        w[1] = 2;
        assert_eq!(parse_request(&w), Ok(Request::Write { name: "up".into() }));
    }

    #[test]
    fn packets() {
        assert_eq!(data(7, b"ab"), [0, 3, 0, 7, b'a', b'b']);
        assert_eq!(error(1, "x"), [0, 5, 0, 1, b'x', 0]);
        assert_eq!(oack(&[("tsize", 42)]), b"\0\x06tsize\x0042\0");
        assert_eq!(parse_reply(&[0, 4, 1, 2]), Reply::Ack(258));
        assert_eq!(parse_reply(&[0, 5, 0, 8, 0]), Reply::Error(8));
        assert_eq!(parse_reply(&[0, 4]), Reply::Other);
    }
}
