//! The DHCP server over real sockets on loopback, no root: a relayed DORA whose ACK comes
//! only after the lease is in the SQLite store, and hostile packets that are counted and
//! dropped while the server keeps serving and loses nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{Decodable, Decoder, DhcpOption, Encodable, Encoder, Message, MessageType};
use provisioner::boot::{BootMap, BootServer};
use provisioner::config::DhcpMode;
use provisioner::dhcp::leases::{LeaseTable, Subnet};
use provisioner::dhcp::serve::Listener;
use provisioner::dhcp::{Interface, LocalBoot, Port, ReplyPorts, Server};
use provisioner::events::{Events, Neighbors};
use provisioner::metrics::Metrics;
use provisioner::store;
use provisioner::store::SyncMode;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const LOOP: Ipv4Addr = Ipv4Addr::LOCALHOST;

struct Running {
    server: SocketAddr,
    client: UdpSocket,
    metrics: Arc<Metrics>,
    pool: store::Pool,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// The server of these tests, replying to `client_port`.
fn server(client_port: u16, boots_locally: LocalBoot) -> Server {
    let subnet = Subnet {
        cidr: "127.0.0.0/24".parse().unwrap(),
        range: "127.0.0.100-127.0.0.199".parse().unwrap(),
        router: None,
        dns: vec![],
        domain: None,
        lease_time: 600,
    };
    Server {
        mode: DhcpMode::Full,
        interfaces: vec![Interface {
            name: "lo".into(),
            net: "127.0.0.1/8".parse().unwrap(),
        }],
        table: LeaseTable::new(vec![subnet], &[], vec![], [LOOP]),
        boot: BootMap::default(),
        boot_server: BootServer {
            advertise: LOOP,
            http_port: 8080,
        },
        // The "relay" (giaddr 127.0.0.1) is this test's socket.
        ports: ReplyPorts {
            client: client_port,
            relay: client_port,
        },
        boots_locally,
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let pool = store::open(dir.path(), SyncMode::Full).await.unwrap();
    let socket = UdpSocket::bind((LOOP, 0)).await.unwrap();
    let server_addr = socket.local_addr().unwrap();
    let client = UdpSocket::bind((LOOP, 0)).await.unwrap();
    let client_port = client.local_addr().unwrap().port();
    let server = server(client_port, LocalBoot::never());
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let listeners = vec![Listener {
        socket: Arc::new(socket),
        iface: 0,
        port: Port::Dhcp,
    }];
    let journal = store::open_journal(dir.path()).await.unwrap();
    let (events, writer) = Events::new(journal, Neighbors::default(), 1000);
    tokio::spawn(writer);
    let task = tokio::spawn(provisioner::dhcp::serve(
        server,
        listeners,
        pool.clone(),
        metrics.clone(),
        events,
        shutdown.clone(),
    ));
    Running {
        server: server_addr,
        client,
        metrics,
        pool,
        shutdown,
        task,
        _dir: dir,
    }
}

fn relayed(t: MessageType, mac: u8) -> Message {
    let mut m = Message::new_with_id(
        0xabc0 + u32::from(mac),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        LOOP,
        &[2, 0, 0, 0, 0, mac],
    );
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

async fn exchange(r: &Running, m: &Message) -> Option<Message> {
    r.client.send_to(&encode(m), r.server).await.unwrap();
    let mut buf = [0u8; 1500];
    let got = tokio::time::timeout(Duration::from_secs(2), r.client.recv_from(&mut buf)).await;
    let (n, _) = got.ok()?.ok()?;
    Some(Message::decode(&mut Decoder::new(&buf[..n])).unwrap())
}

async fn dora(r: &Running, mac: u8) -> Ipv4Addr {
    let offer = exchange(r, &relayed(MessageType::Discover, mac))
        .await
        .expect("offer");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let mut req = relayed(MessageType::Request, mac);
    req.opts_mut().insert(DhcpOption::ServerIdentifier(LOOP));
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    let ack = exchange(r, &req).await.expect("ack");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), offer.yiaddr());
    ack.yiaddr()
}

#[tokio::test]
async fn an_ack_arrives_only_after_its_lease_is_stored() {
    let r = start().await;
    for mac in 1..=20u8 {
        let ip = dora(&r, mac).await;
        // The reply is in hand: the lease must already be in the store, not on its way.
        let rows = store::leases::all(&r.pool).await.unwrap();
        let row = rows
            .iter()
            .find(|l| l.mac.0 == [2, 0, 0, 0, 0, mac])
            .expect("stored before the ACK");
        assert_eq!(row.ip, ip);
    }
    r.shutdown.cancel();
    r.task.await.unwrap();
}

#[tokio::test]
async fn hostile_packets_are_counted_and_dropped_and_the_server_keeps_its_leases() {
    let r = start().await;
    let mine = dora(&r, 1).await;
    let good = encode(&relayed(MessageType::Discover, 2));
    let mut overrun = good.clone();
    overrun[241] = 250; // option 53 claims to run far past the end
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    let mut junk = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..600 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let hostile: Vec<Vec<u8>> = vec![
        vec![],
        good[..100].to_vec(),
        good[..240].to_vec(),
        overrun,
        reply_op,
        vec![0xff; 5000],
        junk,
    ];
    for h in &hostile {
        r.client.send_to(h, r.server).await.unwrap();
    }
    // A flood of random MACs asking for the address someone holds.
    for mac in 100..200u8 {
        let mut d = relayed(MessageType::Request, mac);
        d.opts_mut().insert(DhcpOption::ServerIdentifier(LOOP));
        d.opts_mut().insert(DhcpOption::RequestedIpAddress(mine));
        let nak = exchange(&r, &d).await.expect("an answer");
        assert_eq!(
            nak.opts().msg_type(),
            Some(MessageType::Nak),
            "{mine} is taken"
        );
    }
    // Still serving, and the lease stands.
    assert_ne!(dora(&r, 3).await, mine);
    let rows = store::leases::all(&r.pool).await.unwrap();
    assert!(
        rows.iter()
            .any(|l| l.ip == mine && l.mac.0 == [2, 0, 0, 0, 0, 1])
    );
    assert!(rows.iter().all(|l| l.mac.0[5] < 100));

    let text = r.metrics.render(&[]).expect("metrics text");
    for reason in ["truncated", "option_overrun", "bad_op", "oversized"] {
        assert!(
            text.contains(&format!("dhcp_dropped_total{{reason=\"{reason}\"}}")),
            "{reason} not counted:\n{text}"
        );
    }
    assert!(text.contains("dhcp_sent_total{type=\"nak\"} 100"), "{text}");
    r.shutdown.cancel();
    r.task.await.unwrap();
}

#[tokio::test]
async fn a_full_pool_offers_nothing_and_says_so_in_a_metric() {
    let r = start().await;
    for mac in 1..=100u8 {
        dora(&r, mac).await;
    }
    assert!(
        exchange(&r, &relayed(MessageType::Discover, 101))
            .await
            .is_none()
    );
    let text = r.metrics.render(&[]).expect("metrics text");
    assert!(
        text.contains("dhcp_pool_exhausted_total{subnet=\"127.0.0.0/24\"} 1"),
        "{text}"
    );
    r.shutdown.cancel();
    r.task.await.unwrap();
}

#[tokio::test]
async fn a_store_that_refuses_writes_sends_no_ack_and_loses_no_lease() {
    let r = start().await;
    let mine = dora(&r, 1).await;
    // The store starts refusing writes under the running server, as a full disk would.
    let mut conn = r.pool.acquire().await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON leases BEGIN SELECT RAISE(FAIL, 'disk full'); END",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    let offer = exchange(&r, &relayed(MessageType::Discover, 2))
        .await
        .expect("offers need no write");
    let mut req = relayed(MessageType::Request, 2);
    req.opts_mut().insert(DhcpOption::ServerIdentifier(LOOP));
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    assert!(
        exchange(&r, &req).await.is_none(),
        "no ACK without a stored lease"
    );
    assert!(
        r.metrics
            .render(&[])
            .unwrap()
            .contains("dhcp_store_errors_total 1")
    );
    let rows = store::leases::all(&r.pool).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].ip, mine);
    // Once the store accepts writes again, the same client is served.
    let mut conn = r.pool.acquire().await.unwrap();
    sqlx::query("DROP TRIGGER refuse")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let ack = exchange(&r, &req)
        .await
        .expect("ack once the store is back");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    r.shutdown.cancel();
    r.task.await.unwrap();
}

