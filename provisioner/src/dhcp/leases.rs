//! The lease table the DHCP server decides from: pools per subnet, reservations, offers held
//! for a short while, and the leases themselves. The store holds the same leases durably; this
//! table is rebuilt from it at start.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::Reservation;
use crate::store::leases::{Lease, LeaseState};
use crate::types::{AddrRange, MacAddr};

/// How long an offered address is kept for the client it was offered to.
pub const OFFER_HOLD_SECS: i64 = 10;
/// How long a declined address (in use by something we do not know) stays out of the pool.
pub const DECLINE_QUARANTINE_SECS: i64 = 600;

/// One subnet the server hands addresses out on.
#[derive(Clone, Debug, PartialEq)]
pub struct Subnet {
    pub cidr: Ipv4Net,
    pub range: AddrRange,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time: u32,
}

/// A change to one lease, with what it replaced so a failed commit can be undone.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseWrite {
    pub before: Option<Lease>,
    pub after: Lease,
}

#[derive(Clone, Copy, Debug)]
struct Offer {
    ip: Ipv4Addr,
    until: i64,
}

#[derive(Debug, Default)]
struct Pool {
    /// Addresses never leased since start, lowest first.
    fresh: BTreeSet<u32>,
    /// Addresses that were leased and came back, oldest first, so a returning client is
    /// likely to find its old address still free.
    recycled: VecDeque<Ipv4Addr>,
    queued: HashSet<Ipv4Addr>,
}

#[derive(Debug)]
pub struct LeaseTable {
    subnets: Vec<Subnet>,
    pools: Vec<Pool>,
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
    offers: HashMap<MacAddr, Offer>,
    offered: HashMap<Ipv4Addr, MacAddr>,
    reservations: HashMap<MacAddr, Reservation>,
    reserved_ips: HashMap<Ipv4Addr, MacAddr>,
    excluded: HashSet<Ipv4Addr>,
}

impl LeaseTable {
    /// `excluded` are addresses never handed out (the appliance's own, routers).
    pub fn new(
        subnets: Vec<Subnet>,
        reservations: &[Reservation],
        leases: Vec<Lease>,
        excluded: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Self {
        let mut excluded: HashSet<Ipv4Addr> = excluded.into_iter().collect();
        excluded.extend(subnets.iter().filter_map(|s| s.router));
        let reserved_ips = reservations.iter().map(|r| (r.ip, r.mac)).collect();
        let mut by_mac: HashMap<MacAddr, Ipv4Addr> = HashMap::new();
        let mut by_ip = HashMap::with_capacity(leases.len());
        for lease in leases {
            // The newest record of a MAC is its binding.
            let newer = by_mac
                .get(&lease.mac)
                .and_then(|ip| by_ip.get(ip))
                .is_none_or(|old: &Lease| old.updated_at <= lease.updated_at);
            if newer {
                by_mac.insert(lease.mac, lease.ip);
            }
            by_ip.insert(lease.ip, lease);
        }
        let mut table = LeaseTable {
            pools: subnets.iter().map(|_| Pool::default()).collect(),
            subnets,
            by_ip,
            by_mac,
            offers: HashMap::new(),
            offered: HashMap::new(),
            reservations: reservations.iter().map(|r| (r.mac, r.clone())).collect(),
            reserved_ips,
            excluded,
        };
        for (i, subnet) in table.subnets.iter().enumerate() {
            for ip in subnet.range.iter() {
                if table.excluded.contains(&ip) || table.reserved_ips.contains_key(&ip) {
                    continue;
                }
                if table.by_ip.contains_key(&ip) {
                    if table.pools[i].queued.insert(ip) {
                        table.pools[i].recycled.push_back(ip);
                    }
                } else {
                    table.pools[i].fresh.insert(u32::from(ip));
                }
            }
        }
        table
    }

    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    /// The subnet whose network holds `ip`.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<usize> {
        self.subnets.iter().position(|s| s.cidr.contains(&ip))
    }

