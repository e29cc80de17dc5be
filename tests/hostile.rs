//! The appliance on a hostile provisioning network, on loopback: each class of attack an
//! ordinary tool can make (curl, tftp-hpa, raw sockets from other loopback addresses, which
//! stand for other peers) against the real appliance, and what must survive it. The DHCP
//! packet attacks are in `dhcp_socket.rs` and, against a running full-mode appliance with real
//! clients, in `lab_dhcp.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::site::{Site, fetch, inspect, report, site_with};
use common::{Running, require_tools, tftp_appliance, tftp_request};

const PLAN: &str = "site,row,rack,u,serial,mac,sku
lab,r1,a01,10,,52:54:00:99:00:01,qemu-lab
lab,r1,a01,12,LAB-SN-2,,qemu-lab
lab,r1,a01,14,LAB-SN-3,52:54:00:99:00:03,qemu-lab
";

/// The appliance with `limits` (TOML lines of `[limits]`) in a config file.
fn site_limited(limits: &str) -> (Site, tempfile::TempDir) {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("provisioner.toml");
    std::fs::write(&path, format!("[limits]\n{limits}\n")).unwrap();
    let path = path.display().to_string();
    (site_with(PLAN, |_| {}, &["--config", &path]), conf)
}

/// A peer other than the appliance's own tools: curl from another loopback address.
fn from(peer: &str) -> [&str; 2] {
    ["--interface", peer]
}

fn node(base: &str, mac: &str) -> serde_json::Value {
    let page = fetch(&format!("{base}/api/v1/nodes/{mac}"), &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    serde_json::from_str(&page.body).unwrap()
}

fn has_token(script: &str) -> bool {
    script.contains("provisioner.token=")
}

/// A TCP connection to `to` from the loopback address `src`.
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(s.into())
}

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// Issue 2: a node's boot, and the token in its script, belong to the requester of that
/// boot. Another peer asking for the same MAC gets no token and supersedes nothing, so the
/// node's own report is taken.
#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn another_peer_cannot_take_a_nodes_agent_token() {
    require_tools(&[("curl", "curl")]);
    let s = site_with(PLAN, |_| {}, &[]);
    let victim = "52:54:00:99:00:01";
    let url = format!("{}/boot/52-54-00-99-00-01.ipxe", s.base);
    let own = fetch(&url, &from("127.0.0.1"));
    assert!(has_token(&own.body), "{}", own.body);
    let stolen = fetch(&url, &from("127.0.0.2"));
    assert_eq!(stolen.status, 200, "an iPXE client always gets a script");
    assert!(
        !has_token(&stolen.body),
        "a token went to another peer:\n{}",
        stolen.body
    );
    assert!(
        stolen.body.contains("is being served to 127.0.0.1"),
        "{}",
        stolen.body
    );
    // The node's own report, on the token of its own boot, is taken.
    let token = own
        .body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("provisioner.token="))
        .unwrap();
    let mut facts = provisioner_protocol::Facts::default();
    facts.memory.total_bytes = 2 << 30;
    let reply = report(&s.base, victim, token, &facts);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let n = node(&s.base, victim);
    assert_eq!(n["state"]["state"], "inspected", "{n:#}");
    assert_eq!(n["slot"], "lab/r1/a01/U10");
    let refused = n["refusals"].as_array().unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r["peer"] == "127.0.0.2" && r["path"] == "boot script"),
        "the attempt is on the node's record: {n:#}"
    );
}

