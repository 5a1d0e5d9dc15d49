//! The address pool of one network's DHCP server: leases (granted, kept as history after
//! they expire or are released so that a client gets its old address back), offers (held
//! briefly, never persisted) and declined addresses (RFC 2131 §4.3).
//!
//! Time is seconds since the Unix epoch, given by the caller: leases are persisted and
//! must mean the same after a restart. Everything is bounded: offers by [`MAX_OFFERS`]
//! (a flood of DISCOVERs from random MACs fills that and nothing else), leases by the
//! range and [`MAX_LEASES`], declined addresses by the range and [`MAX_DECLINED`].

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// How long an offered address is held for the client's REQUEST.
pub const OFFER_SECS: u64 = 30;
/// Offers outstanding at once, at most.
pub const MAX_OFFERS: usize = 256;
/// Lease records (live and history), at most.
pub const MAX_LEASES: usize = 65536;
/// How long an address a client declined (someone else answers ARP for it) is not given.
pub const DECLINE_SECS: u64 = 600;
const MAX_DECLINED: usize = 1024;

/// One lease, as persisted and shown.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// `id:HEX` (the client identifier) or `mac:MAC`.
    pub client: String,
    pub mac: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Unix seconds; in the past: expired or released (the record stays as history).
    pub expires: u64,
}

struct Offer {
    client: String,
    until: u64,
}

/// Why a request was refused (the server NAKs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NotInRange,
    Taken,
}

pub struct Pool {
    first: u32,
    last: u32,
    /// Never given: the gateway, the subnet's network and broadcast addresses.
    excluded: Vec<Ipv4Addr>,
    leases: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<String, Ipv4Addr>,
    /// By address.
    offers: HashMap<Ipv4Addr, Offer>,
    declined: HashMap<Ipv4Addr, u64>,
}

impl Pool {
    pub fn new(first: Ipv4Addr, last: Ipv4Addr, excluded: Vec<Ipv4Addr>) -> Pool {
        Pool {
            first: u32::from(first),
            last: u32::from(last),
            excluded,
            leases: HashMap::new(),
            by_client: HashMap::new(),
            offers: HashMap::new(),
            declined: HashMap::new(),
        }
    }

    /// Takes back persisted leases (those outside the range now, or conflicting, are
    /// dropped).
    pub fn restore(&mut self, leases: Vec<Lease>) {
        for l in leases {
            if self.in_range(l.ip) && self.leases.len() < MAX_LEASES {
                if let Some(old) = self.by_client.insert(l.client.clone(), l.ip) {
                    self.leases.remove(&old);
                }
                if let Some(prev) = self.leases.insert(l.ip, l) {
                    self.by_client.remove(&prev.client);
                }
            }
        }
    }

    pub fn leases(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self.leases.values().cloned().collect();
        v.sort_by_key(|l| u32::from(l.ip));
        v
    }