    pub fn reservation(&self, mac: MacAddr) -> Option<&Reservation> {
        self.reservations.get(&mac)
    }

    /// The lease bound to `mac`, whatever its state.
    pub fn lease_of(&self, mac: MacAddr) -> Option<&Lease> {
        let ip = self.by_mac.get(&mac)?;
        self.by_ip.get(ip).filter(|l| l.mac == mac)
    }

    pub fn lease_at(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// Leases that are active and unexpired at `now`.
    pub fn active_count(&self, now: i64) -> usize {
        self.by_ip.values().filter(|l| l.is_active(now)).count()
    }

    /// Whether `ip` may be given to `mac` now: nobody else holds it, has it offered, or has it
    /// reserved, and it is not one of the appliance's own.
    pub fn available_to(&self, ip: Ipv4Addr, mac: MacAddr, now: i64) -> bool {
        if self.excluded.contains(&ip) {
            return false;
        }
        if self.reserved_ips.get(&ip).is_some_and(|m| *m != mac) {
            return false;
        }
        if let Some(other) = self.offered.get(&ip)
            && *other != mac
            && self.offers.get(other).is_some_and(|o| o.until > now)
        {
            return false;
        }
        match self.by_ip.get(&ip) {
            Some(l) if l.mac == mac => l.state != LeaseState::Declined,
            Some(l) => !l.holds(now),
            None => true,
        }
    }

    /// Whether `ip` may be leased from subnet `s` at all: its dynamic range, or a reservation.
    fn leasable_in(&self, s: usize, ip: Ipv4Addr, mac: MacAddr) -> bool {
        let subnet = &self.subnets[s];
        if !subnet.cidr.contains(&ip) {
            return false;
        }
        subnet.range.contains(ip) || self.reserved_ips.get(&ip) == Some(&mac)
    }

    /// Picks an address for `mac` in subnet `s` and holds it as an offer. Preference: the
    /// MAC's reservation, its current or last lease, an outstanding offer, the address it
    /// asked for, then the pool. `None` means the pool is exhausted.
    pub fn offer(
        &mut self,
        s: usize,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: i64,
    ) -> Option<Ipv4Addr> {
        let ip = self.pick(s, mac, requested, now)?;
        if let Some(old) = self.offers.insert(
            mac,
            Offer {
                ip,
                until: now + OFFER_HOLD_SECS,
            },
        ) && old.ip != ip
        {
            self.offered.remove(&old.ip);
            self.requeue(old.ip);
        }
        self.offered.insert(ip, mac);
        Some(ip)
    }

    fn pick(
        &mut self,
        s: usize,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: i64,
    ) -> Option<Ipv4Addr> {
        if let Some(r) = self.reservations.get(&mac) {
            // A reserved address still leased to another MAC (the reservation came later)
            // waits until that lease ends: never two holders.
            let ok = self.subnets[s].cidr.contains(&r.ip) && self.available_to(r.ip, mac, now);
            return ok.then_some(r.ip);
        }
        let known = [
            self.lease_of(mac).map(|l| l.ip),
            self.offers.get(&mac).map(|o| o.ip),
            requested,
        ];
        for ip in known.into_iter().flatten() {
            if self.leasable_in(s, ip, mac) && self.available_to(ip, mac, now) {
                self.take_from_pool(s, ip);
                return Some(ip);
            }
        }
        while let Some(raw) = self.pools[s].fresh.pop_first() {
            let ip = Ipv4Addr::from(raw);
            if self.available_to(ip, mac, now) {
                return Some(ip);
            }
        }
        let mut tries = self.pools[s].recycled.len();
        while tries > 0 {
            tries -= 1;
            let ip = self.pools[s].recycled.pop_front()?;
            self.pools[s].queued.remove(&ip);
            if self.available_to(ip, mac, now) {
                return Some(ip);
            }
        }
        None
    }

    fn take_from_pool(&mut self, s: usize, ip: Ipv4Addr) {
        let pool = &mut self.pools[s];
        if !pool.fresh.remove(&u32::from(ip)) && pool.queued.remove(&ip) {
            pool.recycled.retain(|q| *q != ip);
        }
    }

    /// Puts an address back among the candidates of its pool; harmless if it is not free.
    fn requeue(&mut self, ip: Ipv4Addr) {
        if let Some(s) = self.subnet_of(ip)
            && self.subnets[s].range.contains(ip)
            && !self.reserved_ips.contains_key(&ip)
            && self.pools[s].queued.insert(ip)
        {
            self.pools[s].recycled.push_back(ip);
        }
    }

    /// Drops the offer made to `mac` (it chose another server).
    pub fn withdraw_offer(&mut self, mac: MacAddr) {
        if let Some(o) = self.offers.remove(&mac) {
            self.offered.remove(&o.ip);
            self.requeue(o.ip);
        }
    }

    /// Whether `ip` can be (re)bound to `mac` in subnet `s` by a REQUEST.
    pub fn can_bind(&self, s: usize, mac: MacAddr, ip: Ipv4Addr, now: i64) -> bool {
        if let Some(r) = self.reservations.get(&mac) {
            return r.ip == ip && self.available_to(ip, mac, now);
        }
        self.leasable_in(s, ip, mac) && self.available_to(ip, mac, now)
    }

    /// Binds `ip` to `mac` until `now + lease_time`; the caller checked `can_bind`. Returns the
    /// writes for the store: the MAC's previous binding ended, and the new lease.
    pub fn bind(
        &mut self,
        s: usize,
        mac: MacAddr,
        ip: Ipv4Addr,
        hostname: Option<String>,
        now: i64,
    ) -> Vec<LeaseWrite> {
        let mut writes = Vec::with_capacity(2);
        if let Some(old) = self.lease_of(mac).cloned()
            && old.ip != ip
            && old.state == LeaseState::Active
        {
            let after = Lease {
                state: LeaseState::Released,
                expires_at: old.expires_at.min(now),
                updated_at: now,
                ..old.clone()
            };
            self.by_ip.insert(old.ip, after.clone());
            self.requeue(old.ip);
            writes.push(LeaseWrite {
                before: Some(old),
                after,
            });
        }
        if let Some(o) = self.offers.remove(&mac) {
            self.offered.remove(&o.ip);
            if o.ip != ip {
                self.requeue(o.ip);
            }
        }
        self.take_from_pool(s, ip);
        let lease_time = i64::from(self.subnets[s].lease_time);
        let hostname = self
            .reservations
            .get(&mac)
            .and_then(|r| r.hostname.clone())
            .or(hostname);
        let after = Lease {
            ip,
            mac,
            state: LeaseState::Active,
            hostname,
            expires_at: now + lease_time,
            updated_at: now,
        };
        let before = self.by_ip.insert(ip, after.clone());
        self.by_mac.insert(mac, ip);
        writes.push(LeaseWrite { before, after });
        writes
    }

    /// The client gave its address back (DHCPRELEASE).
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr, now: i64) -> Option<LeaseWrite> {
        let old = self
            .by_ip
            .get(&ip)
            .filter(|l| l.mac == mac && l.state == LeaseState::Active)?;
        let before = old.clone();
        let after = Lease {
            state: LeaseState::Released,
            expires_at: now,
            updated_at: now,
            ..before.clone()
        };
        self.by_ip.insert(ip, after.clone());
        self.requeue(ip);
        Some(LeaseWrite {
            before: Some(before),
            after,
        })
    }