/// Issue 3: a slot is never decided first come, first served. A node with a made-up MAC that
/// reports a slot's serial, where the plan names the slot's MAC, fails as a conflict and the
/// real server takes its slot; a second claim on a serial-only slot stops both claimants for
/// an operator.
#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn a_second_claim_on_a_slot_goes_to_an_operator() {
    require_tools(&[("curl", "curl")]);
    let s = site_with(PLAN, |_| {}, &[]);
    let impostor = "02:00:00:00:00:66";
    assert_eq!(inspect(&s.base, impostor, "LAB-SN-3"), "failed");
    let reason = node(&s.base, impostor)["state"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.starts_with("conflict: "), "{reason}");
    assert!(
        reason.contains("the plan gives to MAC 52:54:00:99:00:03"),
        "{reason}"
    );
    assert_eq!(
        inspect(&s.base, "52:54:00:99:00:03", "LAB-SN-3"),
        "inspected"
    );
    assert_eq!(node(&s.base, "52:54:00:99:00:03")["slot"], "lab/r1/a01/U14");

    // A serial-only slot: the first claimant is matched, a second stops both.
    let first = "52:54:00:99:00:02";
    assert_eq!(inspect(&s.base, first, "LAB-SN-2"), "inspected");
    let second = "02:00:00:00:00:77";
    assert_eq!(inspect(&s.base, second, "LAB-SN-2"), "failed");
    let n = node(&s.base, second);
    let reason = n["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("slot lab/r1/a01/U12 is held by node 52:54:00:99:00:02"),
        "{reason}"
    );
    let holder = node(&s.base, first);
    assert_eq!(holder["state"]["state"], "held", "{holder:#}");
    let last = holder["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["cause"].as_str().unwrap().starts_with("conflict: ") && last["actor"] == "appliance",
        "{last:#}"
    );
    assert_eq!(holder["slot"], "lab/r1/a01/U12", "nobody lost the slot");
}

/// Issue 4: what a node reported reaches its boot script only as words iPXE echoes. A serial
/// written as iPXE commands is in the failure reason, and the script that says it holds no
/// separator, condition or setting.
#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn reported_text_never_becomes_ipxe_commands() {
    require_tools(&[("curl", "curl")]);
    let s = site_with(PLAN, |_| {}, &[]);
    let mac = "02:00:00:00:00:55";
    let serial = "X ; chain http://127.0.0.1:9/pwn.ipxe ; echo && shell || ${net0/mac}";
    assert_eq!(inspect(&s.base, mac, serial), "failed");
    let reason = node(&s.base, mac)["state"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("pwn.ipxe"),
        "the reason quotes it: {reason}"
    );
    let script = fetch(&format!("{}/boot/02-00-00-00-00-55.ipxe", s.base), &[]).body;
    assert!(script.contains("pwn.ipxe"), "the reason is said: {script}");
    for bad in [";", "&", "|", "${net0/mac}\n", "\"", "'"] {
        let said: Vec<&str> = script.lines().filter(|l| l.starts_with("echo")).collect();
        assert!(
            said.iter().all(|l| !l.contains(bad)),
            "`{bad}` reached the script:\n{script}"
        );
    }
    for line in script.lines() {
        assert!(
            [
                "#",
                "echo Provisioner: ",
                "sleep ",
                "chain --replace --autofree http://"
            ]
            .iter()
            .any(|p| line.starts_with(p)),
            "a line the template does not have: {line:?}\n{script}"
        );
    }
}

