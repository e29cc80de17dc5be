//! Boot events from the DHCP, TFTP and HTTP servers, written to the store in batches by one
//! task so that recording never slows a reply. When the store falls behind, events are
//! dropped and counted, replies are not.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::now_ms;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::error;

use crate::store::journal::{BootEvent, EventKind};
use crate::store::{self, StoreError};
use crate::types::MacAddr;

const QUEUE: usize = 65_536;
const MAX_BATCH: usize = 4096;

/// Where the servers send what they saw. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Events {
    tx: mpsc::Sender<BootEvent>,
    neighbors: Neighbors,
    pub dropped: Counter,
}

impl Events {
    /// The sink, and the writer to spawn; the journal keeps `per_node` events of each node.
    pub fn new(
        store: store::Pool,
        neighbors: Neighbors,
        per_node: u32,
    ) -> (Events, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let events = Events {
            tx,
            neighbors,
            dropped: Counter::default(),
        };
        (events, write_loop(rx, store, per_node))
    }

    /// Records what a server saw of `mac`. Nothing here teaches the appliance who is at `ip`:
    /// a request that names a MAC (`/boot/MAC.ipxe`) is the requester's claim, not a fact.
    pub fn record(&self, mac: MacAddr, ip: Option<Ipv4Addr>, kind: EventKind, detail: String) {
        let ev = BootEvent {
            mac,
            ip,
            at_ms: now_ms(),
            kind,
            detail: truncate(detail),
        };
        if self.tx.try_send(ev).is_err() {
            self.dropped.inc();
        }
    }

    /// Records a DHCP reply the server sent to `mac`, at the address it gave (`given`, full
    /// mode) or that the client named; an address the appliance itself gave says who is at it.
    pub fn record_dhcp(&self, mac: MacAddr, ip: Option<Ipv4Addr>, given: bool, detail: String) {
        self.neighbors.dhcp_seen(mac, ip, given);
        self.record(mac, ip, EventKind::Dhcp, detail);
    }

    /// Records against whatever MAC `ip` is known by; events of unknown clients are not kept.
    pub fn record_ip(&self, ip: Ipv4Addr, kind: EventKind, detail: String) -> Option<MacAddr> {
        let mac = self.neighbors.lookup(ip)?;
        self.record(mac, Some(ip), kind, detail);
        Some(mac)
    }

    pub fn neighbors(&self) -> &Neighbors {
        &self.neighbors
    }
}

/// The longest event detail kept: a request's own text (a path, a `Range` header) is cut
/// here, so that no client can write more than this into the journal per request.
pub const MAX_DETAIL: usize = 240;

fn truncate(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push_str("… (cut)");
    }
    detail
}

/// MACs the boot journal keeps: far more than any site has nodes.
const MAX_MACS: u32 = 100_000;

/// How often every node written since is trimmed to its `per_node` latest events; a node that
/// gains a quarter of that in between is trimmed at once.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

async fn write_loop(mut rx: mpsc::Receiver<BootEvent>, store: store::Pool, per_node: u32) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut written: HashMap<MacAddr, u32> = HashMap::new();
    let mut pruned = std::time::Instant::now();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match write(&store, &batch).await {
            Ok(rows) => {
                for mac in rows {
                    *written.entry(mac).or_insert(0) += 1;
                }
            }
            Err(e) => error!(error = %e, events = batch.len(), "cannot store boot events"),
        }
        batch.clear();
        let every = pruned.elapsed() >= PRUNE_EVERY;
        let due: Vec<MacAddr> = written
            .iter()
            .filter(|(_, n)| every || **n >= (per_node / 4).max(1))
            .map(|(m, _)| *m)
            .collect();
        if every {
            pruned = std::time::Instant::now();
            let now = now_ms() / 1000;
            match store::journal::forget_unseen(&store, now, MAX_MACS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    forgotten = n,
                    "boot journal: MACs not seen for long, or past its size, forgotten"
                ),
                Err(e) => error!(error = %e, "cannot trim the boot journal"),
            }
        }
        if !due.is_empty() {
            if let Err(e) = store::journal::keep_latest(&store, &due, per_node).await {
                error!(error = %e, "cannot trim boot events");
            }
            for m in &due {
                written.remove(m);
            }
        }
        // Let events gather: one transaction per tick, not per packet.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Merges repeats within one batch: a node fetching the same thing many times in a tick
/// (wrk, a retry loop) is one event `… (×N)`, not N rows.
fn coalesce(batch: &[BootEvent]) -> Vec<BootEvent> {
    let mut index: HashMap<(MacAddr, EventKind, &str), usize> = HashMap::new();
    let mut out: Vec<(BootEvent, u32)> = Vec::new();
    for ev in batch {
        match index.get(&(ev.mac, ev.kind, ev.detail.as_str())) {
            Some(&i) => out[i].1 += 1,
            None => {
                index.insert((ev.mac, ev.kind, ev.detail.as_str()), out.len());
                out.push((ev.clone(), 1));
            }
        }
    }
    out.into_iter()
        .map(|(mut ev, n)| {
            if n > 1 {
                ev.detail = format!("{} (×{n})", ev.detail);
            }
            ev
        })
        .collect()
}

