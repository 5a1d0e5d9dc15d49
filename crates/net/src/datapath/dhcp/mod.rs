//! A network's DHCP server (RFC 2131/2132), as OVN's `put_dhcp_opts` action or dnsmasq
//! give: a [`Stage`] (order 10) on the network's endpoint that answers DISCOVER, REQUEST,
//! DECLINE, RELEASE and INFORM sent to UDP port 67, speaking from the gateway address
//! (its server identifier) with the subnet mask, the router (the gateway), the broadcast
//! address, the lease time with its T1/T2, and DNS servers only if configured.
//!
//! - [`msg`]: the message format; [`pool`]: who has which address; [`store`]: leases.json.
//!
//! The server is authoritative for its network (as dnsmasq's `dhcp-authoritative`): a
//! REQUEST for an address that is not in the range or that another client holds is NAKed
//! at once, so a client moved from another network starts over instead of waiting, and a
//! client whose lease the server forgot gets it back if the address is still free.

pub mod msg;
pub mod pool;
pub mod registry;
pub mod store;

pub use registry::Registry;

use super::endpoint::{Ctx, NetEndpoint, Stage, Verdict};
use super::packet::{self, Ipv4, L4};
use super::{format_mac, frame::Frame, lock};
use crate::error::{NetError, Result};
use msg::{opt, MsgType, Request};
use pool::{Lease, Pool, Refused};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::LeaseStore;

/// The default lease: an hour (clients renew at half of it).
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// Pool exhaustion is logged at most this often (a flood would fill the log otherwise).
const EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a network's DHCP server gives out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The range of addresses (inclusive); the gateway and the subnet's network and
    /// broadcast addresses are never given even if inside it.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub lease_secs: u32,
    /// DNS servers (option 6), none by default.
    pub dns: Vec<Ipv4Addr>,
}

/// What a server did, for the API and the metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DhcpStats {
    pub discovers: u64,
    pub offers: u64,
    pub requests: u64,
    pub acks: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    pub informs: u64,
    /// DISCOVERs left unanswered: no free address (or too many outstanding offers).
    pub exhausted: u64,
    /// Messages to port 67 that did not parse, or that a client should not send.
    pub malformed: u64,
}

#[derive(Default)]
struct Counters {
    discovers: AtomicU64,
    offers: AtomicU64,
    requests: AtomicU64,
    acks: AtomicU64,
    naks: AtomicU64,
    releases: AtomicU64,
    declines: AtomicU64,
    informs: AtomicU64,
    exhausted: AtomicU64,
    malformed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    fn snapshot(&self) -> DhcpStats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        DhcpStats {
            discovers: g(&self.discovers),
            offers: g(&self.offers),
            requests: g(&self.requests),
            acks: g(&self.acks),
            naks: g(&self.naks),
            releases: g(&self.releases),
            declines: g(&self.declines),
            informs: g(&self.informs),
            exhausted: g(&self.exhausted),
            malformed: g(&self.malformed),
        }
    }
}

