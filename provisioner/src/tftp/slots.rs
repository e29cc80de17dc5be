//! Who may hold a TFTP transfer. UDP requests cost nothing to send, from any source address
//! one cares to write, so a transfer is only "confirmed" once its client has acknowledged the
//! first packet (which proves the client receives at that address). Until then it is cheap
//! for a flood to make and so cheap to end: when every slot is taken, the oldest unconfirmed
//! transfer gives way to the new request. One client address holds a bounded number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The transfer slots of one server.
#[derive(Clone, Debug)]
pub struct Slots(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    max: usize,
    per_client: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Not yet acknowledged, oldest first, each with the token that ends it.
    unconfirmed: BTreeMap<u64, CancellationToken>,
    confirmed: HashSet<u64>,
    per_client: HashMap<IpAddr, usize>,
    /// One transfer per client address and port: a client resends its request while waiting.
    ports: HashSet<SocketAddr>,
}

/// The answer to a request for a slot.
#[derive(Debug)]
pub enum Admitted {
    /// Go ahead; `evicted` says whether an unconfirmed transfer was ended to make room.
    Go { slot: Slot, evicted: bool },
    /// This client port already has a transfer: a resent request, ignored.
    Duplicate,
    /// No slot: the reason, as the `limited` metric names it.
    Busy(&'static str),
}

/// A held slot; given back when dropped, however the transfer ended.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    peer: SocketAddr,
    cancel: CancellationToken,
    slots: Slots,
}

impl Slots {
    pub fn new(max: usize, per_client: usize) -> Slots {
        Slots(Arc::new(Inner {
            max,
            per_client,
            state: Mutex::default(),
        }))
    }

    pub fn admit(&self, peer: SocketAddr) -> Admitted {
        let Ok(mut s) = self.0.state.lock() else {
            return Admitted::Busy("full");
        };
        if s.ports.contains(&peer) {
            return Admitted::Duplicate;
        }
        if s.per_client.get(&peer.ip()).copied().unwrap_or(0) >= self.0.per_client {
            return Admitted::Busy("per_client");
        }
        let mut evicted = false;
        if s.unconfirmed.len() + s.confirmed.len() >= self.0.max {
            let Some((_, oldest)) = s.unconfirmed.pop_first() else {
                return Admitted::Busy("full");
            };
            oldest.cancel();
            evicted = true;
        }
        let id = s.next;
        s.next += 1;
        let cancel = CancellationToken::new();
        s.unconfirmed.insert(id, cancel.clone());
        *s.per_client.entry(peer.ip()).or_insert(0) += 1;
        s.ports.insert(peer);
        Admitted::Go {
            slot: Slot {
                id,
                peer,
                cancel,
                slots: self.clone(),
            },
            evicted,
        }
    }

    /// Slots held: (unconfirmed, confirmed).
    pub fn held(&self) -> (usize, usize) {
        self.0
            .state
            .lock()
            .map(|s| (s.unconfirmed.len(), s.confirmed.len()))
            .unwrap_or_default()
    }
}

impl Slot {
    /// The client acknowledged the first packet: this transfer no longer gives way.
    pub fn confirm(&self) {
        if let Ok(mut s) = self.slots.0.state.lock()
            && s.unconfirmed.remove(&self.id).is_some()
        {
            s.confirmed.insert(self.id);
        }
    }

    /// Resolves when the transfer must give way to a newer request.
    pub fn cancelled(&self) -> WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut s) = self.slots.0.state.lock() else {
            return;
        };
        if s.unconfirmed.remove(&self.id).is_none() {
            s.confirmed.remove(&self.id);
        }
        let ip = self.peer.ip();
        if let Some(n) = s.per_client.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.per_client.remove(&ip);
            }
        }
        s.ports.remove(&self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    fn go(a: Admitted) -> (Slot, bool) {
        match a {
            Admitted::Go { slot, evicted } => (slot, evicted),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_resent_request_is_a_duplicate_and_a_client_holds_a_bounded_number() {
        let slots = Slots::new(100, 2);
        let (a, _) = go(slots.admit(peer(1, 1000)));
        assert!(matches!(slots.admit(peer(1, 1000)), Admitted::Duplicate));
        let (_b, _) = go(slots.admit(peer(1, 1001)));
        assert!(matches!(
            slots.admit(peer(1, 1002)),
            Admitted::Busy("per_client")
        ));
        go(slots.admit(peer(2, 1000)));
        drop(a);
        go(slots.admit(peer(1, 1002)));
    }

    #[test]
    fn when_full_the_oldest_unconfirmed_transfer_gives_way() {
        let slots = Slots::new(3, 3);
        let (first, _) = go(slots.admit(peer(1, 1)));
        let (second, _) = go(slots.admit(peer(2, 1)));
        let (third, _) = go(slots.admit(peer(3, 1)));
        first.confirm();
        // Full: the oldest unconfirmed (second) is ended, the first is confirmed and stays.
        let (_fourth, evicted) = go(slots.admit(peer(4, 1)));
        assert!(evicted);
        assert!(second.cancel.is_cancelled());
        assert!(!first.cancel.is_cancelled());
        assert!(!third.cancel.is_cancelled());
        assert_eq!(slots.held(), (2, 1));
        // Its drop does not give back a slot twice.
        drop(second);
        assert_eq!(slots.held(), (2, 1));
        third.confirm();
        let (fifth, _) = go(slots.admit(peer(5, 1)));
        fifth.confirm();
        // Every slot confirmed: nobody gives way.
        assert!(matches!(slots.admit(peer(6, 1)), Admitted::Busy("full")));
    }
}
