//! Fuzzes the DHCP packet path: framing checks, decoding, and the decisions of full and proxy
//! mode on whatever decodes. Nothing may panic, and no address may end up bound to two MACs.
//! Seeds: real client packets in `fuzz/seeds/dhcp_packet` (see `capture-seeds.sh`).

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use provisioner::config::DhcpMode;
use provisioner::dhcp::leases::{LeaseTable, Subnet};
use provisioner::dhcp::pxe::{BootMap, BootServer};
use provisioner::dhcp::{Interface, LocalBoot, Port, RecvInfo, ReplyPorts, Server, wire};

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
        boots_locally: LocalBoot::never(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = wire::decode_request(data) else {
        return;
    };
    for mode in [DhcpMode::Full, DhcpMode::Proxy] {
        let mut s = server(mode);
        for port in [Port::Dhcp, Port::Pxe] {
            let rx = RecvInfo {
                src: SocketAddrV4::new(Ipv4Addr::new(10, 216, 0, 9), 68),
                iface: 0,
                port,
            };
            // Twice: the second sees the state the first left.
            for now in [0, 5] {
                if let Ok(o) = s.respond(&msg, &rx, now) {
                    for w in &o.writes {
                        if let Some(holder) = s.table.lease_at(w.after.ip) {
                            assert_eq!(holder.mac, w.after.mac);
                        }
                    }
                }
            }
        }
    }
});