/// Issue 5: slow clients do not take HTTP offline. Thousands of connections from many peers
/// that each send one byte: each peer holds a bounded number, the oldest that never sent a
/// whole request give way to new ones, and each is closed at the head deadline; meanwhile
/// `/healthz` and a node's boot script are answered.
#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn slow_clients_do_not_take_http_offline() {
    require_tools(&[("curl", "curl")]);
    // The test holds its connections open: as many as this process may.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    let attempts = (hard.saturating_sub(2_000) as usize).clamp(1_000, 20_000);
    let (s, _conf) = site_limited(
        "http_head_timeout = \"2s\"\nhttp_connections = 512\nhttp_connections_per_peer = 64",
    );
    let to = addr(&s.base);
    let peers = 40;
    let mut slow = Vec::with_capacity(attempts);
    // One peer alone: no more than its share.
    for _ in 0..200 {
        if let Ok(mut c) = connect_from(Ipv4Addr::new(127, 0, 1, 250), to) {
            let _ = c.write_all(b"G");
            slow.push(c);
        }
    }
    // Then many peers, more than all the slots' worth.
    for i in 0..attempts {
        let src = Ipv4Addr::new(127, 0, 1, 1 + (i % peers) as u8);
        if let Ok(mut c) = connect_from(src, to) {
            let _ = c.write_all(b"G");
            slow.push(c);
        }
    }
    assert!(slow.len() > attempts / 2, "{} connected", slow.len());
    // While they hold on, the appliance answers.
    let health = fetch(&format!("{}/healthz", s.base), &[]);
    assert_eq!(health.status, 200, "{}", health.body);
    let script = fetch(&format!("{}/boot/52-54-00-99-00-01.ipxe", s.base), &[]);
    assert_eq!(script.status, 200);
    assert!(has_token(&script.body), "{}", script.body);
    // Every slow one is closed by the deadline (2 s), or was at once: none is left open.
    std::thread::sleep(Duration::from_secs(4));
    let mut open = 0;
    for c in slow.iter_mut().step_by(97) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        if matches!(c.read(&mut buf), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        {
            open += 1;
        }
    }
    assert_eq!(open, 0, "connections still open past the head deadline");
    drop(slow);
    let metrics = fetch(&format!("{}/metrics", s.base), &[]).body;
    for reason in ["per_peer", "evicted_without_request"] {
        assert!(
            metrics.contains(&format!(
                "limited_total{{part=\"http\",reason=\"{reason}\"}}"
            )),
            "{reason}:\n{metrics}"
        );
    }
}

/// The head deadline holds on the sendfile path too: a request head sent a byte at a time is
/// cut off at the deadline, however steadily the bytes come.
#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_deadline() {
    let (s, _conf) = site_limited("http_head_timeout = \"2s\"");
    let mut c = connect_from(Ipv4Addr::LOCALHOST, addr(&s.base)).unwrap();
    c.write_all(b"GET /firmware/undionly.kpxe HTTP/1.1\r\n")
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    // One byte every 300 ms: each read is quick, the head never ends.
    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(300));
        if c.write_all(b"X").is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 40,
        "still taking a head after {sent} bytes and {:?}",
        started.elapsed()
    );
}

/// Issue 7, on the sendfile path: two `Content-Length`s are refused, and what followed them
/// is never run as a second request.
#[test]
fn a_smuggled_request_is_refused_not_run() {
    let s = site_with(PLAN, |_| {}, &[]);
    let mut c = connect_from(Ipv4Addr::LOCALHOST, addr(&s.base)).unwrap();
    let smuggled = "GET /api/v1/nodes HTTP/1.1\r\nHost: a\r\n\r\n";
    write!(
        c,
        "GET /firmware/undionly.kpxe HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert_eq!(
        got.matches("HTTP/1.1 ").count(),
        1,
        "one answer, then closed: {got}"
    );
    // A head larger than hyper's buffer (a 300 KB Range) is refused, not stored.
    let mut c = connect_from(Ipv4Addr::LOCALHOST, addr(&s.base)).unwrap();
    let range = format!("bytes={}", "0-1,".repeat(75_000));
    let _ = write!(
        c,
        "GET /boot/52-54-00-99-00-01.ipxe HTTP/1.1\r\nHost: a\r\nRange: {range}\r\n\r\n"
    );
    let mut got = String::new();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.read_to_string(&mut got);
    assert!(
        got.starts_with("HTTP/1.1 431 "),
        "{}",
        &got[..got.len().min(200)]
    );
}