/// Writes a batch; returns the MAC of each row written.
async fn write(store: &store::Pool, batch: &[BootEvent]) -> Result<Vec<MacAddr>, StoreError> {
    let batch = coalesce(batch);
    let mut tx = store.begin().await?;
    store::journal::record(&mut tx, &batch).await?;
    tx.commit().await?;
    Ok(batch.iter().map(|e| e.mac).collect())
}

/// Which MAC an IPv4 address belongs to: learnt from the DHCP replies the appliance sent (the
/// address it gave, or the one a PXE client named) and from the kernel's neighbour table. TFTP and HTTP requests carry no MAC;
/// this is how their events find their node, and how the appliance tells whether a request
/// for a node's boot script comes from that node (`identify`).
#[derive(Clone, Debug, Default)]
pub struct Neighbors(Arc<RwLock<Learnt>>);

impl Neighbors {
    /// The requester at `addr` asking for `mac`'s boot script, as the network knows it.
    pub fn requester(
        &self,
        addr: std::net::IpAddr,
        mac: MacAddr,
    ) -> crate::lifecycle::admission::Requester {
        crate::lifecycle::admission::Requester {
            addr: crate::net::canonical(addr),
            identity: self.identify(addr, mac),
        }
    }
}

#[derive(Debug, Default)]
struct Learnt {
    /// Address → MAC, from DHCP (and, for event attribution only, the neighbour table).
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    /// Address → MAC as the appliance's own DHCP gave it: only these (after the neighbour
    /// table) decide who a requester is. An address a client merely named is its own word.
    dhcp: HashMap<Ipv4Addr, MacAddr>,
}

/// Entries each map keeps. A flood of spoofed DHCP requests can churn them, never grow them.
const MAX_NEIGHBORS: usize = 65_536;

pub use crate::lifecycle::admission::Identity;

fn bounded_insert<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>, k: K, v: V) {
    if m.len() >= MAX_NEIGHBORS && !m.contains_key(&k) {
        m.clear();
    }
    m.insert(k, v);
}

impl Neighbors {
    /// A DHCP reply went to `mac` (at `ip`, when it has one; `given` when the appliance gave
    /// that address).
    pub fn dhcp_seen(&self, mac: MacAddr, ip: Option<Ipv4Addr>, given: bool) {
        if let (Ok(mut m), Some(ip)) = (self.0.write(), ip) {
            bounded_insert(&mut m.by_ip, ip, mac);
            if given {
                bounded_insert(&mut m.dhcp, ip, mac);
            }
        }
    }

    /// The MAC `ip` is known by, for recording events (cached).
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        if let Some(mac) = self.0.read().ok().and_then(|m| m.by_ip.get(&ip).copied()) {
            return Some(mac);
        }
        let mac = arp_table_lookup(ip)?;
        if let Ok(mut m) = self.0.write() {
            bounded_insert(&mut m.by_ip, ip, mac);
        }
        Some(mac)
    }

    /// Whether the peer at `ip` is `mac`. The kernel's neighbour table is asked first and
    /// afresh: for a peer on the provisioning segment it holds the hardware address the
    /// peer's own frames came from. For a peer beyond a router it has no entry, and the
    /// address the appliance's DHCP gave decides.
    pub fn identify(&self, ip: std::net::IpAddr, mac: MacAddr) -> Identity {
        let std::net::IpAddr::V4(ip) = crate::net::canonical(ip) else {
            return Identity::Unknown;
        };
        let seen = arp_table_lookup(ip).or_else(|| self.0.read().ok()?.dhcp.get(&ip).copied());
        match seen {
            Some(m) if m == mac => Identity::Confirmed,
            Some(other) => Identity::Other(other),
            None => Identity::Unknown,
        }
    }
}

/// An IPv4 peer seen through an IPv6 socket is still an IPv4 peer.
pub fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Reads `/proc/net/arp` (IP address, HW type, Flags, HW address, Mask, Device).
fn arp_table_lookup(ip: Ipv4Addr) -> Option<MacAddr> {
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp(&text, ip)
}

