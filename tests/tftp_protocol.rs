//! TFTP at the packet level, where real clients cannot be made to misbehave: duplicate ACKs
//! must never resend a block (the Sorcerer's Apprentice bug, RFC 1123 §4.2.3.1), each
//! transfer gets its own port, a client that vanishes is given up after a bounded number of
//! tries, and writes are refused.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{tftp_appliance as start, tftp_request as request};

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

fn ack(block: u16) -> Vec<u8> {
    let mut p = ACK.to_be_bytes().to_vec();
    p.extend_from_slice(&block.to_be_bytes());
    p
}

fn recv(sock: &UdpSocket, wait: Duration) -> Option<(u16, u16, Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    let block = u16::from_be_bytes([buf[2], buf[3]]);
    Some((op, block, buf[4..n].to_vec(), from))
}

#[test]
fn duplicate_acks_never_resend_a_block_and_each_transfer_has_its_own_port() {
    let (_app, server, content, _dir) = start(512 * 40 + 100);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&request(RRQ, "file.bin", &[]), server)
        .unwrap();
    let mut got = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut tid = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "transfer did not finish");
        let Some((op, block, data, from)) = recv(&sock, Duration::from_millis(300)) else {
            // Quiet: every block was answered once; nothing is owed.
            if got.len() == content.len() {
                break;
            }
            panic!("stalled at {} bytes", got.len());
        };
        assert_eq!(op, DATA);
        assert_ne!(
            from.port(),
            server.port(),
            "a transfer runs on its own port"
        );
        assert!(tid.is_none_or(|t| t == from), "one transfer, one port");
        tid = Some(from);
        *seen.entry(block).or_insert(0) += 1;
        if seen[&block] == 1 {
            got.extend_from_slice(&data);
        }
        // Every ACK twice: a server with the Sorcerer's Apprentice bug sends each next block
        // twice, and the duplicates double again down the file.
        sock.send_to(&ack(block), from).unwrap();
        sock.send_to(&ack(block), from).unwrap();
    }
    assert_eq!(got, content);
    let resent: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(resent.is_empty(), "blocks sent more than once: {resent:?}");
}

#[test]
fn a_vanished_client_is_given_up_after_bounded_tries() {
    let (_app, server, _content, _dir) = start(4096);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&request(RRQ, "file.bin", &[("blksize", "1024")]), server)
        .unwrap();
    // The OACK, never acknowledged: the server resends it a bounded number of times.
    let mut sends = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match recv(&sock, Duration::from_secs(4)) {
            Some((op, _, _, _)) if op == OACK => sends += 1,
            Some((op, ..)) if op == ERROR => break,
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert!((2..=8).contains(&sends), "OACK sent {sends} times");
    // Freed: the same client asks again and is served.
    sock.send_to(&request(RRQ, "file.bin", &[]), server)
        .unwrap();
    let (op, block, _, _) = recv(&sock, Duration::from_secs(5)).expect("served again");
    assert_eq!((op, block), (DATA, 1));
}

#[test]
fn write_requests_and_bad_names_get_tftp_errors() {
    let (_app, server, _content, _dir) = start(100);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (op, name, code) in [
        (WRQ, "file.bin", 2u16),
        (RRQ, "../fw/file.bin", 2),
        (RRQ, "nope.bin", 1),
    ] {
        sock.send_to(&request(op, name, &[]), server).unwrap();
        let (got, errcode, _, _) = recv(&sock, Duration::from_secs(5)).expect("an answer");
        assert_eq!((got, errcode), (ERROR, code), "{name}");
    }
    // Garbage is ignored, and the server still answers afterwards.
    sock.send_to(&[0xff; 3], server).unwrap();
    sock.send_to(&request(RRQ, "file.bin", &[]), server)
        .unwrap();
    let (op, ..) = recv(&sock, Duration::from_secs(5)).expect("still serving");
    assert_eq!(op, DATA);
}