/// Issue 6: TFTP slots do not run out. A client may not make the server wait minutes per
/// packet (`timeout=255` is not accepted), one address holds a bounded number of transfers,
/// and more than all the slots' worth of requests that never acknowledge anything give way
/// to a real client, which gets its file.
#[test]
#[cfg_attr(
    not(tool = "tftp"),
    ignore = "needs tftp (the packages .ci/run installs)"
)]
fn tftp_requests_that_never_acknowledge_do_not_keep_out_a_real_client() {
    require_tools(&[("tftp", "tftp-hpa")]);
    let (app, server, content, dir) = tftp_appliance(100_000);
    // The OACK leaves out a timeout of 255 s; it keeps the other options.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .send_to(
            &tftp_request(1, "file.bin", &[("timeout", "255"), ("tsize", "0")]),
            server,
        )
        .unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = probe.recv_from(&mut buf).expect("an OACK");
    assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), 6, "OACK");
    let oack = String::from_utf8_lossy(&buf[2..n]).to_string();
    assert!(
        oack.contains("tsize") && !oack.contains("timeout"),
        "{oack:?}"
    );

    // One address: a bounded number of transfers, then "busy".
    let one: Vec<UdpSocket> = (0..12)
        .map(|_| UdpSocket::bind("127.0.0.3:0").unwrap())
        .collect();
    for s in &one {
        s.send_to(&tftp_request(1, "file.bin", &[]), server)
            .unwrap();
    }
    let mut busy = 0;
    for s in &one {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf)
            && u16::from_be_bytes([buf[0], buf[1]]) == 5
            && String::from_utf8_lossy(&buf[4..n]).contains("busy")
        {
            busy += 1;
        }
    }
    assert_eq!(busy, 12 - 8, "8 transfers per client address");

    // 1,100 requests from many addresses that never acknowledge anything: more than the
    // 1,024 slots.
    let flood: Vec<UdpSocket> = (0..1_100)
        .map(|i| UdpSocket::bind((Ipv4Addr::new(127, 0, 2, 1 + (i % 200) as u8), 0)).unwrap())
        .collect();
    for (i, s) in flood.iter().enumerate() {
        s.send_to(&tftp_request(1, "file.bin", &[("timeout", "255")]), server)
            .unwrap();
        if i % 50 == 49 {
            // Paced, as many clients are: a burst past the socket's buffer is dropped by the
            // kernel and never reaches the server at all.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A real BIOS-style client (tftp-hpa, 512-byte blocks) gets its file all the same.
    let out = dir.path().join("got.bin");
    let got = std::process::Command::new("timeout")
        .args(["30", "tftp", "127.0.0.1", &server.port().to_string()])
        .args(["-m", "binary", "-c", "get", "file.bin"])
        .arg(&out)
        .output()
        .expect("run tftp");
    assert!(
        got.status.success() && std::fs::read(&out).unwrap_or_default() == content,
        "tftp: {}{}",
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&got.stderr)
    );
    drop(flood);
    let metrics = fetch(&format!("http://{}/metrics", http_of(&app)), &[]).body;
    for reason in ["per_client", "evicted_unacknowledged"] {
        assert!(
            metrics.contains(&format!(
                "limited_total{{part=\"tftp\",reason=\"{reason}\"}}"
            )),
            "{reason}:\n{metrics}"
        );
    }
}

fn http_of(app: &Running) -> String {
    app.seen
        .iter()
        .find(|l| l.contains("HTTP listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap_or("").to_string())
        .expect("the HTTP address")
}

/// Issue 7: requests cannot grow the store without bound. New nodes from a peer the network
/// cannot vouch for are rate-limited (and say so in the script, the log and the metrics);
/// other peers still boot theirs.
#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn boot_requests_for_made_up_macs_are_rate_limited() {
    require_tools(&[("curl", "curl")]);
    let (s, _conf) = site_limited("new_nodes_per_peer_per_minute = 5");
    let mut tokens = 0;
    let mut limited = 0;
    for i in 0..40u8 {
        let script = fetch(
            &format!("{}/boot/02-00-00-00-10-{i:02x}.ipxe", s.base),
            &from("127.0.0.2"),
        );
        if has_token(&script.body) {
            tokens += 1;
        } else if script.body.contains("limits.new_nodes_per_peer_per_minute") {
            limited += 1;
        }
    }
    assert_eq!((tokens, limited), (5, 35));
    let list = fetch(&format!("{}/api/v1/nodes", s.base), &[]).body;
    let nodes: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 5, "{nodes:#}");
    // Another peer is not held back by that one.
    let other = fetch(
        &format!("{}/boot/52-54-00-99-00-01.ipxe", s.base),
        &from("127.0.0.3"),
    );
    assert!(has_token(&other.body), "{}", other.body);
    let metrics = fetch(&format!("{}/metrics", s.base), &[]).body;
    assert!(
        metrics.contains("limited_total{part=\"lifecycle\",reason=\"new_nodes_per_peer\"} 35"),
        "{metrics}"
    );
}

