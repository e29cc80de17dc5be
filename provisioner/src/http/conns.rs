//! Bounds on HTTP connections: how many one peer address may hold, how many all may hold, and
//! how long a request head may take (hyper's header timer, and the sendfile path's deadline).
//! A connection that has not yet sent one whole request head is cheap for a flood to open and
//! holds nothing of value, so when every slot is taken the oldest such connection is closed to
//! make room for the new one: a node's request is not turned away by a slow-loris crowd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::net::canonical;

/// The connections of the appliance's HTTP and HTTPS listeners together.
#[derive(Clone, Debug)]
pub struct Conns(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    max: usize,
    per_peer: usize,
    head_timeout: Duration,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    live: HashSet<u64>,
    /// Connections that have not sent a whole request head yet, oldest first.
    headless: BTreeMap<u64, CancellationToken>,
    per_peer: HashMap<IpAddr, usize>,
}

/// A connection's place; given back when dropped.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    peer: IpAddr,
    cancel: CancellationToken,
    headed: AtomicBool,
    conns: Conns,
}

impl Conns {
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Conns {
        Conns(Arc::new(Inner {
            max: limits.http_connections,
            per_peer: limits.http_connections_per_peer,
            head_timeout: limits.http_head_timeout,
            metrics,
            state: Mutex::default(),
        }))
    }

    /// The longest a client may take over one request head.
    pub fn head_timeout(&self) -> Duration {
        self.0.head_timeout
    }

    /// A place for a new connection from `peer`, or `None` (counted) when it must be closed.
    pub fn admit(&self, peer: IpAddr) -> Option<Arc<Conn>> {
        let peer = canonical(peer);
        let limits = &self.0.metrics.limits;
        let mut s = self.0.state.lock().ok()?;
        if s.per_peer.get(&peer).copied().unwrap_or(0) >= self.0.per_peer {
            limits.hit("http", "per_peer");
            return None;
        }
        if s.live.len() >= self.0.max {
            let Some((oldest, cancel)) = s.headless.pop_first() else {
                limits.hit("http", "full");
                return None;
            };
            s.live.remove(&oldest);
            cancel.cancel();
            limits.hit("http", "evicted_without_request");
        }
        let id = s.next;
        s.next += 1;
        let cancel = CancellationToken::new();
        s.live.insert(id);
        s.headless.insert(id, cancel.clone());
        *s.per_peer.entry(peer).or_insert(0) += 1;
        Some(Arc::new(Conn {
            id,
            peer,
            cancel,
            headed: AtomicBool::new(false),
            conns: self.clone(),
        }))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.state.lock().map(|s| s.live.len()).unwrap_or(0)
    }
}

impl Conn {
    /// The connection sent a whole request head: it is a client, no longer one to close first.
    pub fn headed(&self) {
        if self.headed.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Ok(mut s) = self.conns.0.state.lock() {
            s.headless.remove(&self.id);
        }
    }

    /// Resolves when the connection must close to make room.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }

    pub fn head_timeout(&self) -> Duration {
        self.conns.0.head_timeout
    }

    pub fn metrics(&self) -> &Metrics {
        &self.conns.0.metrics
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Ok(mut s) = self.conns.0.state.lock() else {
            return;
        };
        s.live.remove(&self.id);
        s.headless.remove(&self.id);
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(max: usize, per_peer: usize) -> Conns {
        let limits = Limits {
            http_connections: max,
            http_connections_per_peer: per_peer,
            ..Limits::default()
        };
        Conns::new(&limits, Arc::new(Metrics::default()))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_peer_holds_a_bounded_number() {
        let c = conns(10, 2);
        let a = c.admit(ip(1)).unwrap();
        let _b = c.admit(ip(1)).unwrap();
        assert!(c.admit(ip(1)).is_none());
        // The same peer through an IPv6 socket is the same peer.
        assert!(
            c.admit(IpAddr::V6(
                std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()
            ))
            .is_none()
        );
        assert!(c.admit(ip(2)).is_some());
        drop(a);
        assert!(c.admit(ip(1)).is_some());
        assert_eq!(c.0.metrics.limits.count("http", "per_peer"), 2);
    }

    #[test]
    fn when_full_the_oldest_connection_without_a_request_makes_room() {
        let c = conns(3, 3);
        let client = c.admit(ip(1)).unwrap();
        client.headed();
        let slow1 = c.admit(ip(2)).unwrap();
        let slow2 = c.admit(ip(3)).unwrap();
        let newer = c.admit(ip(4)).expect("room made");
        assert!(slow1.cancel.is_cancelled(), "the oldest head-less one goes");
        assert!(!slow2.cancel.is_cancelled());
        assert!(!client.cancel.is_cancelled(), "a client that asked stays");
        assert_eq!(c.open(), 3);
        drop(slow1);
        assert_eq!(c.open(), 3, "not given back twice");
        slow2.headed();
        newer.headed();
        assert!(
            c.admit(ip(5)).is_none(),
            "every one asked: nobody is closed"
        );
        assert_eq!(c.0.metrics.limits.count("http", "full"), 1);
    }
}
