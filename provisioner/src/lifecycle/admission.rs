//! Who may ask for a node's boot script, and how many new nodes the site takes. A boot
//! script of the discovery image carries the node's one-time agent token, so it goes only to
//! the requester the network says is that node, or, where the network says nothing (a peer
//! beyond a router, loopback), to the first requester of the node's boot. A request for an
//! unknown MAC makes a node; from a peer the network cannot vouch for, that is rate-limited
//! per peer and for the whole site (`docs/security.md`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tracing::warn;

use crate::metrics::LimitMetrics;
use crate::types::MacAddr;

/// What the network says of the peer at an address, against the MAC it speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The network says the peer is this MAC.
    Confirmed,
    /// The network says the peer is another MAC.
    Other(MacAddr),
    /// Nothing is known of the peer (a routed or loopback peer the appliance's DHCP did not
    /// give its address).
    Unknown,
}

/// Who asks for a node's boot script, as the boot plane saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The peer's address (IPv4-mapped addresses as IPv4).
    pub addr: IpAddr,
    /// What the network says of the peer against the MAC it asks for.
    pub identity: Identity,
}

impl Requester {
    /// A requester the appliance knows nothing of, at `addr` (the API's own tools, tests).
    pub fn unknown(addr: IpAddr) -> Requester {
        Requester {
            addr: crate::net::canonical(addr),
            identity: Identity::Unknown,
        }
    }
}

/// The window new-node counts are kept over.
const WINDOW_MS: i64 = 60_000;
/// Peers whose counts are kept at most; past this, counts older than a window are forgotten.
const MAX_PEERS: usize = 10_000;

/// How many new nodes a peer, and the site, may bring into being per minute.
#[derive(Debug)]
pub struct NewNodes {
    per_peer: u32,
    site: u32,
    counts: Mutex<Counts>,
    metrics: LimitMetrics,
}

#[derive(Debug, Default)]
struct Counts {
    site: (i64, u32),
    peers: HashMap<IpAddr, (i64, u32)>,
    /// When the site limit was last logged: once a minute, not once a request.
    logged_ms: i64,
}

/// Why a new node was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotTaken {
    #[error(
        "{peer} has brought {limit} new nodes in the last minute, its limit (limits.new_nodes_per_peer_per_minute); it may ask again in a minute"
    )]
    Peer { peer: IpAddr, limit: u32 },
    #[error(
        "the site has taken {limit} new nodes in the last minute, its limit (limits.new_nodes_per_minute); asking again in a minute"
    )]
    Site { limit: u32 },
}

impl NewNodes {
    /// `per_peer` new nodes a minute from one peer the network does not vouch for, `site`
    /// from all together (`[limits] new_nodes_per_peer_per_minute`, `new_nodes_per_minute`).
    pub fn new(per_peer: u32, site: u32, metrics: LimitMetrics) -> NewNodes {
        NewNodes {
            per_peer,
            site,
            counts: Mutex::default(),
            metrics,
        }
    }

    /// Counts one new node for `who` at `now_ms`, or says which limit it runs into. A peer the
    /// network vouches for (its neighbour entry is that MAC) makes only its own node, so only
    /// the site's limit applies to it.
    pub fn take(&self, who: &Requester, now_ms: i64) -> Result<(), NotTaken> {
        let Ok(mut c) = self.counts.lock() else {
            return Err(NotTaken::Site { limit: self.site });
        };
        let fresh = |(since, n): (i64, u32)| {
            if now_ms - since >= WINDOW_MS {
                (now_ms, 0)
            } else {
                (since, n)
            }
        };
        let site = fresh(c.site);
        if site.1 >= self.site {
            self.metrics.hit("lifecycle", "new_nodes_site");
            if now_ms - c.logged_ms >= WINDOW_MS {
                c.logged_ms = now_ms;
                warn!(
                    limit = self.site,
                    "new nodes refused: the site's limit per minute is reached (limits.new_nodes_per_minute; counted in provisioner_limited_total)"
                );
            }
            return Err(NotTaken::Site { limit: self.site });
        }
        if who.identity != Identity::Confirmed {
            if c.peers.len() >= MAX_PEERS {
                c.peers.retain(|_, (since, _)| now_ms - *since < WINDOW_MS);
                if c.peers.len() >= MAX_PEERS {
                    c.peers.clear();
                }
            }
            let peer = fresh(c.peers.get(&who.addr).copied().unwrap_or((now_ms, 0)));
            if peer.1 >= self.per_peer {
                self.metrics.hit("lifecycle", "new_nodes_per_peer");
                return Err(NotTaken::Peer {
                    peer: who.addr,
                    limit: self.per_peer,
                });
            }
            c.peers.insert(who.addr, (peer.0, peer.1 + 1));
        }
        c.site = (site.0, site.1 + 1);
        Ok(())
    }
}

impl Default for NewNodes {
    /// The defaults of `[limits]`.
    fn default() -> Self {
        NewNodes::new(30, 5000, LimitMetrics::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(last: u8, identity: Identity) -> Requester {
        Requester {
            addr: IpAddr::from([10, 0, 0, last]),
            identity,
        }
    }

    #[test]
    fn new_nodes_are_limited_per_peer_and_for_the_site() {
        let n = NewNodes::new(2, 5, LimitMetrics::default());
        let t = 1_000_000;
        let a = who(1, Identity::Unknown);
        assert!(n.take(&a, t).is_ok());
        assert!(n.take(&a, t).is_ok());
        assert_eq!(
            n.take(&a, t),
            Err(NotTaken::Peer {
                peer: a.addr,
                limit: 2
            })
        );
        // A peer the network vouches for makes its own node: only the site counts it.
        let c = who(3, Identity::Confirmed);
        for _ in 0..3 {
            assert!(n.take(&c, t).is_ok());
        }
        assert_eq!(
            n.take(&who(4, Identity::Unknown), t),
            Err(NotTaken::Site { limit: 5 })
        );
        assert_eq!(n.metrics.count("lifecycle", "new_nodes_site"), 1);
        assert_eq!(n.metrics.count("lifecycle", "new_nodes_per_peer"), 1);
        // A minute later, both windows start again.
        assert!(n.take(&a, t + WINDOW_MS).is_ok());
    }

    #[test]
    fn zero_takes_no_new_node_from_a_peer_the_network_does_not_vouch_for() {
        let n = NewNodes::new(0, 5000, LimitMetrics::default());
        assert!(n.take(&who(1, Identity::Unknown), 0).is_err());
        assert!(n.take(&who(1, Identity::Confirmed), 0).is_ok());
    }
}
