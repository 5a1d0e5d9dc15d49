//! Test doubles (a device that records what the transport does to it, an MSI sink that records
//! messages) and a model of Linux's `virtio_pci_modern` driver side, shared by the tests.

use super::caps::{CAP_ID_MSIX, CAP_ID_VENDOR};
use super::*;
use crate::device::{ActivateError, Activation};
use crate::worker::Worker;
use crate::{features, types};
use std::os::fd::AsRawFd;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
use vm_memory::GuestAddress;

pub(super) const BAR0: u64 = 0xe000_0000;
pub(super) const MEM_SIZE: usize = 0x10_0000;
/// Where the tests put their first split ring.
pub(super) const RING0: u64 = 0x1_0000;
pub(super) const STATUS_ACKNOWLEDGE: u8 = 1;
pub(super) const STATUS_DRIVER: u8 = 2;

// Offsets in the common configuration.
pub(super) const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub(super) const DEVICE_FEATURE: u64 = 0x04;
pub(super) const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub(super) const DRIVER_FEATURE: u64 = 0x0c;
pub(super) const MSIX_CONFIG: u64 = 0x10;
pub(super) const NUM_QUEUES: u64 = 0x12;
pub(super) const DEVICE_STATUS: u64 = 0x14;
pub(super) const CONFIG_GENERATION: u64 = 0x15;
pub(super) const QUEUE_SELECT: u64 = 0x16;
pub(super) const QUEUE_SIZE: u64 = 0x18;
pub(super) const QUEUE_MSIX_VECTOR: u64 = 0x1a;
pub(super) const QUEUE_ENABLE: u64 = 0x1c;
pub(super) const QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub(super) const QUEUE_DESC: u64 = 0x20;
pub(super) const QUEUE_DRIVER: u64 = 0x28;
pub(super) const QUEUE_DEVICE: u64 = 0x30;

/// What the fake device saw.
#[derive(Default)]
pub(super) struct Seen {
    /// (features, [(queue index, size)]) per activation.
    pub activations: Vec<(u64, Vec<(u16, u16)>)>,
    pub resets: usize,
    /// The current activation (taken by the test to drive queues and interrupts).
    pub act: Option<Activation>,
    pub config_writes: Vec<(u64, Vec<u8>)>,
}

pub(super) struct FakeDevice {
    pub seen: Arc<Mutex<Seen>>,
    pub device_type: u32,
    pub max_sizes: Vec<u16>,
    pub features: u64,
    pub fail_activate: bool,
    /// Runs a real worker that interrupts queue `i` each time it is notified.
    pub threaded: bool,
    worker: Option<Worker>,
}

impl FakeDevice {
    pub fn new(max_sizes: &[u16]) -> Self {
        Self {
            seen: Arc::default(),
            device_type: types::RNG,
            max_sizes: max_sizes.to_vec(),
            features: features::VERSION_1 | features::RING_EVENT_IDX | 1 << 3,
            fail_activate: false,
            threaded: false,
            worker: None,
        }
    }
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        self.device_type
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_bytes(&[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5], offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        lock(&self.seen).config_writes.push((offset, data.to_vec()));
    }
    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Queues("told to fail".into()));
        }
        let qs = act
            .queues
            .iter()
            .map(|q| (q.index, q.queue.size()))
            .collect();
        if self.threaded {
            let fds: Vec<_> = act.queues.iter().map(|q| q.notify.as_raw_fd()).collect();
            let notify: Vec<_> = act
                .queues
                .iter()
                .map(|q| (q.index, q.notify.try_clone().unwrap()))
                .collect();
            let irq = act.interrupt.clone();
            self.worker = Some(Worker::spawn("fake-virtio", &fds, move |i| {
                if let Some((index, fd)) = notify.get(i) {
                    let _ = fd.read();
                    irq.queue(*index);
                }
            })?);
        }
        let mut s = lock(&self.seen);
        s.activations.push((act.features, qs));
        s.act = Some(act);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        let mut s = lock(&self.seen);
        s.resets += 1;
        s.act = None;
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("resets", lock(&self.seen).resets as u64)]
    }
}

#[derive(Default)]
pub(super) struct RecordingMsi(pub Mutex<Vec<(u64, u32)>>);

impl MsiSink for RecordingMsi {
    fn signal_msi(&self, addr: u64, data: u32) {
        lock(&self.0).push((addr, data));
    }
}

impl RecordingMsi {
    pub fn take(&self) -> Vec<(u64, u32)> {
        std::mem::take(&mut *lock(&self.0))
    }
}

pub(super) fn guest_memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A xorshift generator: reproducible random input without a crate.
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A region a virtio vendor capability points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Region {
    pub bar: u8,
    pub offset: u64,
    pub length: u32,
}

