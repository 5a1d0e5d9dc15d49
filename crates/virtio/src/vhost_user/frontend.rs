//! The frontend core shared by the vhost-user devices: the negotiated connection, activation
//! (features, memory table, rings, call forwarding) and reset (stopping the rings).

use super::calls::{CallState, Counters, ShadowMemory, UsedWatcher};
use super::conn::{Connection, PROTOCOL_FEATURES};
use super::rings::{memory_table, vring_config};
use super::{VhostUserError, QUEUE_SIZE};
use crate::worker::Worker;
use crate::{ActivateError, Activation};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

/// The rings the backend serves, and the worker forwarding their calls.
struct Running {
    worker: Worker,
    calls: Arc<Mutex<CallState>>,
    queues: Vec<u16>,
}

pub(crate) struct UserDevice {
    /// "vhost-user-blk", ...: the worker's name and the log's.
    name: &'static str,
    pub(crate) conn: Connection,
    max_sizes: Vec<u16>,
    /// Offered to the driver.
    features: u64,
    counters: Arc<Counters>,
    running: Option<Running>,
}

impl UserDevice {
    /// Connects to the backend for a device of `queues` queues; each reply may take up to
    /// `timeout`.
    pub(crate) fn connect(
        name: &'static str,
        socket: &Path,
        queues: usize,
        timeout: Duration,
    ) -> Result<UserDevice, VhostUserError> {
        Ok(UserDevice {
            name,
            conn: Connection::open_with_timeout(socket, queues, timeout)?,
            max_sizes: vec![QUEUE_SIZE; queues],
            features: 0,
            counters: Arc::default(),
            running: None,
        })
    }

    /// Offers the driver what the backend offers of `supported`, plus `local` (bits the
    /// frontend implements itself, such as net's MAC in our configuration space).
    pub(crate) fn set_features(&mut self, supported: u64, local: u64) {
        self.features = (self.conn.backend_features() & supported & !PROTOCOL_FEATURES) | local;
    }

    pub(crate) fn features(&self) -> u64 {
        self.features
    }

    pub(crate) fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    pub(crate) fn count_error(&self) {
        Counters::add(&self.counters.errors, 1);
    }

    pub(crate) fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        self.reset();
        if act.queues.is_empty() {
            return Err(ActivateError::Queues(format!(
                "{}: no queue enabled",
                self.name
            )));
        }
        if let Some(q) = act
            .queues
            .iter()
            .find(|q| usize::from(q.index) >= self.max_sizes.len())
        {
            return Err(ActivateError::Queues(format!(
                "{}: no queue {}",
                self.name, q.index
            )));
        }
        let mut started = Vec::new();
        match self.start(act, &mut started) {
            Ok(running) => {
                self.running = Some(running);
                Ok(())
            }
            Err(e) => {
                self.count_error();
                tracing::warn!("{}: activation failed: {e}", self.name);
                self.stop_rings(&started);
                Err(e.into())
            }
        }
    }

    /// Hands memory and rings to the backend; `started` collects the rings it may be serving.
    fn start(
        &mut self,
        act: Activation,
        started: &mut Vec<u16>,
    ) -> Result<Running, VhostUserError> {
        let Activation {
            mem,
            queues,
            interrupt,
            features,
            writes,
        } = act;
        let conn = &mut self.conn;
        let protocol = conn.has_protocol_features();
        // Bits we emulate (and the driver accepted) are not the backend's to see.
        let mut acked = features & conn.backend_features();
        if protocol {
            acked |= PROTOCOL_FEATURES;
        }
        conn.request("SET_FEATURES", |fe| fe.set_features(acked))?;
        let table = memory_table(&mem)?;
        conn.request("SET_MEM_TABLE", |fe| fe.set_mem_table(&table).map(drop))?;
        let shadow = ShadowMemory::new(&mem)?;
        let mut forwarders = Vec::new();
        for q in queues {
            let i = usize::from(q.index);
            let ring = vring_config(&mem, q.index, &q.queue)?;
            conn.request("SET_VRING_NUM", |fe| fe.set_vring_num(i, q.queue.size()))?;
            conn.request("SET_VRING_ADDR", |fe| fe.set_vring_addr(i, &ring))?;
            let base = q.queue.next_avail();
            conn.request("SET_VRING_BASE", |fe| fe.set_vring_base(i, base))?;
            let call = EventFd::new(libc::EFD_NONBLOCK)?;
            conn.request("SET_VRING_CALL", |fe| fe.set_vring_call(i, &call))?;
            // Before the kick: from then on the backend may return buffers.
            let watcher = UsedWatcher::new(q.index, &q.queue, &shadow)?;
            started.push(q.index);
            // The transport's notify eventfd (the KVM ioeventfd) becomes the backend's kick:
            // driver notifications reach the backend without passing through the VMM.
            conn.request("SET_VRING_KICK", |fe| fe.set_vring_kick(i, &q.notify))?;
            if protocol {
                conn.request("SET_VRING_ENABLE", |fe| fe.set_vring_enable(i, true))?;
            }
            forwarders.push((call, watcher));
        }
        let fds: Vec<_> = forwarders
            .iter()
            .map(|(call, _)| call.as_raw_fd())
            .collect();
        let calls = Arc::new(Mutex::new(CallState {
            mem: shadow,
            writes,
            queues: forwarders,
            counters: self.counters.clone(),
        }));
        let state = calls.clone();
        let worker = Worker::spawn(self.name, &fds, move |i| {
            CallState::lock(&state).on_call(i, interrupt.as_ref());
        })?;
        tracing::debug!(device = self.name, queues = ?started, "vhost-user rings started");
        Ok(Running {
            worker,
            calls,
            queues: started.clone(),
        })
    }

    /// Stops the backend's rings, then the worker, and reports what the backend returned
    /// after the last call it sent: when this returns the backend no longer serves the guest.
    pub(crate) fn reset(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        self.stop_rings(&running.queues);
        running.worker.stop();
        CallState::lock(&running.calls).drain();
    }

    /// GET_VRING_BASE stops a ring (the backend answers once it no longer uses it). Failures
    /// are only logged: a backend that is gone serves nothing.
    fn stop_rings(&mut self, queues: &[u16]) {
        if self.conn.is_broken() && !queues.is_empty() {
            self.count_error();
            tracing::warn!(
                "{}: backend gone; its rings are not stopped cleanly",
                self.name
            );
            return;
        }
        let protocol = self.conn.has_protocol_features();
        for &index in queues {
            let i = usize::from(index);
            if protocol {
                if let Err(e) = self
                    .conn
                    .request("SET_VRING_ENABLE", |fe| fe.set_vring_enable(i, false))
                {
                    self.count_error();
                    tracing::warn!("{}: {e}", self.name);
                }
            }
            match self
                .conn
                .request("GET_VRING_BASE", |fe| fe.get_vring_base(i))
            {
                Ok(base) => {
                    tracing::debug!(device = self.name, queue = index, base, "ring stopped")
                }
                Err(e) => {
                    self.count_error();
                    tracing::warn!("{}: {e}", self.name);
                }
            }
        }
    }

    pub(crate) fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("interrupts", c.interrupts.load(Relaxed)),
            ("used_entries", c.used_entries.load(Relaxed)),
            ("errors", c.errors.load(Relaxed)),
            ("backend_connected", u64::from(self.conn.is_connected())),
            // GET_QUEUE_NUM's answer (0 without MQ): how many the backend could serve.
            ("backend_queues", self.conn.queue_num().unwrap_or(0)),
        ]
    }
}

impl Drop for UserDevice {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.worker.stop();
        }
    }
}
