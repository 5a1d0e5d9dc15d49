//! A small vhost-user-net backend for the tests, built on the `vhost-user-backend` crate (no
//! vhost-user-net service is packaged for this machine): it records what the frontend set up,
//! keeps the frames the guest transmits, and delivers frames queued for the guest into its
//! receive buffers, signalling the call eventfd after each batch.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::epoll::EventSet;

pub const HDR_LEN: usize = 12;

/// A queue as the backend sees it: size and the guest addresses of its rings.
pub type Ring = (u16, u64, u64, u64);

pub struct TestNet {
    pub offered: u64,
    pub protocol: VhostUserProtocolFeatures,
    /// What GET_CONFIG answers (the MAC first).
    pub config: Vec<u8>,
    pub mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    pub acked: Option<u64>,
    /// (guest address, size) of each region of the last memory table.
    pub regions: Vec<(u64, u64)>,
    pub rings: [Option<Ring>; 2],
    /// Frames the guest sent, without their header.
    pub sent: Vec<Vec<u8>>,
    /// Frames to put in the guest's receive buffers.
    pub to_guest: VecDeque<Vec<u8>>,
}

impl TestNet {
    pub fn new(offered: u64, protocol: VhostUserProtocolFeatures, config: Vec<u8>) -> TestNet {
        TestNet {
            offered,
            protocol,
            config,
            mem: None,
            acked: None,
            regions: Vec::new(),
            rings: [None; 2],
            sent: Vec::new(),
            to_guest: VecDeque::new(),
        }
    }

    /// Serves one connection on `sock` from another thread.
    pub fn serve(self, sock: &Path) -> Arc<Mutex<TestNet>> {
        let backend = Arc::new(Mutex::new(self));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new("test-net".into(), backend.clone(), mem).unwrap();
        let mut listener = Listener::new(sock, true).unwrap();
        std::thread::spawn(move || {
            if daemon.start(&mut listener).is_ok() {
                let _ = daemon.wait();
            }
        });
        backend
    }

    /// Returns whether it used a buffer.
    fn transmit(&mut self, mem: &GuestMemoryMmap, vring: &VringRwLock) -> bool {
        let mut used = false;
        loop {
            let Some(chain) = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut r = chain.reader(mem).unwrap();
            let mut frame = vec![0; r.available_bytes()];
            r.read_exact(&mut frame).unwrap();
            self.sent
                .push(frame.get(HDR_LEN..).unwrap_or_default().to_vec());
            vring.add_used(head, 0).unwrap();
            used = true;
        }
        used
    }

    /// Returns whether it used a buffer.
    fn receive(&mut self, mem: &GuestMemoryMmap, vring: &VringRwLock) -> bool {
        let mut used = false;
        while let Some(frame) = self.to_guest.front() {
            let Some(chain) = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut w = chain.writer(mem).unwrap();
            let mut hdr = [0u8; HDR_LEN];
            hdr[10] = 1; // num_buffers
            w.write_all(&hdr).unwrap();
            w.write_all(frame).unwrap();
            vring
                .add_used(head, (HDR_LEN + frame.len()) as u32)
                .unwrap();
            self.to_guest.pop_front();
            used = true;
        }
        used
    }
}

impl VhostUserBackendMut for TestNet {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn acked_features(&mut self, features: u64) {
        self.acked = Some(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let start = (offset as usize).min(self.config.len());
        let end = (start + size as usize).min(self.config.len());
        self.config[start..end].to_vec()
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.regions = mem
            .memory()
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        self.mem = Some(mem);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let (Some(atomic), Some(vring)) = (self.mem.clone(), vrings.get(usize::from(device_event)))
        else {
            return Ok(());
        };
        let mem = atomic.memory();
        {
            let state = vring.get_ref();
            let q = state.get_queue();
            self.rings[usize::from(device_event)] =
                Some((q.size(), q.desc_table(), q.avail_ring(), q.used_ring()));
        }
        let used = match device_event {
            0 => self.receive(&mem, vring),
            _ => self.transmit(&mem, vring),
        };
        if used {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}