/// The driver side, step by step as Linux's `virtio_pci_modern_probe` and `vp_modern_*` do it.
pub(super) struct Driver {
    pub pci: VirtioPci,
    /// The same guest memory the transport has.
    pub mem: GuestMemory,
    pub msi: Arc<RecordingMsi>,
    pub seen: Arc<Mutex<Seen>>,
    pub common: Region,
    pub notify: Region,
    pub notify_mult: u32,
    pub isr: Region,
    pub device: Region,
    /// Configuration-space offset of the PCI_CFG capability.
    pub pci_cfg: usize,
    pub msix_cap: usize,
    pub table: u64,
    pub pba: u64,
    pub table_size: u16,
}

pub(super) fn cfg_read(pci: &mut VirtioPci, off: usize, len: usize) -> u32 {
    let v = pci.read_config_register(off / 4) >> (8 * (off % 4));
    if len == 4 {
        v
    } else {
        v & ((1 << (8 * len)) - 1)
    }
}

pub(super) fn cfg_write(pci: &mut VirtioPci, off: usize, len: usize, v: u32) {
    let shift = 8 * (off % 4);
    let mask = if len == 4 {
        u32::MAX
    } else {
        (1 << (8 * len)) - 1
    };
    pci.write_config_register(off / 4, v << shift, mask << shift);
}

impl Driver {
    /// Creates the function and walks its capability list.
    pub fn probe(dev: FakeDevice) -> Driver {
        let seen = dev.seen.clone();
        let msi = Arc::new(RecordingMsi::default());
        let mem = guest_memory();
        let mut pci = VirtioPci::new(Box::new(dev), mem.clone(), msi.clone(), None, BAR0).unwrap();
        let mut regions = std::collections::HashMap::new();
        let (mut notify_mult, mut pci_cfg, mut msix_cap) = (0, 0, 0);
        let mut cap = cfg_read(&mut pci, 0x34, 1) as usize;
        let mut hops = 0;
        while cap != 0 {
            hops += 1;
            assert!(hops < 48, "capability list loops");
            let id = cfg_read(&mut pci, cap, 1) as u8;
            if id == CAP_ID_VENDOR {
                let cfg_type = cfg_read(&mut pci, cap + 3, 1) as u8;
                let r = Region {
                    bar: cfg_read(&mut pci, cap + 4, 1) as u8,
                    offset: u64::from(cfg_read(&mut pci, cap + 8, 4)),
                    length: cfg_read(&mut pci, cap + 12, 4),
                };
                match cfg_type {
                    2 => notify_mult = cfg_read(&mut pci, cap + 16, 4),
                    5 => pci_cfg = cap,
                    _ => {}
                }
                // Linux takes the first capability of each type.
                regions.entry(cfg_type).or_insert(r);
            } else if id == CAP_ID_MSIX {
                msix_cap = cap;
            }
            cap = cfg_read(&mut pci, cap + 1, 1) as usize;
        }
        let msix_ctrl = cfg_read(&mut pci, msix_cap + 2, 2);
        let table = cfg_read(&mut pci, msix_cap + 4, 4);
        let pba = cfg_read(&mut pci, msix_cap + 8, 4);
        assert_eq!(table & 7, 0, "table in BAR 0");
        assert_eq!(pba & 7, 0, "PBA in BAR 0");
        Driver {
            pci,
            mem,
            msi,
            seen,
            common: regions[&1],
            notify: regions[&2],
            notify_mult,
            isr: regions[&3],
            device: regions[&4],
            pci_cfg,
            msix_cap,
            table: u64::from(table),
            pba: u64::from(pba),
            table_size: (msix_ctrl & 0x7ff) as u16 + 1,
        }
    }