/// Issue 7: the live streams are not one pool any peer can fill. A peer holds a few; the
/// anonymous ones together leave a share that only signed-in operators take.
#[test]
fn live_streams_are_bounded_per_peer_and_kept_for_operators() {
    let (s, _conf) = site_limited(
        "live_streams = 12\nlive_streams_for_operators = 3\nlive_streams_per_peer = 3",
    );
    let to = addr(&s.base);
    let open = |src: Ipv4Addr, cookie: &str| -> (u16, TcpStream) {
        let mut c = connect_from(src, to).unwrap();
        write!(c, "GET /events HTTP/1.1\r\nHost: a\r\n{cookie}\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
        (status, c)
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let (st, c) = open(Ipv4Addr::new(127, 0, 0, 2), "");
        assert_eq!(st, 200);
        held.push(c);
    }
    assert_eq!(open(Ipv4Addr::new(127, 0, 0, 2), "").0, 503, "per peer");
    for peer in 3..=4 {
        for _ in 0..3 {
            let (st, c) = open(Ipv4Addr::new(127, 0, 0, peer), "");
            assert_eq!(st, 200);
            held.push(c);
        }
    }
    // Nine anonymous streams: the rest are the operators'.
    assert_eq!(open(Ipv4Addr::new(127, 0, 0, 5), "").0, 503);
    let token = s.cli(&["token", "create", "ops"]);
    let login = fetch(
        &format!("{}/login", s.base),
        &["-D", "-", "--data-urlencode", &format!("token={token}")],
    );
    let cookie = login
        .body
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {}", login.body))
        .to_string();
    let (st, _op) = open(
        Ipv4Addr::new(127, 0, 0, 5),
        &format!("Cookie: {cookie}\r\n"),
    );
    assert_eq!(st, 200, "an operator still gets live pages");
}

/// Issue 7: the checklist's CSV export quotes a field a spreadsheet would run as a formula,
/// and concurrent sign-ins cannot slip past the throttle.
#[test]
#[cfg_attr(
    not(tool = "curl"),
    ignore = "needs curl (the packages .ci/run installs)"
)]
fn csv_fields_are_not_formulas_and_sign_ins_are_counted_before_they_are_checked() {
    require_tools(&[("curl", "curl")]);
    let s = site_with(PLAN, |_| {}, &[]);
    s.cli(&[
        "checklist",
        "start",
        "lab/r1/a01",
        "--type",
        "hgx-b200-air",
        "--by",
        "alice",
    ]);
    let who = "=HYPERLINK(\"http://evil.example/\",\"open\")";
    s.cli(&[
        "checklist",
        "tick",
        "lab/r1/a01",
        "rack-position",
        "--by",
        who,
    ]);
    let csv = fetch(
        &format!("{}/api/v1/racks/lab/r1/a01/checklist?format=csv", s.base),
        &[],
    )
    .body;
    let line = csv
        .lines()
        .find(|l| l.contains("rack-position"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        line.contains("\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"open\"\")\""),
        "{line}"
    );
    assert!(!line.contains(",=HYPERLINK"), "{line}");

    // 200 sign-ins at once with a wrong token, from one peer.
    let url = format!("{}/login", s.base);
    let mut args: Vec<String> = ["-sS", "-Z", "--parallel-max", "200"]
        .map(String::from)
        .to_vec();
    args.extend([
        "-w".into(),
        "%{http_code}\\n".into(),
        "-d".into(),
        "token=wrong".into(),
    ]);
    for _ in 0..200 {
        args.extend([url.clone(), "-o".into(), "/dev/null".into()]);
    }
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout);
    let checked = codes.lines().filter(|c| *c == "401").count();
    let throttled = codes.lines().filter(|c| *c == "429").count();
    assert_eq!(checked + throttled, 200, "{codes}");
    assert!(
        checked <= 10,
        "{checked} wrong tokens were checked, not 10 at most"
    );
}
