//! A port: its link (a tap whose far end is a VM or a network namespace, or a vhost-user
//! socket a VM's frontend connects to), the thread that reads its frames and hands them to
//! the switch, its counters and its QoS (rate limit, impairment).
//!
//! Frames keep their 12-byte virtio-net header from tap to tap, so a 64 KiB TSO frame the
//! sender's stack hands one tap reaches the other unsegmented and with its checksum still
//! to be done, as between two VMs on a host: that is what makes the switch cheap per byte.
//! Writing into a tap is one `writev` per frame, atomic, so ports' threads need no lock to
//! share a destination.

use super::endpoint::NetEndpoint;
use super::frame::{self, Frame, MACS_LEN, VLAN_TAG_LEN};
use super::impair::Impair;
use super::switch::Switch;
use super::tx_batch;
use super::vhost_user::VhostUserLink;
use super::{PortConfig, PortStats, PortVlan};
use crate::error::{NetError, Result};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vireo_virtio::net::{Tap, MAX_PACKET_LEN, VNET_HDR_LEN};
use vireo_virtio::rate_limiter::TokenBucket;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Frames a port's thread reads in a row before polling again.
const BATCH: usize = 128;

/// The timer slack of a port's thread, so that its rests (see [`run_tap`]) are not stretched
/// by the default 50 µs.
const REST_SLACK_NS: libc::c_ulong = 1_000;

#[derive(Default)]
pub struct Counters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: AtomicU64,
}

impl Counters {
    /// A packet read from the tap (counted with its frame length, header excluded).
    pub fn received(&self, packet_len: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        let len = packet_len.saturating_sub(VNET_HDR_LEN) as u64;
        self.rx_bytes.fetch_add(len, Relaxed);
    }

    pub fn snapshot(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            drops: self.drops.load(Relaxed),
            ..PortStats::default()
        }
    }
}

pub struct Port {
    pub id: u32,
    pub net_id: u32,
    pub config: PortConfig,
    /// The port's VLANs, an access port's resolved against its network's.
    pub vlan: PortVlan,
    /// The endpoint of the port's network.
    pub endpoint: Arc<NetEndpoint>,
    pub counters: Counters,
    link: Link,
    /// Ingress shaping: frames from the tap wait for tokens (bytes). `None`: unlimited.
    qos: Mutex<Option<TokenBucket>>,
    /// Whether `qos` holds a bucket: unshaped ports (the usual case) skip its lock per frame.
    shaped: AtomicBool,
    /// Ingress impairment (delay, jitter, loss); its own fast-path flag inside.
    pub impair: Impair,
    origin: Instant,
    stop: EventFd,
}

/// What carries a port's frames. The switch only ever calls [`Port::send`] and
/// [`Port::drop_frame`]: it does not know which link is behind a port.
pub enum Link {
    Tap(Tap),
    VhostUser(VhostUserLink),
}

