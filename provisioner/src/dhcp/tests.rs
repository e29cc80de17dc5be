//! Decision tests: a request and the table in, a reply and lease writes out. No sockets.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, OptionCode};

use super::leases::{LeaseTable, Subnet};
use super::*;
use crate::boot::{BootMap, BootServer};
use crate::config::{DhcpMode, Reservation};
use crate::store::leases::LeaseState;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac(n: u16) -> MacAddr {
    let [a, b] = n.to_be_bytes();
    MacAddr([0x52, 0x54, 0, 0, a, b])
}

fn server(mode: DhcpMode) -> Server {
    let subnets = vec![
        Subnet {
            cidr: "10.0.0.0/24".parse().unwrap(),
            range: "10.0.0.100-10.0.0.103".parse().unwrap(),
            router: Some(SERVER),
            dns: vec![ip("10.0.0.2")],
            domain: Some("rack.example".into()),
            lease_time: 600,
        },
        Subnet {
            cidr: "10.0.1.0/24".parse().unwrap(),
            range: "10.0.1.100-10.0.1.200".parse().unwrap(),
            router: Some(RELAY),
            dns: vec![],
            domain: None,
            lease_time: 1200,
        },
    ];
    let reservations = [Reservation {
        mac: mac(0xff),
        ip: ip("10.0.0.50"),
        hostname: Some("gpu-a01".into()),
    }];
    Server {
        mode,
        interfaces: vec![Interface {
            name: "prov0".into(),
            net: "10.0.0.1/24".parse().unwrap(),
        }],
        table: LeaseTable::new(subnets, &reservations, vec![], [SERVER]),
        boot: BootMap::default(),
        boot_server: BootServer {
            advertise: SERVER,
            http_port: 8080,
        },
        ports: ReplyPorts::default(),
        boots_locally: LocalBoot::never(),
    }
}

fn msg(t: MessageType, m: MacAddr) -> Message {
    let mut r = Message::new_with_id(
        0x1234,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &m.0,
    );
    r.opts_mut().insert(DhcpOption::MessageType(t));
    r
}

fn with(mut r: Message, o: DhcpOption) -> Message {
    r.opts_mut().insert(o);
    r
}

fn pxe(r: Message, arch: u16) -> Message {
    let r = with(
        r,
        DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
    );
    with(r, DhcpOption::ClientSystemArchitecture(Architecture(arch)))
}

const FROM_NOWHERE: RecvInfo = RecvInfo {
    src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    iface: 0,
    port: Port::Dhcp,
};

fn reply(o: &Outcome) -> &Reply {
    o.reply.as_ref().expect("a reply")
}

fn msg_type(o: &Outcome) -> MessageType {
    reply(o).msg.opts().msg_type().unwrap()
}

fn opt(o: &Outcome, code: OptionCode) -> Option<&DhcpOption> {
    reply(o).msg.opts().get(code)
}

/// DISCOVER, then REQUEST of what was offered; returns the address.
fn dora(s: &mut Server, m: MacAddr, now: i64) -> Ipv4Addr {
    let offer = s
        .respond(&msg(MessageType::Discover, m), &FROM_NOWHERE, now)
        .unwrap();
    let yi = reply(&offer).msg.yiaddr();
    let req = with(
        with(
            msg(MessageType::Request, m),
            DhcpOption::ServerIdentifier(SERVER),
        ),
        DhcpOption::RequestedIpAddress(yi),
    );
    let ack = s.respond(&req, &FROM_NOWHERE, now).unwrap();
    assert_eq!(msg_type(&ack), MessageType::Ack);
    yi
}

