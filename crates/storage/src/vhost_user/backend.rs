//! The virtio-blk device behind one frontend connection, as `vhost-user-backend` drives it:
//! feature and configuration queries answered from [`super::config`], and the request queues
//! served on their worker threads, one thread per queue so that a multi-queue guest's CPUs
//! submit in parallel.

use super::config::{self, MAX_QUEUE_SIZE};
use super::exec::{execute, Target};
use super::request::{parse, write_stream, Mem, Parsed, Segment};
use super::Served;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vireo_virtio::vhost_user::session::{config_slice, stop_event};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;

pub type Vring = VringRwLock<GuestMemoryAtomic<Mem>>;

/// A queue's data buffer is given back to the allocator after a request larger than this, so
/// an idle backend does not hold a guest's largest request per queue.
const KEEP_SCRATCH: usize = 4 << 20;

pub struct BlkBackend {
    served: Arc<Served>,
    /// The frontend's memory: the same object the daemon updates on SET_MEM_TABLE.
    mem: GuestMemoryAtomic<Mem>,
    event_idx: AtomicBool,
    /// Per queue (and so per worker thread): the buffer data goes through.
    scratch: Vec<Mutex<Vec<u8>>>,
}

impl BlkBackend {
    pub fn new(served: Arc<Served>, mem: GuestMemoryAtomic<Mem>) -> BlkBackend {
        let scratch = (0..served.num_queues).map(|_| Mutex::default()).collect();
        BlkBackend {
            served,
            mem,
            event_idx: AtomicBool::new(false),
            scratch,
        }
    }

    /// Serves the available requests of one queue. With EVENT_IDX the driver is asked not to
    /// kick while we work, and the queue is looked at once more after re-enabling kicks, so
    /// that a request made in between is not missed.
    pub fn serve_vring(&self, vring: &Vring, queue_index: usize) {
        let mem = self.mem.memory();
        let mut scratch = match self.scratch.get(queue_index) {
            Some(s) => s.lock().unwrap_or_else(|e| e.into_inner()),
            None => return,
        };
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let mut state = vring.get_mut();
        let mut idle_rounds = 0;
        loop {
            if event_idx {
                if let Err(e) = state.disable_notification() {
                    tracing::warn!("vhost-user-blk: queue {queue_index} is broken: {e}");
                    return;
                }
            }
            let taken = serve_queue(state.get_queue_mut(), &mem, &self.target(), &mut scratch);
            if taken > 0 {
                match state.needs_notification() {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Err(e) = state.signal_used_queue() {
                            tracing::warn!("vhost-user-blk: cannot interrupt the guest: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("vhost-user-blk: queue {queue_index}: {e}"),
                }
            }
            if !event_idx {
                break;
            }
            // Requests made while kicks were off get another round. A driver that claims
            // requests it never makes (an available index the ring cannot hold) would keep
            // this going forever: two rounds in a row without a request end it.
            idle_rounds = if taken == 0 { idle_rounds + 1 } else { 0 };
            match state.enable_notification() {
                Ok(true) if idle_rounds < 2 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("vhost-user-blk: queue {queue_index} is broken: {e}");
                    break;
                }
            }
        }
        if scratch.capacity() > KEEP_SCRATCH {
            *scratch = Vec::new();
        }
    }

    fn target(&self) -> Target<'_> {
        Target {
            dev: &*self.served.dev,
            id: &self.served.id,
            counters: &self.served.counters,
        }
    }
}

/// Serves every available chain of `queue`; returns how many it took.
pub fn serve_queue(queue: &mut Queue, mem: &Mem, t: &Target, scratch: &mut Vec<u8>) -> usize {
    let mut taken = 0;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        taken += 1;
        let head = chain.head_index();
        let used = serve_chain(mem, chain, t, scratch);
        // Fails only for a head index outside the table, which the driver made up.
        if let Err(e) = queue.add_used(mem, head, used) {
            tracing::debug!("vhost-user-blk: cannot return chain {head}: {e}");
        }
    }
    taken
}

/// Parses and executes one chain; returns the used length (data written, plus the status
/// byte).
fn serve_chain(
    mem: &Mem,
    chain: virtio_queue::DescriptorChain<&Mem>,
    t: &Target,
    scratch: &mut Vec<u8>,
) -> u32 {
    let (status, written, outcome) = match parse(mem, chain) {
        Parsed::NoStatus(why) => {
            t.counters.errors.add(1);
            tracing::debug!("vhost-user-blk: dropped a chain: {why}");
            return 0;
        }
        Parsed::Malformed { status, why } => {
            t.counters.errors.add(1);
            tracing::debug!("vhost-user-blk: malformed request: {why}");
            (status, 0, super::exec::S_IOERR)
        }
        Parsed::Request(req) => {
            let o = execute(mem, &req, t, scratch);
            (req.status, o.written, o.status)
        }
    };
    let seg = [Segment {
        addr: status,
        len: 1,
    }];
    // The parser checked that the status byte is guest memory.
    match write_stream(mem, &seg, &[outcome]) {
        Ok(()) => written.saturating_add(1),
        Err(()) => 0,
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.served.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        config::features(self.served.dev.read_only())
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_slice(&self.served.config, offset, size)
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // Nothing in the layout is writable without CONFIG_WCE, which is not offered. An
        // error here would end the connection, so the write is ignored.
        tracing::debug!(
            offset,
            len = buf.len(),
            "vhost-user-blk: ignored a configuration write"
        );
        Ok(())
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<Mem>) -> io::Result<()> {
        // `self.mem` is the daemon's own GuestMemoryAtomic, which it has just updated.
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.served.num_queues).map(|i| 1u64 << i).collect()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        // Worker `thread_id` owns exactly queue `thread_id` (see queues_per_thread), so its
        // events are 0, that queue's kick, and the session's stop event. An error ends the
        // worker: that is how it is stopped, and why queue problems are logged instead.
        if u64::from(device_event) == stop_event(self.num_queues()) {
            return Err(io::Error::other("the session is over"));
        }
        if !evset.contains(EventSet::IN) {
            return Ok(());
        }
        if let Some(vring) = vrings.get(usize::from(device_event)) {
            self.serve_vring(vring, thread_id);
        }
        Ok(())
    }
}