pub struct DhcpServer {
    net: String,
    /// The gateway: server identifier, source of the replies, router option.
    server: Ipv4Addr,
    mask: Ipv4Addr,
    broadcast: Ipv4Addr,
    cfg: DhcpConfig,
    pool: Mutex<Pool>,
    store: Option<Arc<LeaseStore>>,
    counters: Counters,
    exhausted_logged: Mutex<Option<Instant>>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DhcpServer {
    /// A server for `ep`'s network, which needs a subnet and a gateway; the range must be
    /// inside the subnet. Takes back the leases `store` has for the network.
    pub fn new(
        ep: &NetEndpoint,
        cfg: DhcpConfig,
        store: Option<Arc<LeaseStore>>,
    ) -> Result<DhcpServer> {
        let a = ep.addressing;
        let (Some((net, len)), Some(server)) = (a.subnet, a.gateway) else {
            return Err(NetError::Invalid(format!(
                "network {}: DHCP needs a subnet and a gateway (--subnet CIDR --gateway IP)",
                ep.name
            )));
        };
        if !a.contains(cfg.first) || !a.contains(cfg.last) || cfg.first > cfg.last {
            return Err(NetError::Invalid(format!(
                "network {}: the DHCP range {}-{} is not an ascending range inside {net}/{len}",
                ep.name, cfg.first, cfg.last
            )));
        }
        let mask = Ipv4Addr::from(packet::mask(len));
        let broadcast = Ipv4Addr::from(u32::from(net) | !u32::from(mask));
        let mut excluded = vec![server, broadcast];
        if len < 31 {
            excluded.push(Ipv4Addr::from(u32::from(net) & u32::from(mask)));
        }
        let mut pool = Pool::new(cfg.first, cfg.last, excluded);
        if let Some(s) = &store {
            pool.restore(s.leases(&ep.name));
        }
        Ok(DhcpServer {
            net: ep.name.clone(),
            server,
            mask,
            broadcast,
            cfg,
            pool: Mutex::new(pool),
            store,
            counters: Counters::default(),
            exhausted_logged: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    pub fn leases(&self) -> Vec<Lease> {
        lock(&self.pool).leases()
    }

    /// Takes back `leases` (those of an earlier server of the network, whose removal is
    /// being undone), and saves them.
    pub fn restore_leases(&self, leases: Vec<Lease>) {
        let mut p = lock(&self.pool);
        p.restore(leases);
        self.persist(p.leases());
    }

    pub fn stats(&self) -> DhcpStats {
        self.counters.snapshot()
    }

    /// The options every OFFER/ACK carries; `lease`: with the lease time (not for INFORM).
    fn options(&self, lease: bool) -> Vec<(u8, Vec<u8>)> {
        let mut o = vec![(opt::SERVER_ID, self.server.octets().to_vec())];
        if lease {
            let secs = self.cfg.lease_secs;
            o.push((opt::LEASE_TIME, secs.to_be_bytes().to_vec()));
            o.push((opt::T1, (secs / 2).to_be_bytes().to_vec()));
            o.push((opt::T2, (secs / 8 * 7).to_be_bytes().to_vec()));
        }
        o.push((opt::SUBNET_MASK, self.mask.octets().to_vec()));
        o.push((opt::ROUTER, self.server.octets().to_vec()));
        o.push((opt::BROADCAST, self.broadcast.octets().to_vec()));
        if !self.cfg.dns.is_empty() {
            let dns = self.cfg.dns.iter().flat_map(|d| d.octets()).collect();
            o.push((opt::DNS, dns));
        }
        o
    }

    fn persist(&self, leases: Vec<Lease>) {
        if let Some(s) = &self.store {
            s.update(&self.net, leases);
        }
    }

    fn answer(&self, ctx: &Ctx, req: &Request) {
        let now = unix_now();
        let client = req.client_key();
        let c = &self.counters;
        match req.ty {
            MsgType::Discover => {
                bump(&c.discovers);
                let offered = lock(&self.pool).offer(&client, req.requested_ip, now);
                match offered {
                    Some(ip) => {
                        bump(&c.offers);
                        self.send(ctx, req, MsgType::Offer, ip, self.options(true));
                    }
                    None => self.exhausted(&client),
                }
            }
            MsgType::Request => {
                bump(&c.requests);
                if req.server_id.is_some_and(|s| s != self.server) {
                    // SELECTING, and the client chose another server's offer.
                    return lock(&self.pool).withdraw(&client);
                }
                // SELECTING/INIT-REBOOT name the address; RENEWING/REBINDING use ciaddr.
                let Some(ip) = req
                    .requested_ip
                    .or(Some(req.ciaddr).filter(|a| !a.is_unspecified()))
                else {
                    return bump(&c.malformed);
                };
                let (mac, host) = (format_mac(&req.chaddr), req.hostname.clone());
                let secs = u64::from(self.cfg.lease_secs);
                let granted = {
                    let mut p = lock(&self.pool);
                    p.grant(&client, &mac, host, ip, now, secs)
                        .map(|()| p.leases())
                };
                match granted {
                    Ok(leases) => {
                        bump(&c.acks);
                        self.persist(leases);
                        tracing::info!("dhcp {}: {ip} leased to {client} ({mac})", self.net);
                        self.send(ctx, req, MsgType::Ack, ip, self.options(true));
                    }
                    Err(why) => {
                        bump(&c.naks);
                        let text = match why {
                            Refused::NotInRange => "address not in this network's range",
                            Refused::Taken => "address in use",
                        };
                        tracing::info!("dhcp {}: NAK {ip} for {client}: {text}", self.net);
                        let o = vec![
                            (opt::SERVER_ID, self.server.octets().to_vec()),
                            (opt::MESSAGE, text.as_bytes().to_vec()),
                        ];
                        self.send(ctx, req, MsgType::Nak, Ipv4Addr::UNSPECIFIED, o);
                    }
                }
            }
            MsgType::Decline => {
                bump(&c.declines);
                let (Some(ip), true) = (req.requested_ip, req.server_id == Some(self.server))
                else {
                    return;
                };
                let mut p = lock(&self.pool);
                if p.decline(&client, ip, now) {
                    let leases = p.leases();
                    drop(p);
                    self.persist(leases);
                }
                tracing::warn!(
                    "dhcp {}: {client} declined {ip}: another host uses it",
                    self.net
                );
            }
            MsgType::Release => {
                bump(&c.releases);
                let mut p = lock(&self.pool);
                if p.release(&client, req.ciaddr, now) {
                    let leases = p.leases();
                    drop(p);
                    self.persist(leases);
                    tracing::info!("dhcp {}: {client} released {}", self.net, req.ciaddr);
                }
            }
            MsgType::Inform => {
                bump(&c.informs);
                if !req.ciaddr.is_unspecified() {
                    self.send(
                        ctx,
                        req,
                        MsgType::Ack,
                        Ipv4Addr::UNSPECIFIED,
                        self.options(false),
                    );
                }
            }
            // Server messages: not from a client.
            MsgType::Offer | MsgType::Ack | MsgType::Nak => bump(&c.malformed),
        }
    }

    fn exhausted(&self, client: &str) {
        bump(&self.counters.exhausted);
        let mut last = lock(&self.exhausted_logged);
        if last.is_none_or(|t| t.elapsed() >= EXHAUSTED_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "dhcp {}: no address for {client}: the range {}-{} is exhausted \
                 ({} DISCOVERs unanswered so far)",
                self.net,
                self.cfg.first,
                self.cfg.last,
                self.counters.snapshot().exhausted
            );
        }
    }

    /// Sends a reply where RFC 2131 §4.1 says: a NAK and a BROADCAST-flagged answer to
    /// everyone, an answer to a configured client (ciaddr) to it, others to the new
    /// address at the client's MAC (no ARP: the client cannot answer for it yet).
    fn send(&self, ctx: &Ctx, req: &Request, ty: MsgType, yiaddr: Ipv4Addr, o: Vec<(u8, Vec<u8>)>) {
        let body = msg::build(req, ty, yiaddr, &o);
        let everyone = (Ipv4Addr::BROADCAST, [0xff; 6]);
        let (ip, mac) = if ty == MsgType::Nak {
            everyone
        } else if !req.ciaddr.is_unspecified() {
            (req.ciaddr, req.chaddr)
        } else if req.flags & msg::FLAG_BROADCAST != 0 {
            everyone
        } else {
            (yiaddr, req.chaddr)
        };
        let ep = ctx.net;
        let mut frame = packet::udp(
            (mac, ep.mac),
            (self.server, msg::SERVER_PORT),
            (ip, msg::CLIENT_PORT),
            &body,
        );
        ctx.switch.emit(ep, &mut frame, ctx.depth);
    }
}

impl Stage for DhcpServer {
    fn order(&self) -> u8 {
        10
    }

    fn input(&self, ctx: &Ctx, packet: &mut [u8], _frame: &Frame, ip: &mut Ipv4) -> Verdict {
        let L4::Udp {
            dport: msg::SERVER_PORT,
            ..
        } = ip.l4_info
        else {
            return Verdict::Continue;
        };
        let ours =
            ip.dst == Ipv4Addr::BROADCAST || ip.dst == self.server || ip.dst == self.broadcast;
        if !ours || ip.fragment {
            return Verdict::Continue;
        }
        // The UDP length, if sane, bounds the message (Ethernet padding follows it).
        let udp_len = packet
            .get(ip.l4 + 4..ip.l4 + 6)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        let end = if udp_len >= 8 {
            ip.end.min(ip.l4 + udp_len)
        } else {
            ip.end
        };
        let parsed = packet.get(ip.l4 + 8..end).map(msg::parse);
        match parsed {
            // Relayed requests are not served: the server is on the clients' segment.
            Some(Ok(req)) if req.giaddr.is_unspecified() => self.answer(ctx, &req),
            _ => bump(&self.counters.malformed),
        }
        Verdict::Consumed
    }
}
