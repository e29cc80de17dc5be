//! The socket side of the DHCP server: receive tasks feed one decision loop, which owns the
//! lease table; replies that promise a lease wait for a group commit to the store, so an ACK
//! never leaves before its lease is durable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcproto::v4::{Encodable, Encoder};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::leases::LeaseWrite;
use super::{Ignored, Port, RecvInfo, Reply, Server, type_label, wire};
use crate::events::Events;
use crate::metrics::{DhcpMetrics, SubnetLabel, TypeLabel};
use crate::store::{self, StoreError};
use crate::types::MacAddr;

/// Packets waiting for the decision loop; past this they are dropped and counted.
const QUEUE: usize = 8192;
/// Most replies one store transaction carries.
const MAX_BATCH: usize = 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A socket that fails this many reads in a row is dead.
const MAX_RECV_ERRORS: u32 = 100;
/// A warning that repeats for every packet of a flood is logged once per this window.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Keeps a flood of identical warnings (a drained pool, an unknown subnet) out of the log;
/// the counters still count every packet.
#[derive(Default)]
pub struct Quiet(HashMap<String, Instant>);

impl Quiet {
    fn allow(&mut self, key: String) -> bool {
        let now = Instant::now();
        match self.0.get(&key) {
            Some(last) if now.duration_since(*last) < WARN_EVERY => false,
            _ => {
                if self.0.len() > 1024 {
                    self.0.clear();
                }
                self.0.insert(key, now);
                true
            }
        }
    }
}

/// One socket the server listens on.
#[derive(Debug)]
pub struct Listener {
    pub socket: Arc<UdpSocket>,
    /// Index into `Server::interfaces`.
    pub iface: usize,
    pub port: Port,
}

struct Packet {
    buf: Vec<u8>,
    src: SocketAddr,
    listener: usize,
}

/// Lease writes, and the reply that may leave once they are committed.
struct Pending {
    writes: Vec<LeaseWrite>,
    reply: Option<(Reply, usize)>,
}

/// Serves until `shutdown`; then the writes already decided are committed (and their
/// replies sent) before it returns.
pub async fn serve(
    mut server: Server,
    listeners: Vec<Listener>,
    store: store::Pool,
    metrics: Arc<crate::metrics::Metrics>,
    events: Events,
    shutdown: CancellationToken,
) {
    let listeners = Arc::new(listeners);
    let (pkt_tx, mut pkt_rx) = mpsc::channel::<Packet>(QUEUE);
    let (write_tx, write_rx) = mpsc::channel::<Pending>(QUEUE);
    let (revert_tx, mut revert_rx) = mpsc::unbounded_channel::<Vec<LeaseWrite>>();
    let mut receivers = JoinSet::new();
    for (i, l) in listeners.iter().enumerate() {
        receivers.spawn(receive(
            l.socket.clone(),
            i,
            pkt_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    drop(pkt_tx);
    let writer = tokio::spawn(write_loop(
        write_rx,
        store,
        listeners.clone(),
        metrics.clone(),
        events.clone(),
        revert_tx,
    ));
    let d = &metrics.dhcp;
    d.active_leases
        .set(server.table.active_count(crate::clock::now_s()) as i64);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut quiet = Quiet::default();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(reverts) = revert_rx.recv() => {
                for w in reverts.iter().rev() {
                    server.table.revert(w);
                }
            }
            _ = sweep.tick() => {
                let now = crate::clock::now_s();
                server.table.sweep(now);
                d.active_leases.set(server.table.active_count(now) as i64);
            }
            Some(ended) = receivers.join_next() => {
                // A listener that stops leaves its interface unserved: the whole server stops,
                // and its supervisor starts it again on fresh sockets.
                error!(ended = ?ended.err(), "a DHCP listener stopped; DHCP server stops");
                break;
            }
            pkt = pkt_rx.recv() => {
                let Some(pkt) = pkt else { break };
                let l = &listeners[pkt.listener];
                let dgram = Datagram { buf: &pkt.buf, src: pkt.src, iface: l.iface, port: l.port };
                let decided = process(&mut server, d, &mut quiet, &dgram, crate::clock::now_s());
                match decided {
                    Decided::Nothing => {}
                    Decided::Send(reply) => send(&l.socket, &reply, d, &events).await,
                    Decided::Commit { writes, reply } => {
                        let pending = Pending { writes, reply: reply.map(|r| (r, pkt.listener)) };
                        if write_tx.send(pending).await.is_err() {
                            error!("lease writer stopped; DHCP server stops");
                            break;
                        }
                    }
                }
            }
        }
    }
    drop(write_tx);
    if let Err(e) = writer.await {
        error!(error = %e, "lease writer failed");
    }
    receivers.abort_all();
    info!("DHCP server stopped");
}

/// One datagram as a listener received it.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub buf: &'a [u8],
    pub src: SocketAddr,
    /// Index into `Server::interfaces`.
    pub iface: usize,
    pub port: Port,
}