impl Port {
    pub fn new(
        id: u32,
        net_id: u32,
        config: PortConfig,
        vlan: PortVlan,
        endpoint: Arc<NetEndpoint>,
        link: Link,
    ) -> io::Result<Port> {
        Ok(Port {
            id,
            net_id,
            config,
            vlan,
            endpoint,
            counters: Counters::default(),
            link,
            qos: Mutex::new(None),
            shaped: AtomicBool::new(false),
            impair: Impair::new(id),
            origin: Instant::now(),
            stop: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The counters, and a vhost-user link's connection state.
    pub fn stats(&self) -> PortStats {
        let mut s = self.counters.snapshot();
        if let Link::VhostUser(v) = &self.link {
            s.connected = Some(v.connected());
            s.connections = Some(v.connections());
        }
        s
    }

    pub fn set_qos(&self, bucket: Option<TokenBucket>) {
        let mut qos = self.qos.lock().unwrap_or_else(|e| e.into_inner());
        self.shaped.store(bucket.is_some(), Relaxed);
        *qos = bucket;
    }

    /// Asks the forwarding thread to return.
    pub fn stop(&self) {
        if let Err(e) = self.stop.write(1) {
            tracing::error!("port {}: cannot stop its thread: {e}", self.config.name);
        }
        if let Link::VhostUser(v) = &self.link {
            v.stop();
        }
        self.impair.stop();
    }

    /// Waits up to `d` for the port to be stopped; true if it was.
    pub fn stopped_within(&self, d: Duration) -> bool {
        matches!(wait(None, self.stop.as_raw_fd(), Some(d)), Ok(Woken::Stop))
    }

    pub fn drop_frame(&self, why: &str) {
        self.counters.drops.fetch_add(1, Relaxed);
        tracing::trace!("port {}: dropped a frame: {why}", self.config.name);
    }

    /// Writes a frame out of this port, tagged with `tag` or untagged, whatever it had.
    pub fn send(self: &Arc<Self>, packet: &[u8], frame: &Frame, tag: Option<u16>) {
        let rest_at = frame.rest_offset();
        let (Some(hdr), Some(macs), Some(rest)) = (
            packet.get(..VNET_HDR_LEN),
            packet.get(VNET_HDR_LEN..VNET_HDR_LEN + MACS_LEN),
            packet.get(rest_at..),
        ) else {
            return self.drop_frame("short frame");
        };
        let delta: i32 = match (frame.vlan.is_some(), tag.is_some()) {
            (false, true) => VLAN_TAG_LEN as i32,
            (true, false) => -(VLAN_TAG_LEN as i32),
            _ => 0,
        };
        if delta == 0 && frame.vlan == tag {
            // The frame leaves as it came: one buffer.
            return self.transmit(&[packet]);
        }
        let Some(new_hdr) = frame::shift_vnet_hdr(hdr, delta) else {
            return self.drop_frame("offload offsets inside the Ethernet header");
        };
        match tag {
            Some(vid) => {
                let mut t = [0u8; VLAN_TAG_LEN];
                t[..2].copy_from_slice(&frame::TPID_8021Q.to_be_bytes());
                t[2..].copy_from_slice(&vid.to_be_bytes());
                self.transmit(&[&new_hdr, macs, &t, rest])
            }
            None => self.transmit(&[&new_hdr, macs, rest]),
        }
    }

    /// Hands the frame made of `parts` to the link: staged in the thread's batch of tap
    /// writes (see [`tx_batch`]) or written at once.
    fn transmit(self: &Arc<Self>, parts: &[&[u8]]) {
        let written = match &self.link {
            Link::VhostUser(v) => v.send(parts),
            Link::Tap(tap) => {
                if tx_batch::stage(self, tap.as_raw_fd(), parts) {
                    return;
                }
                let mut iov = [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 4];
                for (v, p) in iov.iter_mut().zip(parts) {
                    *v = libc::iovec {
                        iov_base: p.as_ptr() as *mut libc::c_void,
                        iov_len: p.len(),
                    };
                }
                let n = parts.len().min(iov.len());
                // SAFETY: each iovec describes one of `parts`, borrowed for the whole call.
                unsafe { tap.writev(&iov[..n]) }
            }
        };
        self.written(written);
    }

    /// Counts the outcome of writing one frame out of the port.
    pub(super) fn written(&self, result: io::Result<usize>) {
        match result {
            Ok(n) => {
                self.counters.tx_packets.fetch_add(1, Relaxed);
                let len = n.saturating_sub(VNET_HDR_LEN) as u64;
                self.counters.tx_bytes.fetch_add(len, Relaxed);
            }
            // The far end's link is down, or its queue is full: the frame is lost, as on a
            // wire.
            Err(e) => {
                tracing::trace!("port {}: {e}", self.config.name);
                self.drop_frame("the link refused the frame")
            }
        }
    }

    /// How long the frame of `len` bytes must wait for QoS tokens; zero when it may go (its
    /// tokens are then taken).
    fn shape(&self, len: usize) -> Duration {
        if !self.shaped.load(Relaxed) {
            return Duration::ZERO;
        }
        let mut qos = self.qos.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = qos.as_mut() else {
            return Duration::ZERO;
        };
        let tokens = len.saturating_sub(VNET_HDR_LEN) as u64;
        match bucket.try_take(tokens, self.origin.elapsed()) {
            Ok(()) => Duration::ZERO,
            Err(wait) => wait,
        }
    }
}

/// The port's link, as logs name it.
pub fn describe(cfg: &PortConfig) -> String {
    match &cfg.vhost_user {
        Some(path) => format!("vhost-user {}", path.display()),
        None => format!("tap {}", cfg.tap),
    }
}

/// Refuses `cfg` if it names the link of `existing`.
pub fn check_link_conflict(existing: &Port, cfg: &PortConfig) -> Result<()> {
    let taken = match (&existing.link, &cfg.vhost_user) {
        (Link::Tap(t), None) => existing.config.tap == cfg.tap || t.name() == cfg.tap,
        (Link::VhostUser(v), Some(path)) => {
            existing.config.vhost_user.as_ref() == Some(path) || v.path() == path.as_path()
        }
        _ => false,
    };
    if taken {
        return Err(NetError::Conflict(format!(
            "{} is already port {:?}",
            describe(cfg),
            existing.config.name
        )));
    }
    Ok(())
}

/// Opens the link `cfg` asks for: exactly one of a tap and a vhost-user socket.
pub fn open_link(cfg: &PortConfig) -> Result<Link> {
    match (&cfg.vhost_user, cfg.tap.is_empty()) {
        (None, false) => super::open_tap(&cfg.tap).map(Link::Tap),
        (Some(path), true) => {
            let mac = match &cfg.mac {
                Some(m) => super::parse_mac(m)?,
                // Stable across restarts; network names cannot hold a `:`, so no endpoint
                // has this one.
                None => super::endpoint::mac_for(&format!("port:{}", cfg.name)),
            };
            VhostUserLink::bind(path, mac)
                .map(Link::VhostUser)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists | io::ErrorKind::AddrInUse => {
                        NetError::Conflict(e.to_string())
                    }
                    _ => NetError::Io {
                        context: format!(
                            "port {:?}: cannot listen on {}",
                            cfg.name,
                            path.display()
                        ),
                        source: e,
                    },
                })
        }
        (Some(_), false) => Err(NetError::Invalid(format!(
            "port {:?}: give either a tap or a vhost-user socket, not both",
            cfg.name
        ))),
        (None, true) => Err(NetError::Invalid(format!(
            "port {:?}: give a tap (--tap NAME) or a vhost-user socket (--vhost-user PATH)",
            cfg.name
        ))),
    }
}

/// What a wait on the tap and the stop event ended with.
enum Woken {
    Stop,
    Ready,
}

/// Waits until the tap is readable (if `tap`), the stop event fires, or `timeout` passes.
fn wait(tap: Option<RawFd>, stop: RawFd, timeout: Option<Duration>) -> io::Result<Woken> {
    let mut fds = [
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: tap.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: fds and the timespec outlive the call; the kernel writes only revents.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if fds[0].revents != 0 {
        return Ok(Woken::Stop);
    }
    Ok(Woken::Ready)
}

/// The port's thread: until stopped, forwards what its link receives.
pub fn run(port: Arc<Port>, switch: Arc<Switch>) {
    match &port.link {
        Link::Tap(tap) => run_tap(&port, tap, &switch),
        Link::VhostUser(v) => v.serve(&port, &switch),
    }
}

/// A tap port's loop: reads frames in batches and forwards them.
///
/// After a batch of small frames that left the tap still holding more, the thread rests as
/// long as the batch took. A tap gives its sender no back-pressure (the kernel drops when
/// its queue is full), so a UDP sender that outruns the switch would keep this thread busy
/// without end. The scheduler then shares the two cores of a small host evenly between
/// three busy threads (sender, port, receiver). The receiver is starved, its socket
/// overflows, and the frames we paid to forward are dropped. Resting half the time when
/// flooded leaves the receiver room to drain what we wrote, and keeps this thread one that
/// sleeps and wakes, which the scheduler places beside the receiver it feeds. Measured with
/// 64-byte UDP (docs/performance.md): about 150k packets/s without rests, 240k with them.
/// A batch with a TSO frame is a TCP flow, which the receiver's window already paces, and a
/// shaped port is paced by its tokens: neither rests.
fn run_tap(port: &Arc<Port>, tap: &Tap, switch: &Switch) {
    // One buffer for the port's life: no allocation per frame. One byte more than the
    // largest packet tells a truncated read from a full-size one.
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let stop = port.stop.as_raw_fd();
    let fd = tap.as_raw_fd();
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only this thread.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, REST_SLACK_NS) } != 0 {
        tracing::debug!("port {}: timer slack unchanged", port.config.name);
    }
    let mut rest = None;
    loop {
        // While resting, only the stop event ends the wait early.
        match wait(rest.is_none().then_some(fd), stop, rest) {
            Ok(Woken::Stop) => return,
            Ok(Woken::Ready) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("port {}: poll failed, stopping: {e}", port.config.name);
                return;
            }
        }
        let start = Instant::now();
        let batch = {
            let _batching = tx_batch::begin();
            forward_batch(port, tap, switch, &mut buf)
        };
        rest = None;
        match batch {
            Batch::Full { small } => {
                if small && !port.shaped.load(Relaxed) {
                    rest = Some(start.elapsed());
                }
            }
            Batch::Drained => {}
            Batch::Stopped => return,
            Batch::TapGone(e) => {
                // The tap is gone (deleted, or its namespace was): it would poll readable
                // for ever. Forward nothing more; wait for the port's removal.
                tracing::warn!(
                    "port {}: reading the tap: {e}; the port forwards nothing until removed",
                    port.config.name
                );
                while !matches!(wait(None, stop, None), Ok(Woken::Stop)) {}
                return;
            }
        }
    }
}

