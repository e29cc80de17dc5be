//! Lab tests of the DHCP server with real clients (dhclient, udhcpc, dnsmasq as the site's
//! server, dhcrelay) in network namespaces made by the test. Needs root; in CI a missing tool
//! fails the test, elsewhere it is skipped with what to install.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::{Lab, appliance, read, require, wait_for};
use dhcproto::v4::{
    Architecture, Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType,
    OptionCode,
};
use nix::sys::signal::Signal;

const SERVER_IP: &str = "10.213.0.1";

/// Starts the appliance in `ns` and waits until its DHCP sockets are bound.
fn start(lab: &mut Lab, ns: &str, log: &str, args: &[&str]) -> usize {
    let data = lab.path("data");
    let data = data.to_str().unwrap();
    let mut all = vec![
        "up",
        "--offline",
        "--data-dir",
        data,
        "--http-listen",
        "0.0.0.0:8080",
    ];
    all.extend_from_slice(args);
    let idx = lab.spawn(ns, log, appliance(), &all);
    let ready = wait_for(Duration::from_secs(20), || {
        let text = lab.log(log);
        assert!(
            !text.contains("Error:"),
            "appliance failed to start:\n{text}"
        );
        text.contains("DHCP serving").then_some(())
    });
    assert!(ready.is_some(), "appliance not ready:\n{}", lab.log(log));
    idx
}

/// dhclient (ISC) gets a lease on `eth0` of `ns`; returns the address it bound.
fn dhclient(lab: &mut Lab, ns: &str, tag: &str) -> Option<Ipv4Addr> {
    let out = lab.path(&format!("dhclient-{tag}.out"));
    let script = lab.script(
        &format!("dhclient-{tag}.sh"),
        &format!(
            "#!/bin/sh\necho \"$reason $new_ip_address\" >> {}\n",
            out.display()
        ),
    );
    let lf = lab.path(&format!("dhclient-{tag}.leases"));
    let pf = lab.path(&format!("dhclient-{tag}.pid"));
    let idx = lab.spawn(
        ns,
        &format!("dhclient-{tag}.log"),
        "dhclient",
        &[
            "-d",
            "-1",
            "-v",
            "-sf",
            script.to_str()?,
            "-lf",
            lf.to_str()?,
            "-pf",
            pf.to_str()?,
            "eth0",
        ],
    );
    let got = wait_for(Duration::from_secs(40), || {
        read(&out).lines().find_map(|l| {
            let (reason, ip) = l.split_once(' ')?;
            matches!(reason, "BOUND" | "REBOOT" | "RENEW").then(|| ip.trim().parse().ok())?
        })
    });
    lab.signal(idx, Signal::SIGKILL);
    if got.is_none() {
        eprintln!("dhclient log:\n{}", lab.log(&format!("dhclient-{tag}.log")));
    }
    got
}