    pub fn offers(&self) -> usize {
        self.offers.len()
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip)) && !self.excluded.contains(&ip)
    }

    /// Whether `client` may have `ip` now: in the range, not declined, not offered to or
    /// leased (unexpired) by another client.
    fn available(&self, ip: Ipv4Addr, client: &str, now: u64) -> Result<(), Refused> {
        if !self.in_range(ip) {
            return Err(Refused::NotInRange);
        }
        let declined = self.declined.get(&ip).is_some_and(|&until| until > now);
        let offered = self
            .offers
            .get(&ip)
            .is_some_and(|o| o.client != client && o.until > now);
        let leased = self
            .leases
            .get(&ip)
            .is_some_and(|l| l.client != client && l.expires > now);
        if declined || offered || leased {
            return Err(Refused::Taken);
        }
        Ok(())
    }

    fn expire(&mut self, now: u64) {
        self.offers.retain(|_, o| o.until > now);
        self.declined.retain(|_, &mut until| until > now);
    }

    /// DISCOVER: the address to offer `client`, held for [`OFFER_SECS`]; `None` when the
    /// pool is exhausted (or too many offers are outstanding).
    pub fn offer(
        &mut self,
        client: &str,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        self.expire(now);
        let ok = |p: &Pool, ip: Ipv4Addr| p.available(ip, client, now).is_ok();
        let own_offer = self.own_offer(client);
        if own_offer.is_none() && self.offers.len() >= MAX_OFFERS {
            return None;
        }
        let ip = own_offer
            .filter(|&ip| ok(self, ip))
            .or_else(|| {
                self.by_client
                    .get(client)
                    .copied()
                    .filter(|&ip| ok(self, ip))
            })
            .or_else(|| requested.filter(|&ip| ok(self, ip) && !self.leases.contains_key(&ip)))
            .or_else(|| self.never_used(client, now))
            .or_else(|| self.oldest_expired(client, now))?;
        self.withdraw(client);
        self.offers.insert(
            ip,
            Offer {
                client: client.to_string(),
                until: now + OFFER_SECS,
            },
        );
        Some(ip)
    }

    fn own_offer(&self, client: &str) -> Option<Ipv4Addr> {
        self.offers
            .iter()
            .find(|(_, o)| o.client == client)
            .map(|(ip, _)| *ip)
    }

    /// The lowest free address no lease record holds. Scans at most as many addresses as
    /// there are records (plus exclusions) before finding one.
    fn never_used(&self, client: &str, now: u64) -> Option<Ipv4Addr> {
        if self.leases.len() >= MAX_LEASES {
            return None;
        }
        (self.first..=self.last)
            .map(Ipv4Addr::from)
            .find(|&ip| !self.leases.contains_key(&ip) && self.available(ip, client, now).is_ok())
    }

    /// The address of the lease that expired longest ago (another client's history).
    fn oldest_expired(&self, client: &str, now: u64) -> Option<Ipv4Addr> {
        self.leases
            .values()
            .filter(|l| l.expires <= now && self.available(l.ip, client, now).is_ok())
            .min_by_key(|l| (l.expires, u32::from(l.ip)))
            .map(|l| l.ip)
    }

    /// REQUEST: binds `ip` to `client` until `now + secs`, or says why not.
    pub fn grant(
        &mut self,
        client: &str,
        mac: &str,
        hostname: Option<String>,
        ip: Ipv4Addr,
        now: u64,
        secs: u64,
    ) -> Result<(), Refused> {
        self.expire(now);
        self.available(ip, client, now)?;
        if self.leases.len() >= MAX_LEASES && !self.leases.contains_key(&ip) {
            // Make room from the history; if all are live the pool is full.
            let old = self.oldest_expired(client, now).ok_or(Refused::Taken)?;
            self.forget(old);
        }
        if let Some(old) = self.by_client.get(client).copied() {
            if old != ip {
                self.forget(old);
            }
        }
        self.forget(ip);
        self.withdraw(client);
        self.by_client.insert(client.to_string(), ip);
        self.leases.insert(
            ip,
            Lease {
                ip,
                client: client.to_string(),
                mac: mac.to_string(),
                hostname,
                expires: now + secs,
            },
        );
        Ok(())
    }

    fn forget(&mut self, ip: Ipv4Addr) {
        if let Some(l) = self.leases.remove(&ip) {
            self.by_client.remove(&l.client);
        }
    }

    /// The client went with another server: its offer is void.
    pub fn withdraw(&mut self, client: &str) {
        self.offers.retain(|_, o| o.client != client);
    }

    /// RELEASE: the lease ends now; the record stays so the client gets the address back.
    /// Whether anything changed.
    pub fn release(&mut self, client: &str, ip: Ipv4Addr, now: u64) -> bool {
        match self.leases.get_mut(&ip) {
            Some(l) if l.client == client && l.expires > now => {
                l.expires = now;
                true
            }
            _ => false,
        }
    }

    /// DECLINE: `ip` is in use by someone else; not given to anyone for a while.
    /// Whether a lease was dropped.
    pub fn decline(&mut self, client: &str, ip: Ipv4Addr, now: u64) -> bool {
        let mine = self.leases.get(&ip).is_some_and(|l| l.client == client)
            || self.offers.get(&ip).is_some_and(|o| o.client == client);
        if !mine {
            return false;
        }
        self.withdraw(client);
        let had = self.leases.contains_key(&ip);
        self.forget(ip);
        self.expire(now);
        if self.declined.len() < MAX_DECLINED {
            self.declined.insert(ip, now + DECLINE_SECS);
        }
        had
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
