//! A backing device of a pool: a file or block device, locked while the pool is open, with
//! a label in its first sector naming the pool it belongs to. Data starts at 1 MiB.

use super::alloc::SECTOR;
use super::types::Tier;
use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

const MAGIC: &[u8; 8] = b"VIREOPL1";
/// Sectors before the data: the label and room to grow it.
pub const DATA_START: u64 = (1 << 20) / SECTOR;
/// The smallest device worth adding: 16 MiB.
const MIN_SIZE: u64 = 16 << 20;

/// A device as `pool.json` records it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct DeviceConfig {
    pub path: PathBuf,
    pub tier: Tier,
}

pub struct Device {
    pub path: PathBuf,
    pub tier: Tier,
    file: File,
    /// Sectors of the device (data ends there).
    pub sectors: u64,
}

#[derive(Serialize, Deserialize)]
struct Label {
    pool: String,
    uuid: String,
    index: u16,
}

impl Device {
    /// Opens and locks a device; with `expect = Some((uuid, index))` its label must say so.
    pub fn open(cfg: &DeviceConfig, expect: Option<(&str, u16)>) -> Result<Device> {
        let path = &cfg.path;
        let meta = std::fs::metadata(path).map_err(StorageError::io(path))?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(StorageError::Invalid(format!(
                "{}: a pool device must be a regular file or a block device",
                path.display()
            )));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(StorageError::io(path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Conflict(format!(
                    "{} is in use by another process (locked)",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io(path)(e)),
        }
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(StorageError::io(path))?;
        let dev = Device {
            path: path.clone(),
            tier: cfg.tier,
            file,
            sectors: len / SECTOR,
        };
        match expect {
            None => {
                if len < MIN_SIZE {
                    return Err(StorageError::Invalid(format!(
                        "{} has {len} bytes; a pool device needs at least 16 MiB \
                         (e.g. `truncate -s 1G {}`)",
                        path.display(),
                        path.display()
                    )));
                }
                if let Some(label) = dev.label() {
                    return Err(StorageError::Conflict(format!(
                        "{} is already a device of pool {} ({}); to reuse it, erase its \
                         label: `dd if=/dev/zero of={} bs=4096 count=1 conv=notrunc`",
                        path.display(),
                        label.pool,
                        label.uuid,
                        path.display()
                    )));
                }
            }
            Some((uuid, index)) => match dev.label() {
                Some(l) if l.uuid == uuid && l.index == index => {}
                _ => {
                    return Err(StorageError::Invalid(format!(
                        "{} does not carry this pool's label (device {index}): was it \
                         replaced or overwritten?",
                        path.display()
                    )))
                }
            },
        }
        Ok(dev)
    }

    fn label(&self) -> Option<Label> {
        let mut buf = vec![0u8; SECTOR as usize];
        self.file.read_exact_at(&mut buf, 0).ok()?;
        if &buf[..8] != MAGIC {
            return None;
        }
        let len = u16::from_le_bytes([buf[8], buf[9]]) as usize;
        serde_json::from_slice(buf.get(10..10 + len)?).ok()
    }

    pub fn write_label(&self, pool: &str, uuid: &str, index: u16) -> Result<()> {
        let body = serde_json::to_vec(&Label {
            pool: pool.into(),
            uuid: uuid.into(),
            index,
        })
        .unwrap_or_default();
        let mut buf = vec![0u8; SECTOR as usize];
        buf[..8].copy_from_slice(MAGIC);
        buf[8..10].copy_from_slice(&(body.len() as u16).to_le_bytes());
        buf[10..10 + body.len()].copy_from_slice(&body);
        self.file
            .write_all_at(&buf, 0)
            .and_then(|_| self.file.sync_all())
            .map_err(StorageError::io(&self.path))
    }

    pub fn erase_label(&self) {
        let _ = self.file.write_all_at(&[0u8; 8], 0);
        let _ = self.file.sync_all();
    }

    pub fn read(&self, buf: &mut [u8], sector: u64, offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, sector * SECTOR + offset)
    }

    pub fn write(&self, buf: &[u8], sector: u64, offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, sector * SECTOR + offset)
    }

    /// Makes `nsect` sectors read as zeros cheaply (a freshly allocated block written in
    /// part); false when the device can't, and the caller writes zeros.
    pub fn zero(&self, sector: u64, nsect: u64) -> bool {
        // SAFETY: fallocate on a descriptor we own, inside the device's length.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                (sector * SECTOR) as libc::off_t,
                (nsect * SECTOR) as libc::off_t,
            ) == 0
        }
    }

    /// Gives freed sectors back to the file system (thin backing files stay thin).
    pub fn punch(&self, sector: u64, nsect: u64) {
        // SAFETY: as in `zero`; failure only means the space stays allocated.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (sector * SECTOR) as libc::off_t,
                (nsect * SECTOR) as libc::off_t,
            );
        }
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}