fn parse_arp(text: &str, ip: Ipv4Addr) -> Option<MacAddr> {
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags, hw) = (cols.first()?, cols.get(2)?, cols.get(3)?);
        // Flags 0x0: incomplete entry, no address known yet.
        (addr.parse::<Ipv4Addr>().ok()? == ip && *flags != "0x0")
            .then(|| hw.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_table_parsing() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.99.0.20       0x1         0x2         52:54:00:12:34:56     *        br0\n\
                    10.99.0.21       0x1         0x0         00:00:00:00:00:00     *        br0\n";
        assert_eq!(
            parse_arp(text, "10.99.0.20".parse().unwrap()),
            Some("52:54:00:12:34:56".parse().unwrap())
        );
        assert_eq!(parse_arp(text, "10.99.0.21".parse().unwrap()), None);
        assert_eq!(parse_arp(text, "10.99.0.22".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn events_reach_the_store_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open_journal(dir.path()).await.unwrap();
        let (events, writer) = Events::new(pool.clone(), Neighbors::default(), 100);
        let task = tokio::spawn(writer);
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let ip: Ipv4Addr = "10.0.0.5".parse().unwrap();
        events.record_dhcp(mac, Some(ip), true, "OFFER 10.0.0.5".into());
        assert_eq!(
            events.record_ip(ip, EventKind::Tftp, "RRQ undionly.kpxe".into()),
            Some(mac)
        );
        drop(events);
        task.await.unwrap();
        let (node, evs) = crate::store::journal::get(&pool, mac)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(node.last_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].kind, "tftp");
    }

    #[tokio::test]
    async fn a_node_keeps_only_its_latest_events() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open_journal(dir.path()).await.unwrap();
        let (events, writer) = Events::new(pool.clone(), Neighbors::default(), 8);
        let task = tokio::spawn(writer);
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        for i in 0..100 {
            events.record(mac, None, EventKind::Http, format!("GET /artifacts/{i}"));
            if i % 10 == 9 {
                // Several batches, as a steady stream of requests makes them.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
        drop(events);
        task.await.unwrap();
        let (_, evs) = crate::store::journal::get(&pool, mac)
            .await
            .unwrap()
            .unwrap();
        assert!(evs.len() <= 8 + 10, "{} events kept", evs.len());
        assert_eq!(
            evs.last().unwrap().detail,
            "GET /artifacts/99",
            "the latest are kept"
        );
    }

    #[tokio::test]
    async fn the_journal_forgets_macs_unseen_for_long_or_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::store::open_journal(dir.path()).await.unwrap();
        let day = 24 * 3600 * 1000;
        let now = 1_000 * day;
        let mut batch = Vec::new();
        for i in 0..10u8 {
            batch.push(BootEvent {
                mac: MacAddr([2, 0, 0, 0, 0, i]),
                ip: None,
                // 0 and 1 are older than kept; the rest a minute apart.
                at_ms: if i < 2 {
                    now - 40 * day
                } else {
                    now - i64::from(10 - i) * 60_000
                },
                kind: EventKind::Dhcp,
                detail: "DISCOVER".into(),
            });
        }
        let mut tx = pool.begin().await.unwrap();
        crate::store::journal::record(&mut tx, &batch)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let gone = crate::store::journal::forget_unseen(&pool, now / 1000, 5)
            .await
            .unwrap();
        assert_eq!(gone, 5, "2 too old, then 3 past the 5 kept");
        let left: Vec<String> = crate::store::journal::list(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.mac)
            .collect();
        assert_eq!(
            left,
            (5..10)
                .map(|i| format!("02:00:00:00:00:{i:02x}"))
                .collect::<Vec<_>>(),
            "the most recently seen stay"
        );
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM boot_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(events, 5, "their events went with them");
    }

    #[test]
    fn only_dhcp_says_who_is_at_an_address() {
        let n = Neighbors::default();
        let (a, b): (MacAddr, MacAddr) = (
            "52:54:00:00:00:0a".parse().unwrap(),
            "52:54:00:00:00:0b".parse().unwrap(),
        );
        // Documentation addresses: never in this machine's neighbour table.
        let ip: Ipv4Addr = "192.0.2.7".parse().unwrap();
        assert_eq!(n.identify(ip.into(), a), Identity::Unknown);
        n.dhcp_seen(a, Some(ip), false);
        assert_eq!(
            n.identify(ip.into(), a),
            Identity::Unknown,
            "an address a client named is its own word"
        );
        n.dhcp_seen(a, Some(ip), true);
        assert_eq!(n.identify(ip.into(), a), Identity::Confirmed);
        assert_eq!(n.identify(ip.into(), b), Identity::Other(a));
        let mapped = std::net::IpAddr::V6(ip.to_ipv6_mapped());
        assert_eq!(n.identify(mapped, a), Identity::Confirmed);
    }

    #[test]
    fn a_request_cannot_write_more_than_a_line_into_the_journal() {
        let long = format!("GET /artifacts/x (bytes={})", "0-1,".repeat(75_000));
        let cut = truncate(long);
        assert!(cut.len() <= MAX_DETAIL + "… (cut)".len(), "{}", cut.len());
        assert!(cut.ends_with("… (cut)"));
        assert_eq!(truncate("RRQ undionly.kpxe".into()), "RRQ undionly.kpxe");
        // Cut on a character boundary: byte 240 falls inside an `é` here.
        let wide = format!("a{}", "é".repeat(200));
        let cut = truncate(wide);
        assert!(
            cut.starts_with(&format!("a{}… (cut)", "é".repeat(119))),
            "{cut}"
        );
    }

    #[test]
    fn repeats_in_a_batch_become_one_event() {
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let ev = |d: &str| BootEvent {
            mac,
            ip: None,
            at_ms: 1,
            kind: EventKind::Http,
            detail: d.into(),
        };
        let out = coalesce(&[ev("GET /a"), ev("GET /b"), ev("GET /a"), ev("GET /a")]);
        let details: Vec<_> = out.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["GET /a (×3)", "GET /b"]);
    }
}