#[test]
fn discover_request_ack_with_options_and_a_durable_write() {
    let mut s = server(DhcpMode::Full);
    let offer = s
        .respond(&msg(MessageType::Discover, mac(1)), &FROM_NOWHERE, 0)
        .unwrap();
    assert_eq!(msg_type(&offer), MessageType::Offer);
    assert!(offer.writes.is_empty(), "an offer promises nothing durable");
    let yi = reply(&offer).msg.yiaddr();
    assert!(("10.0.0.100".parse::<Ipv4Addr>().unwrap()..=ip("10.0.0.103")).contains(&yi));
    assert_eq!(
        reply(&offer).dest,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    );
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        opt(&offer, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    assert_eq!(
        opt(&offer, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(525))
    );
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(
        opt(&offer, OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        opt(&offer, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("rack.example".into()))
    );
    assert_eq!(reply(&offer).msg.xid(), 0x1234);
    assert_eq!(reply(&offer).msg.chaddr()[..6], mac(1).0);

    let req = with(
        with(
            with(
                msg(MessageType::Request, mac(1)),
                DhcpOption::ServerIdentifier(SERVER),
            ),
            DhcpOption::RequestedIpAddress(yi),
        ),
        DhcpOption::Hostname("node-1".into()),
    );
    let ack = s.respond(&req, &FROM_NOWHERE, 0).unwrap();
    assert_eq!(msg_type(&ack), MessageType::Ack);
    assert_eq!(reply(&ack).msg.yiaddr(), yi);
    assert_eq!(ack.writes.len(), 1);
    let lease = &ack.writes[0].after;
    assert_eq!(
        (lease.ip, lease.mac, lease.state),
        (yi, mac(1), LeaseState::Active)
    );
    assert_eq!(lease.expires_at, 600);
    assert_eq!(lease.hostname.as_deref(), Some("node-1"));
}

#[test]
fn request_for_another_server_withdraws_our_offer() {
    let mut s = server(DhcpMode::Full);
    let offer = s
        .respond(&msg(MessageType::Discover, mac(1)), &FROM_NOWHERE, 0)
        .unwrap();
    let yi = reply(&offer).msg.yiaddr();
    let req = with(
        with(
            msg(MessageType::Request, mac(1)),
            DhcpOption::ServerIdentifier(ip("10.0.0.254")),
        ),
        DhcpOption::RequestedIpAddress(ip("10.0.0.77")),
    );
    assert_eq!(
        s.respond(&req, &FROM_NOWHERE, 0),
        Err(Ignored::OtherServer(ip("10.0.0.254")))
    );
    assert!(
        s.table.available_to(yi, mac(2), 0),
        "the withdrawn offer frees its address"
    );
}

#[test]
fn init_reboot_acks_its_own_address_and_naks_a_wrong_one() {
    let mut s = server(DhcpMode::Full);
    let yi = dora(&mut s, mac(1), 0);
    let reboot = |want: Ipv4Addr, m: MacAddr| {
        with(
            msg(MessageType::Request, m),
            DhcpOption::RequestedIpAddress(want),
        )
    };
    let ok = s.respond(&reboot(yi, mac(1)), &FROM_NOWHERE, 10).unwrap();
    assert_eq!(msg_type(&ok), MessageType::Ack);
    assert_eq!(ok.writes[0].after.expires_at, 610, "the lease is extended");

    let other = if yi == ip("10.0.0.100") {
        ip("10.0.0.101")
    } else {
        ip("10.0.0.100")
    };
    let nak = s
        .respond(&reboot(other, mac(1)), &FROM_NOWHERE, 10)
        .unwrap();
    assert_eq!(msg_type(&nak), MessageType::Nak);
    assert!(nak.writes.is_empty());
    assert_eq!(reply(&nak).dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(reply(&nak).msg.yiaddr(), Ipv4Addr::UNSPECIFIED);

    let wrong_net = s
        .respond(&reboot(ip("192.168.7.7"), mac(1)), &FROM_NOWHERE, 10)
        .unwrap();
    assert_eq!(msg_type(&wrong_net), MessageType::Nak);

    let taken = s.respond(&reboot(yi, mac(2)), &FROM_NOWHERE, 10).unwrap();
    assert_eq!(msg_type(&taken), MessageType::Nak, "someone else's address");

    assert_eq!(
        s.respond(&reboot(other, mac(3)), &FROM_NOWHERE, 10),
        Err(Ignored::NoRecord(other)),
        "RFC 2131 4.3.2: no record of the client, stay silent"
    );
}

#[test]
fn renewing_is_unicast_to_the_client_and_rebinding_someone_elses_address_is_refused() {
    let mut s = server(DhcpMode::Full);
    let yi = dora(&mut s, mac(1), 0);
    let mut renew = msg(MessageType::Request, mac(1));
    renew.set_ciaddr(yi);
    let rx = RecvInfo {
        src: SocketAddrV4::new(yi, 68),
        ..FROM_NOWHERE
    };
    let ack = s.respond(&renew, &rx, 300).unwrap();
    assert_eq!(msg_type(&ack), MessageType::Ack);
    assert_eq!(reply(&ack).dest, SocketAddrV4::new(yi, 68));
    assert_eq!(reply(&ack).msg.ciaddr(), yi);
    assert_eq!(ack.writes[0].after.expires_at, 900);

    let mut thief = msg(MessageType::Request, mac(2));
    thief.set_ciaddr(yi);
    let nak = s.respond(&thief, &rx, 300).unwrap();
    assert_eq!(msg_type(&nak), MessageType::Nak);
}

#[test]
fn broadcast_flag_forces_a_broadcast_reply() {
    let mut s = server(DhcpMode::Full);
    let mut d = msg(MessageType::Discover, mac(1));
    d.set_flags(Flags::default().set_broadcast());
    let rx = RecvInfo {
        src: SocketAddrV4::new(ip("10.0.0.9"), 68),
        ..FROM_NOWHERE
    };
    let o = s.respond(&d, &rx, 0).unwrap();
    assert_eq!(reply(&o).dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(reply(&o).msg.flags().broadcast());
}

#[test]
fn release_and_decline_write_and_do_not_reply() {
    let mut s = server(DhcpMode::Full);
    let yi = dora(&mut s, mac(1), 0);
    let mut rel = with(
        msg(MessageType::Release, mac(1)),
        DhcpOption::ServerIdentifier(SERVER),
    );
    rel.set_ciaddr(yi);
    let o = s.respond(&rel, &FROM_NOWHERE, 5).unwrap();
    assert!(o.reply.is_none());
    assert_eq!(o.writes[0].after.state, LeaseState::Released);
    assert!(s.table.available_to(yi, mac(2), 5));

    let yi2 = dora(&mut s, mac(3), 6);
    let dec = with(
        with(
            msg(MessageType::Decline, mac(3)),
            DhcpOption::ServerIdentifier(SERVER),
        ),
        DhcpOption::RequestedIpAddress(yi2),
    );
    let o = s.respond(&dec, &FROM_NOWHERE, 7).unwrap();
    assert!(o.reply.is_none());
    assert_eq!(o.writes[0].after.state, LeaseState::Declined);
    assert!(!s.table.available_to(yi2, mac(4), 8), "quarantined");

    let foreign = with(
        with(
            msg(MessageType::Decline, mac(3)),
            DhcpOption::ServerIdentifier(ip("10.9.9.9")),
        ),
        DhcpOption::RequestedIpAddress(yi2),
    );
    assert_eq!(
        s.respond(&foreign, &FROM_NOWHERE, 7),
        Err(Ignored::OtherServer(ip("10.9.9.9")))
    );
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let mut s = server(DhcpMode::Full);
    let mut inf = msg(MessageType::Inform, mac(9));
    inf.set_ciaddr(ip("10.0.0.20"));
    let o = s.respond(&inf, &FROM_NOWHERE, 0).unwrap();
    assert_eq!(msg_type(&o), MessageType::Ack);
    assert_eq!(reply(&o).msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&o, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&o, OptionCode::Router).is_some());
    assert_eq!(reply(&o).dest, SocketAddrV4::new(ip("10.0.0.20"), 68));
    assert!(o.writes.is_empty());
}

#[test]
fn relayed_client_gets_the_relays_subnet_and_the_reply_goes_to_the_relay() {
    let mut s = server(DhcpMode::Full);
    let mut d = msg(MessageType::Discover, mac(1));
    d.set_giaddr(RELAY);
    d.opts_mut()
        .insert(DhcpOption::RelayAgentInformation(Default::default()));
    let rx = RecvInfo {
        src: SocketAddrV4::new(RELAY, 67),
        ..FROM_NOWHERE
    };
    let o = s.respond(&d, &rx, 0).unwrap();
    let yi = reply(&o).msg.yiaddr();
    assert!(yi.octets()[..3] == [10, 0, 1], "{yi}");
    assert_eq!(reply(&o).dest, SocketAddrV4::new(RELAY, 67));
    assert_eq!(reply(&o).msg.giaddr(), RELAY);
    assert_eq!(
        opt(&o, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(1200))
    );
    assert!(
        opt(&o, OptionCode::RelayAgentInformation).is_some(),
        "option 82 echoed"
    );

    let mut unknown = msg(MessageType::Discover, mac(2));
    unknown.set_giaddr(ip("172.16.0.1"));
    assert!(matches!(
        s.respond(&unknown, &rx, 0),
        Err(Ignored::NoSubnet { .. })
    ));
}

#[test]
fn reservation_gets_its_address_and_hostname() {
    let mut s = server(DhcpMode::Full);
    let o = s
        .respond(&msg(MessageType::Discover, mac(0xff)), &FROM_NOWHERE, 0)
        .unwrap();
    assert_eq!(reply(&o).msg.yiaddr(), ip("10.0.0.50"));
    assert_eq!(
        opt(&o, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("gpu-a01".into()))
    );
}

#[test]
fn full_pool_offers_nothing_and_bound_addresses_are_never_shared() {
    let mut s = server(DhcpMode::Full);
    let mut seen = HashMap::new();
    for n in 0..4 {
        let a = dora(&mut s, mac(n), 0);
        assert!(seen.insert(a, n).is_none(), "{a} given twice");
    }
    let e = s.respond(&msg(MessageType::Discover, mac(100)), &FROM_NOWHERE, 0);
    assert_eq!(
        e,
        Err(Ignored::PoolExhausted("10.0.0.0/24".parse().unwrap()))
    );
    // Every MAC keeps its address on a new DISCOVER.
    for (a, n) in &seen {
        let o = s
            .respond(&msg(MessageType::Discover, mac(*n)), &FROM_NOWHERE, 1)
            .unwrap();
        assert_eq!(reply(&o).msg.yiaddr(), *a);
    }
    // After the leases expire, the pool serves again.
    assert!(
        s.respond(&msg(MessageType::Discover, mac(100)), &FROM_NOWHERE, 601)
            .is_ok()
    );
}

#[test]
fn random_mac_flood_never_steals_an_active_lease() {
    let mut s = server(DhcpMode::Full);
    let mine = dora(&mut s, mac(1), 0);
    for n in 1000..3000u16 {
        let d = with(
            msg(MessageType::Discover, mac(n)),
            DhcpOption::RequestedIpAddress(mine),
        );
        if let Ok(o) = s.respond(&d, &FROM_NOWHERE, 1) {
            assert_ne!(reply(&o).msg.yiaddr(), mine);
        }
        let r = with(
            with(
                msg(MessageType::Request, mac(n)),
                DhcpOption::ServerIdentifier(SERVER),
            ),
            DhcpOption::RequestedIpAddress(mine),
        );
        let o = s.respond(&r, &FROM_NOWHERE, 1).unwrap();
        assert_eq!(msg_type(&o), MessageType::Nak);
    }
    assert_eq!(s.table.lease_of(mac(1)).unwrap().ip, mine);
}

#[test]
fn pxe_clients_get_boot_files_by_architecture_in_full_mode() {
    let mut s = server(DhcpMode::Full);
    let o = s
        .respond(
            &pxe(msg(MessageType::Discover, mac(1)), 0),
            &FROM_NOWHERE,
            0,
        )
        .unwrap();
    assert_eq!(reply(&o).msg.fname_str().unwrap().unwrap(), "undionly.kpxe");
    assert_eq!(reply(&o).msg.siaddr(), SERVER);
    assert_eq!(
        opt(&o, OptionCode::TFTPServerName),
        Some(&DhcpOption::TFTPServerName(b"10.0.0.1".to_vec()))
    );
    assert_eq!(
        opt(&o, OptionCode::ClassIdentifier),
        None,
        "a full server's offer is a plain one with a boot file (EDK2 would otherwise ask port 4011)"
    );
    assert_ne!(reply(&o).msg.yiaddr(), Ipv4Addr::UNSPECIFIED);

    let o = s
        .respond(
            &pxe(msg(MessageType::Discover, mac(2)), 7),
            &FROM_NOWHERE,
            0,
        )
        .unwrap();
    assert_eq!(reply(&o).msg.fname_str().unwrap().unwrap(), "ipxe.efi");

    let http = with(
        with(
            msg(MessageType::Discover, mac(3)),
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016".to_vec()),
        ),
        DhcpOption::ClientSystemArchitecture(Architecture(16)),
    );
    let o = s.respond(&http, &FROM_NOWHERE, 0).unwrap();
    assert_eq!(
        reply(&o).msg.fname_str().unwrap().unwrap(),
        "http://10.0.0.1:8080/firmware/ipxe.efi"
    );
    assert_eq!(
        opt(&o, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );

    let ipxe = with(
        with(
            pxe(msg(MessageType::Discover, mac(4)), 7),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ),
        DhcpOption::ClientMachineIdentifier(vec![0, 1, 2, 3]),
    );
    let o = s.respond(&ipxe, &FROM_NOWHERE, 0).unwrap();
    assert_eq!(
        reply(&o).msg.fname_str().unwrap().unwrap(),
        "http://10.0.0.1:8080/boot/52-54-00-00-00-04.ipxe"
    );
    assert!(
        opt(&o, OptionCode::from(175)).is_some(),
        "iPXE is told not to wait for ProxyDHCP"
    );
    assert_eq!(
        opt(&o, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(vec![0, 1, 2, 3]))
    );

    // Unknown architecture: an address, no boot file.
    let o = s
        .respond(
            &pxe(msg(MessageType::Discover, mac(5)), 0x42),
            &FROM_NOWHERE,
            20, // the four earlier offers have lapsed: the pool has four addresses
        )
        .unwrap();
    assert!(reply(&o).msg.fname().is_none());
    assert!(opt(&o, OptionCode::BootfileName).is_none());

    // A plain client gets no boot information at all.
    let o = s
        .respond(&msg(MessageType::Discover, mac(6)), &FROM_NOWHERE, 20)
        .unwrap();
    assert!(reply(&o).msg.fname().is_none());
    assert_eq!(reply(&o).msg.siaddr(), Ipv4Addr::UNSPECIFIED);
}

#[test]
fn proxy_answers_only_netboot_clients_and_never_offers_an_address() {
    let mut s = server(DhcpMode::Proxy);
    assert_eq!(
        s.respond(&msg(MessageType::Discover, mac(1)), &FROM_NOWHERE, 0),
        Err(Ignored::NotNetboot)
    );
    let o = s
        .respond(
            &pxe(msg(MessageType::Discover, mac(1)), 0),
            &FROM_NOWHERE,
            0,
        )
        .unwrap();
    assert_eq!(msg_type(&o), MessageType::Offer);
    assert_eq!(reply(&o).msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&o, OptionCode::AddressLeaseTime).is_none());
    assert_eq!(reply(&o).msg.fname_str().unwrap().unwrap(), "undionly.kpxe");
    assert_eq!(
        opt(&o, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(reply(&o).dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(
        opt(&o, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec())),
        "a proxy offer is marked PXEClient"
    );
    assert!(o.writes.is_empty());

    // The REQUEST to the site's server on port 67 is not ours to answer...
    let req = with(
        pxe(msg(MessageType::Request, mac(1)), 0),
        DhcpOption::ServerIdentifier(ip("10.0.0.254")),
    );
    assert_eq!(
        s.respond(&req, &FROM_NOWHERE, 0),
        Err(Ignored::ProxyPort(MessageType::Request))
    );
    // ...the one to port 4011 is.
    let mut boot_req = pxe(msg(MessageType::Request, mac(1)), 7);
    boot_req.set_ciaddr(ip("10.0.0.150"));
    let rx = RecvInfo {
        src: SocketAddrV4::new(ip("10.0.0.150"), 68),
        iface: 0,
        port: Port::Pxe,
    };
    let o = s.respond(&boot_req, &rx, 0).unwrap();
    assert_eq!(msg_type(&o), MessageType::Ack);
    assert_eq!(reply(&o).msg.fname_str().unwrap().unwrap(), "ipxe.efi");
    assert_eq!(reply(&o).dest, rx.src);
    assert_eq!(reply(&o).msg.yiaddr(), Ipv4Addr::UNSPECIFIED);

    // No boot file for the architecture: no answer at all.
    assert_eq!(
        s.respond(
            &pxe(msg(MessageType::Discover, mac(2)), 0x42),
            &FROM_NOWHERE,
            0
        ),
        Err(Ignored::NoBoot(crate::boot::NoBoot::UnknownArch(0x42)))
    );
}

#[test]
fn non_ethernet_and_typeless_messages_are_ignored() {
    let mut s = server(DhcpMode::Full);
    let mut r = msg(MessageType::Discover, mac(1));
    r.set_chaddr(&[1, 2, 3]);
    assert_eq!(s.respond(&r, &FROM_NOWHERE, 0), Err(Ignored::NotEthernet));
    let mut r = msg(MessageType::Discover, mac(1));
    r.opts_mut().clear();
    assert_eq!(s.respond(&r, &FROM_NOWHERE, 0), Err(Ignored::NoMessageType));
    let r = msg(MessageType::Offer, mac(1));
    assert_eq!(
        s.respond(&r, &FROM_NOWHERE, 0),
        Err(Ignored::UnexpectedType(MessageType::Offer))
    );
}