/// What the issue "one malformed DHCP packet stops DHCP for the whole site" sent, and more:
/// hardware lengths past chaddr, too many hops, every option running past the end, and
/// datagrams of the sizes around the header. The server answers a real exchange after all of
/// them, keeps its leases, and counts each drop.
#[tokio::test]
async fn malformed_headers_and_options_never_stop_the_server() {
    let r = start().await;
    let mine = dora(&r, 1).await;
    let good = encode(&relayed(MessageType::Discover, 2));
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    for hlen in [0u8, 16, 17, 77, 255] {
        let mut p = good.clone();
        p[2] = hlen;
        hostile.push(p);
    }
    let mut hops = good.clone();
    hops[3] = 200;
    hostile.push(hops);
    // Every option code, with a length that runs past the end of the datagram.
    for code in 1..=254u8 {
        let mut p = good[..240].to_vec();
        p.extend_from_slice(&[53, 1, 1, code, 200, 1, 2, 3]);
        hostile.push(p);
    }
    for len in [0usize, 1, 239, 240, 1500] {
        let mut p = good.clone();
        p.resize(len.max(good.len()).min(1500), 0);
        p.truncate(len);
        hostile.push(p);
    }
    for h in &hostile {
        r.client.send_to(h, r.server).await.unwrap();
    }
    // The well-formed ones among them (hlen 0, the padded 1500 bytes) were answered: read
    // those answers off before the next exchange.
    let mut buf = [0u8; 1500];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), r.client.recv_from(&mut buf)).await
    {}
    // Still serving, and the lease stands.
    let next = dora(&r, 3).await;
    assert_ne!(next, mine);
    let rows = store::leases::all(&r.pool).await.unwrap();
    assert!(
        rows.iter()
            .any(|l| l.ip == mine && l.mac.0 == [2, 0, 0, 0, 0, 1])
    );
    let text = r.metrics.render(&[]).expect("metrics text");
    for reason in [
        "bad_hlen",
        "too_many_hops",
        "option_overrun",
        "truncated",
        "no_end",
    ] {
        assert!(
            text.contains(&format!("dhcp_dropped_total{{reason=\"{reason}\"}}")),
            "{reason} not counted:\n{text}"
        );
    }
    assert!(!r.task.is_finished(), "the server task is still running");
    r.shutdown.cancel();
    r.task.await.unwrap();
}