/// What one datagram came to.
#[derive(Debug)]
pub enum Decided {
    /// Nothing to send: dropped or not answered (counted, and logged where it says why).
    Nothing,
    /// A reply that promises no lease: it leaves at once.
    Send(Reply),
    /// Lease writes, and the reply that may leave only once they are committed.
    Commit {
        writes: Vec<LeaseWrite>,
        reply: Option<Reply>,
    },
}

/// Everything one datagram reaches before a socket is written: framing checks, decoding, the
/// decision, the counters and the log lines. Synchronous and socket-free, so that the fuzz
/// target drives exactly what the serve loop runs.
pub fn process(
    server: &mut Server,
    d: &DhcpMetrics,
    quiet: &mut Quiet,
    dgram: &Datagram<'_>,
    now: i64,
) -> Decided {
    let Datagram {
        buf,
        src,
        iface,
        port,
    } = *dgram;
    let SocketAddr::V4(src) = src else {
        d.drop("not_ipv4");
        return Decided::Nothing;
    };
    let msg = match wire::decode_request(buf) {
        Ok(m) => m,
        Err(e) => {
            d.drop(e.reason());
            debug!(%src, len = buf.len(), error = %e, "dropping DHCP packet");
            return Decided::Nothing;
        }
    };
    if let Some(t) = msg.opts().msg_type() {
        d.received
            .get_or_create(&TypeLabel {
                r#type: type_label(t),
            })
            .inc();
    }
    let rx = RecvInfo { src, iface, port };
    match server.respond(&msg, &rx, now) {
        Ok(outcome) if outcome.writes.is_empty() => match outcome.reply {
            Some(reply) => Decided::Send(reply),
            None => Decided::Nothing,
        },
        Ok(outcome) => Decided::Commit {
            writes: outcome.writes,
            reply: outcome.reply,
        },
        Err(ignored) => {
            d.drop(ignored.reason());
            let xid = msg.xid();
            let mac = wire::client_mac(&msg);
            match &ignored {
                Ignored::PoolExhausted(net) => {
                    d.pool_exhausted
                        .get_or_create(&SubnetLabel {
                            subnet: net.to_string(),
                        })
                        .inc();
                    if quiet.allow(format!("exhausted {net}")) {
                        warn!(?mac, xid, %net, "address pool exhausted; no offer (each one is counted in dhcp_pool_exhausted_total)");
                    }
                }
                Ignored::NoBoot(e) => {
                    if quiet.allow(format!("noboot {mac:?} {e}")) {
                        warn!(?mac, xid, error = %e, "no boot file for client");
                    }
                }
                Ignored::NoSubnet { .. } => {
                    if quiet.allow(format!("nosubnet {ignored}")) {
                        warn!(?mac, xid, reason = %ignored, "dropping DHCP packet");
                    }
                }
                _ => debug!(?mac, xid, reason = %ignored, "not answering"),
            }
            Decided::Nothing
        }
    }
}

