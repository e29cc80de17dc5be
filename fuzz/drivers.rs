//! What each fuzz target drives: everything a datagram or a request head reaches in the
//! appliance before a socket is written. Shared, through `#[path]`, by the fuzz targets and
//! by `tests/fuzz_regressions.rs`, which runs every seed and every input that once crashed
//! through the same code in each `cargo test`.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use provisioner::boot::{BootMap, BootServer};
use provisioner::config::DhcpMode;
use provisioner::dhcp::leases::{LeaseTable, Subnet};
use provisioner::dhcp::serve::{Datagram, Decided, Quiet, encode, event_of, process};
use provisioner::dhcp::{Interface, LocalBoot, Port, ReplyPorts, Server};
use provisioner::http::files::plan;
use provisioner::http::sendfile::{Target, parse_head, target};
use provisioner::metrics::Metrics;
use provisioner::tftp::{Asked, negotiate, parse_reply, read_request};
use provisioner::types::Sha256;

fn server(mode: DhcpMode) -> Server {
    let subnet = Subnet {
        cidr: "10.216.0.0/24".parse().unwrap(),
        range: "10.216.0.100-10.216.0.103".parse().unwrap(),
        router: None,
        dns: vec![],
        domain: None,
        lease_time: 600,
    };
    Server {
        mode,
        interfaces: vec![Interface {
            name: "fuzz0".into(),
            net: "10.216.0.1/24".parse().unwrap(),
        }],
        table: LeaseTable::new(vec![subnet], &[], vec![], [Ipv4Addr::new(10, 216, 0, 1)]),
        boot: BootMap::default(),
        boot_server: BootServer {
            advertise: Ipv4Addr::new(10, 216, 0, 1),
            http_port: 8080,
        },
        ports: ReplyPorts::default(),
        // Asked for every netboot client, as the lifecycle is.
        boots_locally: LocalBoot::new(|mac| mac.0[5] & 1 == 1),
    }
}

/// One datagram through the DHCP serve loop's whole path, in full and proxy mode, on both
/// ports, twice (the second sees the state the first left): framing, decoding, the decision,
/// the counters, the log lines, the reply's encoding and its journal event. Nothing may panic,
/// and no address may end up bound to two MACs.
pub fn dhcp_datagram(data: &[u8]) {
    let metrics = Metrics::default();
    for mode in [DhcpMode::Full, DhcpMode::Proxy] {
        let mut s = server(mode);
        let mut quiet = Quiet::default();
        for port in [Port::Dhcp, Port::Pxe] {
            for now in [0, 5] {
                let dgram = Datagram {
                    buf: data,
                    src: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 216, 0, 9), 68)),
                    iface: 0,
                    port,
                };
                let reply = match process(&mut s, &metrics.dhcp, &mut quiet, &dgram, now) {
                    Decided::Nothing => None,
                    Decided::Send(reply) => Some(reply),
                    Decided::Commit { writes, reply } => {
                        for w in &writes {
                            if let Some(holder) = s.table.lease_at(w.after.ip) {
                                assert_eq!(holder.mac, w.after.mac);
                            }
                        }
                        reply
                    }
                };
                if let Some(reply) = reply {
                    let bytes = encode(&reply).expect("a reply encodes");
                    assert!(bytes.len() >= 300);
                    let _ = event_of(&reply);
                }
            }
        }
    }
    metrics.render(&[]).expect("metrics render");
}

/// One datagram on the TFTP server port: the request's reading and the options it would be
/// given, and the same bytes read as a transfer's reply.
pub fn tftp_datagram(data: &[u8]) {
    if let Asked::Read { options, .. } = read_request(data) {
        let (params, oack) = negotiate(&options, data.len() as u64 * 4099, 1468, 5);
        assert!(
            params.timeout.as_secs() <= 5,
            "a client cannot lengthen the wait past 5 s"
        );
        assert!((8..=1468).contains(&params.blksize) || params.blksize == 512);
        assert!((1..=64).contains(&params.window));
        if let Some(o) = oack {
            assert_eq!(o[..2], [0, 6]);
        }
    }
    let _ = parse_reply(data);
}

/// One request head on the sendfile path: its parsing, the file it names, and the response
/// plan for a file of a size taken from the input (Range and conditional headers included).
pub fn http_head(data: &[u8]) {
    let Ok(Some(head)) = parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len());
    let _ = target(&head.path).map(|t| match t {
        Target::Artifact(sha) => sha.to_string(),
        Target::Firmware(name) => name,
    });
    let len = data.iter().map(|b| u64::from(*b)).sum::<u64>() * 31;
    let p = plan(len, Sha256([7; 32]), &head.headers);
    if let Some((start, count)) = p.body {
        assert!(start.checked_add(count).is_some_and(|end| end <= len));
    }
}