/// BusyBox udhcpc gets a lease with `extra` arguments; returns the variables it gave its
/// script (ip, siaddr, boot_file, ...).
fn udhcpc(lab: &mut Lab, ns: &str, tag: &str, extra: &[&str]) -> Option<HashMap<String, String>> {
    let out = lab.path(&format!("udhcpc-{tag}.env"));
    let script = lab.script(
        &format!("udhcpc-{tag}.sh"),
        &format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {0}.tmp && mv {0}.tmp {0}\nexit 0\n",
            out.display()
        ),
    );
    let mut args = vec![
        "20", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "2", "-s",
    ];
    let script = script.to_str()?.to_string();
    args.push(&script);
    args.extend_from_slice(extra);
    let res = lab.cmd(ns, "timeout").args(&args).output().ok()?;
    let env = read(&out);
    if env.is_empty() {
        eprintln!(
            "udhcpc {tag} got nothing: {}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        return None;
    }
    Some(
        env.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn leases_json(lab: &Lab, ns: &str) -> Vec<serde_json::Value> {
    let body = lab
        .http_get(ns, "http://127.0.0.1:8080/api/v1/leases")
        .expect("GET /api/v1/leases");
    serde_json::from_str(&body).expect("leases JSON")
}

fn in_range(ip: Ipv4Addr, first: &str, last: &str) -> bool {
    first.parse::<Ipv4Addr>().unwrap() <= ip && ip <= last.parse::<Ipv4Addr>().unwrap()
}

fn one_segment(lab: &mut Lab) -> (String, String) {
    let srv = lab.host("srv");
    lab.link(&srv, "eth0", 0, Some("10.213.0.1/24"), None);
    let c = lab.host("c1");
    lab.link(&c, "eth0", 0, None, Some("02:00:00:00:01:01"));
    (srv, c)
}

/// What the two-client tests need.
const CLIENTS: [(&str, &str); 4] = [
    ("ip", "iproute2"),
    ("dhclient", "isc-dhcp-client"),
    ("udhcpc", "udhcpc"),
    ("curl", "curl"),
];

/// The appliance's host and two client hosts, MACs ...:01 and ...:02, on one segment.
fn two_clients(lab: &mut Lab) -> (String, String, String) {
    let (srv, c1) = one_segment(lab);
    let c2 = lab.host("c2");
    lab.link(&c2, "eth0", 0, None, Some("02:00:00:00:01:02"));
    (srv, c1, c2)
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn full_mode_gives_dhclient_and_udhcpc_distinct_leases() {
    require(&CLIENTS);
    let mut lab = Lab::new(1);
    let (srv, c1, c2) = two_clients(&mut lab);
    start(
        &mut lab,
        &srv,
        "appliance.log",
        &[
            "--interface",
            "eth0",
            "--dhcp",
            "full",
            "--dhcp-range",
            "10.213.0.100-10.213.0.150",
        ],
    );

    let a = dhclient(&mut lab, &c1, "a").expect("dhclient lease");
    let b: Ipv4Addr = udhcpc(&mut lab, &c2, "b", &[]).expect("udhcpc lease")["ip"]
        .parse()
        .unwrap();
    assert!(in_range(a, "10.213.0.100", "10.213.0.150"), "{a}");
    assert!(in_range(b, "10.213.0.100", "10.213.0.150"), "{b}");
    assert_ne!(a, b);

    let leases = leases_json(&lab, &srv);
    for (mac, ip) in [("02:00:00:00:01:01", a), ("02:00:00:00:01:02", b)] {
        let l = leases
            .iter()
            .find(|l| l["mac"] == mac)
            .unwrap_or_else(|| panic!("{mac} in {leases:?}"));
        assert_eq!(l["ip"], ip.to_string());
        assert_eq!(l["state"], "active");
        assert!(l["expires_at"].as_str().unwrap().ends_with('Z'));
    }
    let metrics = lab.http_get(&srv, "http://127.0.0.1:8080/metrics").unwrap();
    assert!(
        metrics.contains("dhcp_sent_total{type=\"ack\"}"),
        "{metrics}"
    );
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn pxe_clients_get_the_boot_file_of_their_architecture() {
    require(&[("ip", "iproute2"), ("udhcpc", "udhcpc")]);
    let mut lab = Lab::new(1);
    let (srv, c) = one_segment(&mut lab);
    start(
        &mut lab,
        &srv,
        "appliance.log",
        &[
            "--interface",
            "eth0",
            "--dhcp",
            "full",
            "--dhcp-range",
            "10.213.0.100-10.213.0.150",
        ],
    );
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "bios",
            &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"],
            "undionly.kpxe",
        ),
        (
            "uefi",
            &["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"],
            "ipxe.efi",
        ),
        (
            "http",
            &["-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010"],
            "http://10.213.0.1:8080/firmware/ipxe.efi",
        ),
        (
            "ipxe",
            &[
                "-V",
                "PXEClient:Arch:00007:UNDI:003016",
                "-x",
                "0x5d:0007",
                "-x",
                "0x4d:69505845",
            ],
            "http://10.213.0.1:8080/boot/02-00-00-00-02-04.ipxe",
        ),
    ];
    for (i, (tag, args, want)) in cases.iter().enumerate() {
        lab.set_mac(&c, "eth0", &format!("02:00:00:00:02:0{}", i + 1));
        let env = udhcpc(&mut lab, &c, tag, args).unwrap_or_else(|| panic!("{tag}: no lease"));
        assert_eq!(
            env.get("boot_file").map(String::as_str),
            Some(*want),
            "{tag}: {env:?}"
        );
        assert_eq!(
            env.get("siaddr").map(String::as_str),
            Some(SERVER_IP),
            "{tag}"
        );
        assert!(
            env.contains_key("ip"),
            "{tag}: PXE clients get an address in full mode"
        );
    }
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn leases_survive_a_restart_and_kill_9() {
    require(&CLIENTS);
    let mut lab = Lab::new(1);
    let (srv, c1, c2) = two_clients(&mut lab);
    let args = [
        "--interface",
        "eth0",
        "--dhcp",
        "full",
        "--dhcp-range",
        "10.213.0.100-10.213.0.150",
    ];
    let first = start(&mut lab, &srv, "run1.log", &args);
    let a = dhclient(&mut lab, &c1, "a1").expect("lease a");
    let b: Ipv4Addr = udhcpc(&mut lab, &c2, "b1", &[]).expect("lease b")["ip"]
        .parse()
        .unwrap();

    // Graceful: SIGTERM drains and exits 0.
    let status = lab
        .signal(first, Signal::SIGTERM)
        .expect("exits on SIGTERM");
    assert!(
        status.success(),
        "SIGTERM exit: {status:?}\n{}",
        lab.log("run1.log")
    );
    let second = start(&mut lab, &srv, "run2.log", &args);
    assert!(
        lab.log("run2.log").contains("leases=2"),
        "{}",
        lab.log("run2.log")
    );
    assert_eq!(
        dhclient(&mut lab, &c1, "a2"),
        Some(a),
        "same MAC, same address after restart"
    );

    // Abrupt: kill -9 loses nothing that was acknowledged.
    lab.signal(second, Signal::SIGKILL).expect("killed");
    start(&mut lab, &srv, "run3.log", &args);
    let b2: Ipv4Addr = udhcpc(&mut lab, &c2, "b2", &[]).expect("lease b after kill")["ip"]
        .parse()
        .unwrap();
    assert_eq!(b2, b, "same MAC, same address after kill -9");
    assert_eq!(dhclient(&mut lab, &c1, "a3"), Some(a));
    // A newcomer never gets an address someone holds.
    lab.set_mac(&c1, "eth0", "02:00:00:00:01:03");
    let c = dhclient(&mut lab, &c1, "c").expect("lease c");
    assert!(c != a && c != b, "{c} is already leased");
    let leases = leases_json(&lab, &srv);
    assert_eq!(
        leases.iter().filter(|l| l["state"] == "active").count(),
        3,
        "{leases:?}"
    );
}

/// A socket inside namespace `ns`, bound to `device` and port 68, as a PXE ROM's would be.
fn client_socket(ns: &str, device: &str) -> std::net::UdpSocket {
    let path = format!("/var/run/netns/{ns}");
    let device = device.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(device.as_bytes())).unwrap();
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::net::UdpSocket::from(s)
    })
    .join()
    .expect("socket thread")
}