/// A reply's bytes on the wire, padded to the 300 bytes BOOTP relays and old clients expect
/// (RFC 2131 §2).
pub fn encode(reply: &Reply) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(548);
    if let Err(e) = reply.msg.encode(&mut Encoder::new(&mut buf)) {
        error!(error = %e, "cannot encode DHCP reply");
        return None;
    }
    if buf.len() < 300 {
        buf.resize(300, 0);
    }
    Some(buf)
}

/// What a sent reply records against the client's MAC: `OFFER 10.0.0.5 file=undionly.kpxe`.
pub fn event_of(reply: &Reply) -> Option<(MacAddr, Option<std::net::Ipv4Addr>, String)> {
    let m = &reply.msg;
    let mac = wire::client_mac(m)?;
    let t = m.opts().msg_type()?;
    let ip = [m.yiaddr(), m.ciaddr()]
        .into_iter()
        .find(|ip| !ip.is_unspecified());
    let mut detail = type_label(t).to_uppercase();
    if let Some(ip) = ip {
        detail.push_str(&format!(" {ip}"));
    }
    if let Some(Ok(file)) = m.fname_str() {
        detail.push_str(&format!(" file={}", file.trim_end_matches('\0')));
    }
    Some((mac, ip, detail))
}

async fn send(socket: &UdpSocket, reply: &Reply, d: &DhcpMetrics, events: &Events) {
    let Some(buf) = encode(reply) else { return };
    match socket.send_to(&buf, reply.dest).await {
        Ok(_) => {
            if let Some(t) = reply.msg.opts().msg_type() {
                d.sent
                    .get_or_create(&TypeLabel {
                        r#type: type_label(t),
                    })
                    .inc();
            }
            if let Some((mac, ip, detail)) = event_of(reply) {
                let given = !reply.msg.yiaddr().is_unspecified();
                events.record_dhcp(mac, ip, given, detail);
            }
        }
        Err(e) => warn!(dest = %reply.dest, error = %e, "cannot send DHCP reply"),
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    listener: usize,
    tx: mpsc::Sender<Packet>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; wire::MAX_PACKET + 1];
    let mut errors = 0;
    loop {
        let got = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, src)) => {
                errors = 0;
                let pkt = Packet {
                    buf: buf[..n].to_vec(),
                    src,
                    listener,
                };
                if tx.try_send(pkt).is_err() {
                    metrics.dhcp.drop("queue_full");
                }
            }
            Err(e) => {
                errors += 1;
                warn!(error = %e, errors, "DHCP socket read failed");
                if errors >= MAX_RECV_ERRORS {
                    error!(error = %e, "DHCP socket is dead; its listener stops");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Commits batches of lease writes, then sends the replies that waited for them.
async fn write_loop(
    mut rx: mpsc::Receiver<Pending>,
    store: store::Pool,
    listeners: Arc<Vec<Listener>>,
    metrics: Arc<crate::metrics::Metrics>,
    events: Events,
    revert: mpsc::UnboundedSender<Vec<LeaseWrite>>,
) {
    let d = &metrics.dhcp;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&store, &batch).await {
            Ok(()) => {
                d.store_commits.inc();
                for p in batch.drain(..) {
                    if let Some((reply, l)) = p.reply {
                        send(&listeners[l].socket, &reply, d, &events).await;
                    }
                }
            }
            Err(e) => {
                d.store_errors.inc();
                error!(error = %e, replies = batch.len(), "cannot store leases; their replies are not sent");
                let writes = batch.drain(..).flat_map(|p| p.writes).collect();
                // The decision loop is gone only at shutdown, when nothing is left to undo.
                let _ = revert.send(writes);
            }
        }
    }
}

async fn commit(store: &store::Pool, batch: &[Pending]) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let leases: Vec<_> = batch
        .iter()
        .flat_map(|p| &p.writes)
        .map(|w| &w.after)
        .collect();
    store::leases::upsert_many(&mut tx, &leases).await?;
    tx.commit().await?;
    Ok(())
}