/// A fault inside the DHCP server (here a panic injected through the lifecycle's callback,
/// for one MAC) ends that server: its supervisor counts it, says so in the health the
/// appliance reports, and starts it again on fresh sockets from the store, where every
/// acknowledged lease is. Other clients are then served, and no lease is lost.
#[tokio::test]
async fn a_panic_in_the_dhcp_server_is_survived_by_a_restart_from_the_store() {
    use provisioner::supervise::{Health, supervise};
    let dir = tempfile::tempdir().unwrap();
    let pool = store::open(dir.path(), SyncMode::Full).await.unwrap();
    let client = UdpSocket::bind((LOOP, 0)).await.unwrap();
    let client_port = client.local_addr().unwrap().port();
    // Bound once here for its port; each run of the server binds it again.
    let port = std::net::UdpSocket::bind((LOOP, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server_addr = SocketAddr::from((LOOP, port));
    let metrics = Arc::new(Metrics::default());
    let health = Health::new(metrics.clone());
    let shutdown = CancellationToken::new();
    let journal = store::open_journal(dir.path()).await.unwrap();
    let (events, writer) = Events::new(journal, Neighbors::default(), 1000);
    tokio::spawn(writer);
    let sup = tokio::spawn(supervise("dhcp", health.clone(), shutdown.clone(), {
        let (pool, metrics, events, token) = (
            pool.clone(),
            metrics.clone(),
            events.clone(),
            shutdown.clone(),
        );
        move |ready| {
            let (pool, metrics, events, token) =
                (pool.clone(), metrics.clone(), events.clone(), token.clone());
            async move {
                let poison = LocalBoot::new(|mac| {
                    assert!(
                        mac.0 != [2, 0, 0, 0, 0, 0xee],
                        "injected fault for 02:00:00:00:00:ee"
                    );
                    false
                });
                let mut s = server(client_port, poison);
                let leases = store::leases::all(&pool).await.map_err(|e| e.to_string())?;
                s.table = LeaseTable::new(s.table.subnets().to_vec(), &[], leases, [LOOP]);
                let socket = UdpSocket::bind(server_addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let listeners = vec![Listener {
                    socket: Arc::new(socket),
                    iface: 0,
                    port: Port::Dhcp,
                }];
                ready.serving();
                provisioner::dhcp::serve(s, listeners, pool, metrics, events, token).await;
                Ok(())
            }
        }
    }));
    let r = Running {
        server: server_addr,
        client,
        metrics: metrics.clone(),
        pool: pool.clone(),
        shutdown: shutdown.clone(),
        task: tokio::spawn(async {}),
        _dir: dir,
    };
    let mine = wait_serving(&r, 1).await;
    // A PXE client with the poisoned MAC: the decision calls the lifecycle, which panics.
    let mut pxe = relayed(MessageType::Discover, 0xee);
    pxe.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    pxe.opts_mut().insert(DhcpOption::ClientSystemArchitecture(
        dhcproto::v4::Architecture(0),
    ));
    r.client.send_to(&encode(&pxe), r.server).await.unwrap();
    // Served again after the restart, with the lease of before the fault still held.
    let next = wait_serving(&r, 2).await;
    assert_ne!(next, mine);
    let text = metrics.render(&[]).unwrap();
    assert!(
        text.contains("part_restarts_total{part=\"dhcp\"} 1"),
        "{text}"
    );
    assert!(text.contains("part_up{part=\"dhcp\"} 1"), "{text}");
    assert!(health.down().is_empty(), "{:?}", health.down());
    let rows = store::leases::all(&pool).await.unwrap();
    assert!(
        rows.iter()
            .any(|l| l.ip == mine && l.mac.0 == [2, 0, 0, 0, 0, 1])
    );
    shutdown.cancel();
    sup.await.unwrap();
}

/// A DORA for `mac`, retried while the server is (re)starting; bounded.
async fn wait_serving(r: &Running, mac: u8) -> Ipv4Addr {
    for _ in 0..50 {
        if let Some(offer) = exchange(r, &relayed(MessageType::Discover, mac)).await {
            let mut req = relayed(MessageType::Request, mac);
            req.opts_mut().insert(DhcpOption::ServerIdentifier(LOOP));
            req.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
            if let Some(ack) = exchange(r, &req).await
                && ack.opts().msg_type() == Some(MessageType::Ack)
            {
                return ack.yiaddr();
            }
        }
    }
    panic!("the DHCP server did not answer {mac} again");
}