    /// The client found `ip` in use by someone else (DHCPDECLINE): quarantine the address.
    pub fn decline(&mut self, mac: MacAddr, ip: Ipv4Addr, now: i64) -> Option<LeaseWrite> {
        let owned = self.by_ip.get(&ip).is_some_and(|l| l.mac == mac)
            || self.offers.get(&mac).is_some_and(|o| o.ip == ip);
        if !owned || self.subnet_of(ip).is_none() {
            return None;
        }
        if let Some(o) = self.offers.remove(&mac) {
            self.offered.remove(&o.ip);
        }
        let after = Lease {
            ip,
            mac,
            state: LeaseState::Declined,
            hostname: None,
            expires_at: now + DECLINE_QUARANTINE_SECS,
            updated_at: now,
        };
        let before = self.by_ip.insert(ip, after.clone());
        if self.by_mac.get(&mac) == Some(&ip) {
            self.by_mac.remove(&mac);
        }
        Some(LeaseWrite { before, after })
    }

    /// Undoes a write that the store could not commit, unless something newer replaced it.
    pub fn revert(&mut self, w: &LeaseWrite) {
        if self.by_ip.get(&w.after.ip) != Some(&w.after) {
            return;
        }
        match &w.before {
            Some(b) => {
                self.by_ip.insert(b.ip, b.clone());
                self.by_mac.insert(b.mac, b.ip);
            }
            None => {
                self.by_ip.remove(&w.after.ip);
                if self.by_mac.get(&w.after.mac) == Some(&w.after.ip) {
                    self.by_mac.remove(&w.after.mac);
                }
            }
        }
        self.requeue(w.after.ip);
    }

