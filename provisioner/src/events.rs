//! Boot events from the DHCP, TFTP and HTTP servers, written to the store in batches by one
//! task so that recording never slows a reply. When the store falls behind, events are
//! dropped and counted, replies are not.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::error;

use crate::store::nodes::{BootEvent, EventKind};
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
    /// The sink, and the writer to spawn.
    pub fn new(store: store::Pool, neighbors: Neighbors) -> (Events, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let events = Events {
            tx,
            neighbors,
            dropped: Counter::default(),
        };
        (events, write_loop(rx, store))
    }

    pub fn record(&self, mac: MacAddr, ip: Option<Ipv4Addr>, kind: EventKind, detail: String) {
        if let Some(ip) = ip {
            self.neighbors.learn(ip, mac);
        }
        let ev = BootEvent {
            mac,
            ip,
            at_ms: now_ms(),
            kind,
            detail,
        };
        if self.tx.try_send(ev).is_err() {
            self.dropped.inc();
        }
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

/// Unix ms as an RFC 3339 UTC time, to the second.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn write_loop(mut rx: mpsc::Receiver<BootEvent>, store: store::Pool) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(e) = write(&store, &batch).await {
            error!(error = %e, events = batch.len(), "cannot store boot events");
        }
        batch.clear();
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

async fn write(store: &store::Pool, batch: &[BootEvent]) -> Result<(), StoreError> {
    let batch = coalesce(batch);
    let batch = batch.as_slice();
    let mut tx = store.begin().await?;
    store::nodes::record(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(())
}

/// Which MAC an IPv4 address belongs to: learnt from DHCP (our leases, PXE requests that name
/// their address) and, failing that, the kernel's neighbour table. TFTP and HTTP requests carry
/// no MAC; this is how their events find their node.
#[derive(Clone, Debug, Default)]
pub struct Neighbors(Arc<RwLock<HashMap<Ipv4Addr, MacAddr>>>);

impl Neighbors {
    pub fn learn(&self, ip: Ipv4Addr, mac: MacAddr) {
        if let Ok(mut m) = self.0.write() {
            m.insert(ip, mac);
        }
    }

    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        if let Some(mac) = self.0.read().ok().and_then(|m| m.get(&ip).copied()) {
            return Some(mac);
        }
        let mac = arp_table_lookup(ip)?;
        self.learn(ip, mac);
        Some(mac)
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
        let (events, writer) = Events::new(pool.clone(), Neighbors::default());
        let task = tokio::spawn(writer);
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let ip: Ipv4Addr = "10.0.0.5".parse().unwrap();
        events.record(mac, Some(ip), EventKind::Dhcp, "OFFER 10.0.0.5".into());
        assert_eq!(
            events.record_ip(ip, EventKind::Tftp, "RRQ undionly.kpxe".into()),
            Some(mac)
        );
        drop(events);
        task.await.unwrap();
        let (node, evs) = crate::store::nodes::get(&pool, mac).await.unwrap().unwrap();
        assert_eq!(node.last_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].kind, "tftp");
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
