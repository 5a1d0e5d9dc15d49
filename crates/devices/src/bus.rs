//! Address-decoded buses: one for x86 port I/O, one for MMIO.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers reads and writes in an address range of a bus.
///
/// `offset` is relative to the base the device was inserted at. `data.len()` is the access size
/// (1, 2, 4 or 8 bytes, as the guest chose): a device must answer any size without panicking.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Splits a read into byte reads of consecutive registers, as the ISA bus does for an 8-bit
/// device (a 16-bit `in` from port 0x70 reads 0x70 and 0x71). Offsets that would wrap read 0xff.
pub fn split_read(offset: u64, data: &mut [u8], mut read_byte: impl FnMut(u64) -> u8) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset.checked_add(i as u64).map_or(0xff, &mut read_byte);
    }
}

/// Splits a write into byte writes of consecutive registers; see [`split_read`].
pub fn split_write(offset: u64, data: &[u8], mut write_byte: impl FnMut(u64, u8)) {
    for (i, &b) in data.iter().enumerate() {
        if let Some(o) = offset.checked_add(i as u64) {
            write_byte(o, b);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping ranges, each owned by one device.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        if let Some((b, e)) = self.ranges.range(..end).next_back() {
            if b + e.len > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.ranges.insert(base, Entry { len, dev });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &Entry)> {
        let (base, e) = self.ranges.range(..=addr).next_back()?;
        (addr - base < e.len).then_some((addr - base, e))
    }

    /// Dispatches a read; returns false (and leaves `data` all-ones) when nothing is mapped.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((off, e)) => {
                lock(&e.dev).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false when nothing is mapped (the write is dropped).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((off, e)) => {
                lock(&e.dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a panic in one access must not wedge the VM.
fn lock(dev: &Arc<Mutex<dyn BusDevice>>) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let mut bus = Bus::new();
        bus.insert(0x10, 8, Arc::new(Mutex::new(Echo(1)))).unwrap();
        bus.insert(0x18, 8, Arc::new(Mutex::new(Echo(5)))).unwrap();
        assert!(bus.insert(0x14, 8, Arc::new(Mutex::new(Echo(0)))).is_err());
        assert!(bus.insert(0x8, 9, Arc::new(Mutex::new(Echo(0)))).is_err());
        assert!(bus.insert(0, 0, Arc::new(Mutex::new(Echo(0)))).is_err());
        let mut b = [0u8; 1];
        assert!(bus.read(0x12, &mut b));
        assert_eq!(b[0], 3);
        assert!(bus.write(0x1f, &[9]));
        assert!(bus.read(0x18, &mut b));
        assert_eq!(b[0], 9);
        assert!(!bus.read(0x20, &mut b));
        assert_eq!(b[0], 0xff);
    }
}