fn pxe_message(t: MessageType, mac: [u8; 6], arch: u16) -> Message {
    let mut m = Message::new_with_id(
        0x5eed_0000 | u32::from(arch),
        [0; 4].into(),
        [0; 4].into(),
        [0; 4].into(),
        [0; 4].into(),
        &mac,
    );
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    o.insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
    o.insert(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// Every reply to `xid` that arrives within `limit`.
fn collect(sock: &std::net::UdpSocket, xid: u32, limit: Duration) -> Vec<Message> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n]))
            && m.xid() == xid
        {
            out.push(m);
        }
    }
    out
}

/// The file field as a C string, as firmware reads it.
fn fname(m: &Message) -> String {
    let raw = m.fname().unwrap_or_default();
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn proxy_mode_beside_the_sites_dnsmasq_never_offers_an_address() {
    require(&[
        ("ip", "iproute2"),
        ("dnsmasq", "dnsmasq-base"),
        ("dhclient", "isc-dhcp-client"),
        ("curl", "curl"),
    ]);
    let mut lab = Lab::new(1);
    let (srv, c) = one_segment(&mut lab);
    let site = lab.host("site");
    lab.link(&site, "eth0", 0, Some("10.213.0.2/24"), None);
    let leasefile = lab.path("dnsmasq.leases");
    let lf = format!("--dhcp-leasefile={}", leasefile.display());
    lab.spawn(
        &site,
        "dnsmasq.log",
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--log-dhcp",
            "--log-facility=-",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.213.0.50,10.213.0.60,255.255.255.0,10m",
            "--dhcp-authoritative",
            &lf,
            "--pid-file=",
        ],
    );
    start(&mut lab, &srv, "appliance.log", &["--interface", "eth0"]); // proxy is the default

    // An ordinary client gets its address from the site's server, and nothing from us.
    let a = dhclient(&mut lab, &c, "plain").expect("lease from dnsmasq");
    assert!(
        in_range(a, "10.213.0.50", "10.213.0.60"),
        "{a} is not from dnsmasq's range"
    );

    // A PXE ROM: DISCOVER gets dnsmasq's address offer and our boot offer.
    lab.set_mac(&c, "eth0", "02:00:00:00:03:01");
    let mac = [2, 0, 0, 0, 3, 1];
    let sock = client_socket(&c, "eth0");
    let discover = pxe_message(MessageType::Discover, mac, 0);
    sock.send_to(&encode(&discover), "255.255.255.255:67")
        .unwrap();
    let offers = collect(&sock, discover.xid(), Duration::from_secs(3));
    let ours: Vec<_> = offers
        .iter()
        .filter(|m| server_id(m) == Some(SERVER_IP.parse().unwrap()))
        .collect();
    let site_offer = offers
        .iter()
        .find(|m| server_id(m) == Some("10.213.0.2".parse().unwrap()))
        .expect("dnsmasq offers an address");
    assert_eq!(ours.len(), 1, "one proxy offer: {offers:?}");
    let proxy = ours[0];
    assert_eq!(
        proxy.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "a proxy never offers an address"
    );
    assert_eq!(fname(proxy), "undionly.kpxe");
    assert_eq!(proxy.siaddr(), SERVER_IP.parse::<Ipv4Addr>().unwrap());
    assert!(in_range(site_offer.yiaddr(), "10.213.0.50", "10.213.0.60"));

    // With the site's address, the ROM asks the boot server on port 4011 (here as UEFI).
    let addr = site_offer.yiaddr();
    common::Lab::cmd(&lab, &c, "ip")
        .args(["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
        .status()
        .unwrap();
    let mut boot = pxe_message(MessageType::Request, mac, 7);
    boot.set_ciaddr(addr);
    boot.set_flags(Flags::default());
    sock.send_to(&encode(&boot), format!("{SERVER_IP}:4011"))
        .unwrap();
    let acks = collect(&sock, boot.xid(), Duration::from_secs(2));
    let ack = acks.first().expect("boot server ACK on 4011");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(fname(ack), "ipxe.efi");
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);

    let metrics = lab.http_get(&srv, "http://127.0.0.1:8080/metrics").unwrap();
    assert!(
        metrics.contains("dhcp_dropped_total{reason=\"not_netboot\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("dhcp_sent_total{type=\"nak\"}"),
        "{metrics}"
    );
    assert!(
        lab.http_get(&srv, "http://127.0.0.1:8080/api/v1/leases")
            .unwrap()
            .trim()
            == "[]"
    );
}

#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn dhcrelay_brings_a_second_subnet_its_own_pool() {
    require(&[
        ("ip", "iproute2"),
        ("dhcrelay", "isc-dhcp-relay"),
        ("dhclient", "isc-dhcp-client"),
    ]);
    let mut lab = Lab::new(2);
    let srv = lab.host("srv");
    lab.link(&srv, "eth0", 0, Some("10.213.0.1/24"), None);
    common::Lab::cmd(&lab, &srv, "ip")
        .args(["route", "add", "10.213.1.0/24", "via", "10.213.0.254"])
        .status()
        .unwrap();
    let router = lab.host("rtr");
    lab.link(&router, "eth0", 0, Some("10.213.0.254/24"), None);
    lab.link(&router, "eth1", 1, Some("10.213.1.1/24"), None);
    let c = lab.host("c1");
    lab.link(&c, "eth0", 1, None, Some("02:00:00:00:04:01"));
    let config = lab.path("provisioner.toml");
    std::fs::write(
        &config,
        r#"
interfaces = ["eth0"]
[dhcp]
mode = "full"
[[dhcp.subnets]]
cidr = "10.213.0.0/24"
range = "10.213.0.100-10.213.0.150"
[[dhcp.subnets]]
cidr = "10.213.1.0/24"
range = "10.213.1.100-10.213.1.150"
router = "10.213.1.1"
lease_time = 900
"#,
    )
    .unwrap();
    start(
        &mut lab,
        &srv,
        "appliance.log",
        &["--config", config.to_str().unwrap()],
    );
    lab.spawn(
        &router,
        "dhcrelay.log",
        "dhcrelay",
        &[
            "-4", "-d", "--no-pid", "-id", "eth1", "-iu", "eth0", SERVER_IP,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = dhclient(&mut lab, &c, "relayed");
    let Some(ip) = got else {
        panic!(
            "no lease through the relay:\n{}\n{}",
            lab.log("dhcrelay.log"),
            lab.log("appliance.log")
        );
    };
    assert!(
        in_range(ip, "10.213.1.100", "10.213.1.150"),
        "{ip} is not from the relayed subnet's pool"
    );
}

/// One malformed packet must not stop DHCP for the site. From a client on the provisioning
/// segment: hardware lengths 0, 16, 17, 77 and 255, every option with a length that runs past
/// the packet, and datagrams of 0, 1, 239, 240 and 1500 bytes, broadcast to a running
/// full-mode appliance. Then dhclient still gets a lease, and a real PXE client (SeaBIOS with
/// the NIC's iPXE ROM under QEMU) boots from the appliance into the node image and calls back.
#[test]
#[cfg_attr(
    not(lab),
    ignore = "lab test: needs root (network namespaces, taps, QEMU) and the packages .ci/run installs"
)]
fn malformed_packets_do_not_stop_dhcp_for_the_site() {
    require(&[
        ("ip", "iproute2"),
        ("dhclient", "isc-dhcp-client"),
        ("curl", "curl"),
        ("qemu-system-x86_64", "qemu-system-x86 ipxe-qemu"),
    ]);
    let (kernel, initrd) = common::node_image();
    let fw = common::firmware_dir();
    let mut lab = Lab::new(1);
    let (srv, c) = one_segment(&mut lab);
    let (kernel, initrd, fw) = (
        kernel.display().to_string(),
        initrd.display().to_string(),
        fw.display().to_string(),
    );
    start(
        &mut lab,
        &srv,
        "appliance.log",
        &[
            "--interface",
            "eth0",
            "--dhcp",
            "full",
            "--dhcp-range",
            "10.213.0.100-10.213.0.150",
            "--firmware-dir",
            &fw,
            "--discovery-kernel",
            &kernel,
            "--discovery-initrd",
            &initrd,
            "--discovery-cmdline",
            "console=ttyS0",
        ],
    );
    let sock = client_socket(&c, "eth0");
    let good = encode(&pxe_message(MessageType::Discover, [2, 0, 0, 0, 9, 9], 0));
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    for hlen in [0u8, 16, 17, 77, 255] {
        let mut p = good.clone();
        p[2] = hlen;
        hostile.push(p);
    }
    for code in 1..=254u8 {
        let mut p = good[..240].to_vec();
        p.extend_from_slice(&[53, 1, 1, code, 255, 0, 0]);
        hostile.push(p);
    }
    for len in [0usize, 1, 239, 240, 1500] {
        let mut p = good.clone();
        p.resize(len, 0);
        hostile.push(p);
    }
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    for p in &hostile {
        sock.send_to(p, to).expect("send");
    }
    drop(sock);
    std::thread::sleep(Duration::from_secs(1));
    let health = lab.http_get(&srv, "http://127.0.0.1:8080/healthz");
    assert!(
        health.as_deref().is_some_and(|h| h.contains("\"ok\"")),
        "{health:?}\n{}",
        lab.log("appliance.log")
    );

    // A client still gets a lease.
    let ip = dhclient(&mut lab, &c, "after").expect("a lease after the malformed packets");
    assert!(in_range(ip, "10.213.0.100", "10.213.0.150"), "{ip}");

    // And a real PXE client boots.
    let tap = lab.tap(0);
    let console = lab.path("node.console");
    let switch = lab.switch().to_string();
    lab.spawn(
        &switch,
        "qemu.log",
        "qemu-system-x86_64",
        &[
            "-accel",
            "tcg",
            "-no-reboot",
            "-m",
            "512",
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            &format!("file:{}", console.display()),
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:99:00:42",
            "-boot",
            "n",
        ],
    );
    let booted = wait_for(Duration::from_secs(240), || {
        read(&console)
            .contains("PROVISIONER-NODE callback ok")
            .then_some(())
    });
    let log = lab.log("appliance.log");
    assert!(
        booted.is_some(),
        "the PXE client did not boot:\n{}\n{log}",
        read(&console)
    );
    assert!(!log.contains("panicked"), "{log}");
    let metrics = lab.http_get(&srv, "http://127.0.0.1:8080/metrics").unwrap();
    for reason in ["bad_hlen", "option_overrun", "truncated"] {
        assert!(
            metrics.contains(&format!("dhcp_dropped_total{{reason=\"{reason}\"}}")),
            "{reason}:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("part_restarts_total{part=\"dhcp\"}"),
        "nothing had to be restarted: {metrics}"
    );
}