/// How a batch of reads from a tap ended.
enum Batch {
    /// BATCH frames read: the tap may hold more. `small`: none was larger than what
    /// [`tx_batch`] stages (no TSO frame among them).
    Full { small: bool },
    /// The tap had no more.
    Drained,
    /// The port was stopped while a frame waited for QoS tokens.
    Stopped,
    /// Reading failed for good.
    TapGone(io::Error),
}

/// Reads up to BATCH frames from the tap and forwards each.
fn forward_batch(port: &Arc<Port>, tap: &Tap, switch: &Switch, buf: &mut [u8]) -> Batch {
    let mut read = 0;
    let mut small = true;
    while read < BATCH {
        let n = match tap.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Batch::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Batch::TapGone(e),
        };
        read += 1;
        small &= n <= tx_batch::SMALL;
        if !ingress(port, switch, buf.get_mut(..n).unwrap_or(&mut [])) {
            return Batch::Stopped;
        }
    }
    Batch::Full { small }
}

/// A frame the port received, on its way into the switch: rate limit (waiting for tokens),
/// then impairment (loss, delay), then forwarding. False if the port was stopped meanwhile.
pub fn ingress(port: &Port, switch: &Switch, packet: &mut [u8]) -> bool {
    loop {
        let delay = port.shape(packet.len());
        if delay.is_zero() {
            break;
        }
        // What the batch holds should not wait with this frame.
        tx_batch::flush();
        if port.stopped_within(delay) {
            return false;
        }
    }
    if port.impair.active() && port.impair.hold(port, packet) {
        return true;
    }
    switch.forward(port, packet);
    true
}
