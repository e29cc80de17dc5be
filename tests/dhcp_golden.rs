//! Golden packets: real DHCP client packets (dhclient, udhcpc as BIOS, UEFI, HTTP-boot and
//! iPXE clients, perfdhcp), captured by `fuzz/capture-seeds.sh` and kept as the fuzz seed
//! corpus. Every one must decode, and the server must answer them as the RFCs say.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use provisioner::boot::{BootMap, BootServer};
use provisioner::config::DhcpMode;
use provisioner::dhcp::leases::{LeaseTable, Subnet};
use provisioner::dhcp::{Interface, LocalBoot, Port, RecvInfo, ReplyPorts, Server, wire};

fn server(mode: DhcpMode) -> Server {
    let subnet = Subnet {
        cidr: "10.216.0.0/24".parse().unwrap(),
        range: "10.216.0.100-10.216.0.200".parse().unwrap(),
        router: None,
        dns: vec![],
        domain: None,
        lease_time: 600,
    };
    Server {
        mode,
        interfaces: vec![Interface {
            name: "seed0".into(),
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

#[test]
fn captured_client_packets_decode_and_discovers_are_offered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/dhcp_packet");
    let mut discovers = 0;
    let mut pxe = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("seed corpus") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        let msg = wire::decode_request(&bytes).expect("a real client packet decodes");
        if msg.opts().msg_type() != Some(MessageType::Discover) {
            continue;
        }
        discovers += 1;
        let rx = RecvInfo {
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            iface: 0,
            port: Port::Dhcp,
        };
        let mut full = server(DhcpMode::Full);
        let offer = full.respond(&msg, &rx, 0).expect("full mode offers");
        let reply = offer.reply.expect("an OFFER");
        assert_eq!(reply.msg.opts().msg_type(), Some(MessageType::Offer));
        assert!(!reply.msg.yiaddr().is_unspecified());
        let is_pxe = matches!(
            msg.opts().get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient") || c.starts_with(b"HTTPClient")
        );
        let mut proxy = server(DhcpMode::Proxy);
        let answered = proxy.respond(&msg, &rx, 0);
        if is_pxe {
            pxe += 1;
            assert!(reply.msg.fname().is_some(), "PXE client gets a boot file");
            let p = answered.expect("proxy answers a PXE client").reply.unwrap();
            assert!(p.msg.yiaddr().is_unspecified());
        } else {
            assert!(answered.is_err(), "proxy ignores a plain client");
        }
    }
    assert!(files >= 10, "only {files} seeds");
    assert!(
        discovers >= 5 && pxe >= 4,
        "{discovers} DISCOVERs, {pxe} from PXE clients"
    );
}