    pub fn read(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.pci.read(off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    pub fn write(&mut self, off: u64, len: usize, v: u64) {
        self.pci.write(off, &v.to_le_bytes()[..len]);
    }

    pub fn common_read(&mut self, field: u64, len: usize) -> u64 {
        self.read(self.common.offset + field, len)
    }

    pub fn common_write(&mut self, field: u64, len: usize, v: u64) {
        self.write(self.common.offset + field, len, v)
    }

    pub fn status(&mut self) -> u8 {
        self.common_read(DEVICE_STATUS, 1) as u8
    }

    /// `virtio_add_status`: read, OR, write.
    pub fn add_status(&mut self, bits: u8) {
        let s = self.status();
        self.common_write(DEVICE_STATUS, 1, u64::from(s | bits));
    }

    pub fn device_features(&mut self) -> u64 {
        self.common_write(DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.common_read(DEVICE_FEATURE, 4);
        self.common_write(DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.common_read(DEVICE_FEATURE, 4);
        lo | hi << 32
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; whether the device kept FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.common_write(DEVICE_STATUS, 1, 0);
        assert_eq!(self.status(), 0);
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        self.common_write(DRIVER_FEATURE_SELECT, 4, 0);
        self.common_write(DRIVER_FEATURE, 4, features & 0xffff_ffff);
        self.common_write(DRIVER_FEATURE_SELECT, 4, 1);
        self.common_write(DRIVER_FEATURE, 4, features >> 32);
        self.add_status(common::STATUS_FEATURES_OK);
        self.status() & common::STATUS_FEATURES_OK != 0
    }

    /// `pci_msix_clear_and_set_ctrl` with `enable`/`mask_all`.
    pub fn msix_control(&mut self, enable: bool, mask_all: bool) {
        let v = u32::from(enable) << 15 | u32::from(mask_all) << 14;
        cfg_write(&mut self.pci, self.msix_cap + 2, 2, v);
    }

    pub fn program_vector(&mut self, v: u16, addr: u64, data: u32, masked: bool) {
        let e = self.table + u64::from(v) * 16;
        self.write(e, 4, addr & 0xffff_ffff);
        self.write(e + 4, 4, addr >> 32);
        self.write(e + 8, 4, u64::from(data));
        self.write(e + 12, 4, u64::from(masked));
    }

    pub fn set_vector_masked(&mut self, v: u16, masked: bool) {
        self.write(self.table + u64::from(v) * 16 + 12, 4, u64::from(masked));
    }

    pub fn pba_bits(&mut self) -> u64 {
        self.read(self.pba, 8)
    }

    /// `vp_modern_find_vqs`-style setup of queue `q`; returns the vector read back.
    pub fn setup_queue(&mut self, q: u16, size: u16, rings: (u64, u64, u64), vector: u16) -> u16 {
        self.common_write(QUEUE_SELECT, 2, u64::from(q));
        assert_ne!(self.common_read(QUEUE_SIZE, 2), 0, "queue {q} exists");
        assert_eq!(self.common_read(QUEUE_ENABLE, 2), 0);
        self.common_write(QUEUE_SIZE, 2, u64::from(size));
        // vp_iowrite64_twopart: low dword, then high.
        for (field, addr) in [
            (QUEUE_DESC, rings.0),
            (QUEUE_DRIVER, rings.1),
            (QUEUE_DEVICE, rings.2),
        ] {
            self.common_write(field, 4, addr & 0xffff_ffff);
            self.common_write(field + 4, 4, addr >> 32);
        }
        self.common_write(QUEUE_MSIX_VECTOR, 2, u64::from(vector));
        self.common_read(QUEUE_MSIX_VECTOR, 2) as u16
    }

    pub fn enable_queue(&mut self, q: u16) {
        self.common_write(QUEUE_SELECT, 2, u64::from(q));
        self.common_write(QUEUE_ENABLE, 2, 1);
    }

    /// The address (in BAR 0) at which queue `q` is notified.
    pub fn notify_offset(&mut self, q: u16) -> u64 {
        self.common_write(QUEUE_SELECT, 2, u64::from(q));
        let off = self.common_read(QUEUE_NOTIFY_OFF, 2);
        self.notify.offset + off * u64::from(self.notify_mult)
    }

    /// `vp_notify`: a 16-bit write of the queue index.
    pub fn kick(&mut self, q: u16) {
        let at = self.notify_offset(q);
        self.write(at, 2, u64::from(q));
    }
}

/// Lays out a split ring of `size` at `at`: (descriptor table, driver area, device area).
pub(super) fn rings(mem: &GuestMemory, at: u64, size: u16) -> (u64, u64, u64) {
    let m = MockSplitQueue::create(mem, GuestAddress(at), size);
    (m.desc_table_addr().0, m.avail_addr().0, m.used_addr().0)
}

/// Negotiates VERSION_1, programs every MSI-X vector (address 0xfee0_0000, data 0x40 + v),
/// sets up and enables `sizes.len()` queues (queue q on vector q + 1) and sets DRIVER_OK.
pub(super) fn bring_up(d: &mut Driver, sizes: &[u16]) {
    assert!(d.negotiate(features::VERSION_1));
    d.msix_control(true, false);
    for v in 0..d.table_size {
        d.program_vector(v, 0xfee0_0000, 0x40 + u32::from(v), false);
    }
    d.common_write(MSIX_CONFIG, 2, 0);
    let mem = d.mem.clone();
    for (q, &size) in sizes.iter().enumerate() {
        let r = rings(&mem, RING0 + q as u64 * 0x1_0000, size);
        d.setup_queue(q as u16, size, r, q as u16 + 1);
        d.enable_queue(q as u16);
    }
    d.add_status(common::STATUS_DRIVER_OK);
    // Activation looks at every enabled queue once (for buffers posted before DRIVER_OK);
    // tests that count notifications start from zero.
    if d.pci.is_active() {
        for q in 0..sizes.len() as u16 {
            assert_eq!(d.pci.notify_eventfd(q).unwrap().read().unwrap(), 1);
        }
    }
}