    /// Ends stale offers and returns expired, released and unquarantined addresses to their
    /// pools. Run every few seconds, and when a pool looks empty.
    pub fn sweep(&mut self, now: i64) {
        let stale: Vec<MacAddr> = self
            .offers
            .iter()
            .filter(|(_, o)| o.until <= now)
            .map(|(m, _)| *m)
            .collect();
        for mac in stale {
            self.withdraw_offer(mac);
        }
        let free: Vec<Ipv4Addr> = self
            .by_ip
            .values()
            .filter(|l| !l.holds(now))
            .map(|l| l.ip)
            .collect();
        for ip in free {
            self.requeue(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(range: &str) -> Subnet {
        Subnet {
            cidr: "10.0.0.0/24".parse().unwrap(),
            range: range.parse().unwrap(),
            router: Some("10.0.0.1".parse().unwrap()),
            dns: vec![],
            domain: None,
            lease_time: 600,
        }
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn offers_distinct_addresses_and_skips_excluded() {
        let mut t = LeaseTable::new(
            vec![subnet("10.0.0.1-10.0.0.4")],
            &[],
            vec![],
            [ip("10.0.0.2")],
        );
        let a = t.offer(0, mac(1), None, 0).unwrap();
        let b = t.offer(0, mac(2), None, 0).unwrap();
        assert_eq!(
            (a, b),
            (ip("10.0.0.3"), ip("10.0.0.4")),
            "router .1 and own .2 are skipped"
        );
        assert_eq!(t.offer(0, mac(3), None, 0), None, "pool exhausted");
        assert_eq!(t.offer(0, mac(1), None, 1), Some(a), "same offer again");
        // After the hold, the offer lapses and the address goes to someone else.
        t.sweep(OFFER_HOLD_SECS + 1);
        assert!(t.offer(0, mac(3), None, OFFER_HOLD_SECS + 1).is_some());
    }

    #[test]
    fn bound_address_is_never_given_to_another_mac() {
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.11")], &[], vec![], []);
        let a = t.offer(0, mac(1), None, 0).unwrap();
        assert!(t.can_bind(0, mac(1), a, 0));
        t.bind(0, mac(1), a, None, 0);
        assert!(!t.can_bind(0, mac(2), a, 5));
        assert!(!t.available_to(a, mac(2), 599));
        assert_ne!(t.offer(0, mac(2), Some(a), 5), Some(a));
        // Expired: the address may go back to the pool.
        assert!(t.available_to(a, mac(2), 601));
    }

    #[test]
    fn returning_mac_gets_its_address_and_moving_ends_the_old_lease() {
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.20")], &[], vec![], []);
        let a = t.offer(0, mac(1), None, 0).unwrap();
        t.bind(0, mac(1), a, None, 0);
        assert_eq!(t.offer(0, mac(1), None, 100), Some(a));
        let other = ip("10.0.0.20");
        let writes = t.bind(0, mac(1), other, None, 100);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].after.state, LeaseState::Released);
        assert_eq!(writes[0].after.ip, a);
        assert_eq!(t.lease_of(mac(1)).unwrap().ip, other);
    }

    #[test]
    fn reservations_win_and_are_kept_from_others() {
        let res = Reservation {
            mac: mac(9),
            ip: ip("10.0.0.12"),
            hostname: Some("gpu-a01".into()),
        };
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.13")], &[res], vec![], []);
        for n in 1..=3 {
            let got = t.offer(0, mac(n), Some(ip("10.0.0.12")), 0);
            assert_ne!(got, Some(ip("10.0.0.12")));
        }
        assert_eq!(t.offer(0, mac(9), None, 0), Some(ip("10.0.0.12")));
        let w = t.bind(0, mac(9), ip("10.0.0.12"), Some("ignored".into()), 0);
        assert_eq!(w[0].after.hostname.as_deref(), Some("gpu-a01"));
        assert!(!t.can_bind(0, mac(9), ip("10.0.0.10"), 0));
    }

    #[test]
    fn a_reservation_waits_for_a_dynamic_lease_on_its_address_to_end() {
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.12")], &[], vec![], []);
        t.bind(0, mac(1), ip("10.0.0.12"), None, 0);
        let res = Reservation {
            mac: mac(9),
            ip: ip("10.0.0.12"),
            hostname: None,
        };
        let stored: Vec<Lease> = t.by_ip.values().cloned().collect();
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.12")], &[res], stored, []);
        assert_eq!(t.offer(0, mac(9), None, 10), None);
        assert!(!t.can_bind(0, mac(9), ip("10.0.0.12"), 10));
        assert_eq!(t.offer(0, mac(9), None, 601), Some(ip("10.0.0.12")));
    }

    #[test]
    fn decline_quarantines_and_release_frees() {
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.10")], &[], vec![], []);
        let a = t.offer(0, mac(1), None, 0).unwrap();
        assert!(
            t.decline(mac(2), a, 0).is_none(),
            "only its holder may decline it"
        );
        t.decline(mac(1), a, 0).unwrap();
        assert_eq!(
            t.offer(0, mac(1), None, 1),
            None,
            "quarantined, even for the decliner"
        );
        t.sweep(DECLINE_QUARANTINE_SECS + 1);
        let a2 = t
            .offer(0, mac(2), None, DECLINE_QUARANTINE_SECS + 1)
            .unwrap();
        assert_eq!(a, a2);
        t.bind(0, mac(2), a2, None, DECLINE_QUARANTINE_SECS + 1);
        assert!(t.release(mac(3), a2, 700).is_none());
        t.release(mac(2), a2, 700).unwrap();
        assert!(t.available_to(a2, mac(4), 700));
    }

    #[test]
    fn rebuilt_from_stored_leases() {
        let stored = vec![Lease {
            ip: ip("10.0.0.10"),
            mac: mac(1),
            state: LeaseState::Active,
            hostname: None,
            expires_at: 1000,
            updated_at: 0,
        }];
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.11")], &[], stored, []);
        assert_eq!(t.offer(0, mac(2), None, 10), Some(ip("10.0.0.11")));
        assert_eq!(t.offer(0, mac(3), None, 10), None);
        assert_eq!(t.offer(0, mac(1), None, 10), Some(ip("10.0.0.10")));
    }

    #[test]
    fn revert_restores_the_previous_lease() {
        let mut t = LeaseTable::new(vec![subnet("10.0.0.10-10.0.0.11")], &[], vec![], []);
        let writes = t.bind(0, mac(1), ip("10.0.0.10"), None, 0);
        for w in writes.iter().rev() {
            t.revert(w);
        }
        assert!(t.lease_of(mac(1)).is_none());
        assert!(t.available_to(ip("10.0.0.10"), mac(2), 1));
    }
}
