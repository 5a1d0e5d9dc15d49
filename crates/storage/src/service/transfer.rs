//! Import (an image file into a volume) and export (a volume or snapshot into an image
//! file), the copies that jobs run. Both keep thin things thin: zeros are not written into
//! a new volume, and exported files leave holes (raw) or unallocated clusters (qcow2) where
//! the volume reads zeros.

use super::jobs::Job;
use crate::block::BlockDevice;
use crate::error::{Result, StorageError};
use crate::file::FileDevice;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use vireo_disk::{DiskImage, Qcow2};

/// The unit of copying: big enough to stream, small enough that cancelling is prompt.
const CHUNK: u64 = 1 << 20;
/// Clusters of exported qcow2 images (QEMU's default).
const QCOW2_CLUSTER_BITS: u32 = 16;

/// An image file being imported.
pub(crate) enum Source {
    Raw(FileDevice),
    Qcow2(Box<Qcow2>),
}

impl Source {
    /// Opens `path` read-only, as qcow2 if it starts with the qcow2 magic, else as raw.
    pub fn open(path: &Path) -> Result<Source> {
        let format = vireo_disk::probe(path).map_err(|e| match e {
            vireo_disk::OpenError::Io { path, source } => StorageError::Io { path, source },
            other => StorageError::Invalid(other.to_string()),
        })?;
        if format == "qcow2" {
            let img = Qcow2::open(path, true).map_err(|e| StorageError::Invalid(e.to_string()))?;
            return Ok(Source::Qcow2(Box::new(img)));
        }
        let dev = FileDevice::open(path, true).map_err(StorageError::io(path))?;
        if dev.size() == 0 {
            return Err(StorageError::Invalid(format!(
                "{} is empty (or not a regular file): nothing to import",
                path.display()
            )));
        }
        Ok(Source::Raw(dev))
    }

    pub fn format(&self) -> &'static str {
        match self {
            Source::Raw(_) => "raw",
            Source::Qcow2(_) => "qcow2",
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Source::Raw(d) => d.size(),
            Source::Qcow2(q) => q.size(),
        }
    }

    /// Whether the range is known to read as zeros without reading it (holes of a raw
    /// file; a qcow2 image is read and its zeros found in the data).
    fn known_zero(&self, offset: u64, len: u64) -> io::Result<bool> {
        match self {
            Source::Raw(d) => Ok(d.block_status(offset, len)?.iter().all(|e| e.zero)),
            Source::Qcow2(_) => Ok(false),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Source::Raw(d) => d.read_at(buf, offset),
            Source::Qcow2(q) => q.read_at(buf, offset),
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    // OR-folding 64 bytes at a time vectorizes; checking once per 64 bytes still rejects a
    // data block after its first bytes.
    b.chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

/// Calls `f(offset, len, zero)` for the runs of `block`-sized pieces of `buf` (which lies at
/// `base`) that are all zeros or not.
fn runs(
    buf: &[u8],
    base: u64,
    block: usize,
    mut f: impl FnMut(u64, &[u8], bool) -> io::Result<()>,
) -> io::Result<()> {
    let mut start = 0usize;
    let mut kind: Option<bool> = None;
    let mut at = 0usize;
    for piece in buf.chunks(block.max(1)) {
        let z = is_zero(piece);
        if kind.is_some_and(|k| k != z) {
            if let (Some(k), Some(run)) = (kind, buf.get(start..at)) {
                f(base + start as u64, run, k)?;
            }
            start = at;
        }
        kind = Some(z);
        at += piece.len();
    }
    if let (Some(k), Some(run)) = (kind, buf.get(start..at)) {
        f(base + start as u64, run, k)?;
    }
    Ok(())
}

fn cancelled() -> String {
    "cancelled".to_string()
}

/// Copies `src` into `vol`. A `fresh` volume reads zeros everywhere, so zero blocks are
/// skipped; an existing one gets its zero blocks unmapped (`write_zeroes` with unmap), as
/// `qemu-img convert -n` does. Bytes past the source's size are left alone.
pub(crate) fn import(
    job: &Job,
    src: &Source,
    vol: &dyn BlockDevice,
    fresh: bool,
) -> std::result::Result<(), String> {
    let size = src.size();
    let block = vol.block_size().max(512) as usize;
    let chunk = CHUNK.max(block as u64);
    let mut buf = vec![0u8; chunk as usize];
    let mut off = 0u64;
    let err = |what: &str, at: u64, e: io::Error| format!("{what} at byte {at}: {e}");
    while off < size {
        if job.cancelled() {
            return Err(cancelled());
        }
        let len = chunk.min(size - off);
        let zero_range = |at: u64, n: u64| -> io::Result<()> {
            if fresh {
                Ok(())
            } else {
                vol.write_zeroes(at, n, true, false)
            }
        };
        if src
            .known_zero(off, len)
            .map_err(|e| err("reading the image", off, e))?
        {
            zero_range(off, len).map_err(|e| err("writing the volume", off, e))?;
        } else {
            let b = buf.get_mut(..len as usize).unwrap_or_default();
            src.read_at(b, off)
                .map_err(|e| err("reading the image", off, e))?;
            runs(b, off, block, |at, data, zero| {
                if zero {
                    zero_range(at, data.len() as u64)
                } else {
                    vol.write_at(data, at, false)
                }
            })
            .map_err(|e| err("writing the volume", off, e))?;
        }
        off += len;
        job.done.store(off, Ordering::Relaxed);
    }
    vol.flush().map_err(|e| format!("flushing the volume: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    Raw,
    Qcow2,
}

/// Where an export writes.
enum Target {
    Raw(File),
    Qcow2(Box<Qcow2>),
}

impl Target {
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Target::Raw(f) => f.write_all_at(data, offset),
            Target::Qcow2(q) => q.write_at(data, offset),
        }
    }
}

/// Creates the export's file (replacing a regular file there) before the job starts, so
/// that a bad path fails the request itself.
pub(crate) fn create_target(path: &Path, format: Format, size: u64) -> Result<TargetFile> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(StorageError::Invalid(format!(
                "{} exists and is not a regular file: export writes a new image file",
                path.display()
            )))
        }
        _ => {}
    }
    let target = match format {
        Format::Raw => {
            let f = File::create(path).map_err(StorageError::io(path))?;
            f.set_len(size).map_err(StorageError::io(path))?;
            Target::Raw(f)
        }
        Format::Qcow2 => Target::Qcow2(Box::new(
            vireo_disk::qcow2::create(path, size, QCOW2_CLUSTER_BITS)
                .map_err(|e| StorageError::Invalid(e.to_string()))?,
        )),
    };
    Ok(TargetFile {
        path: path.to_path_buf(),
        target,
    })
}

pub(crate) struct TargetFile {
    path: PathBuf,
    target: Target,
}

/// Copies `vol` into `out`: only what `block_status` says holds data is read, and only the
/// blocks of it that are not zeros are written.
pub(crate) fn export(
    job: &Job,
    vol: &dyn BlockDevice,
    out: TargetFile,
) -> std::result::Result<(), String> {
    let size = vol.size();
    let block = vol.block_size().max(512) as usize;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0u64;
    let file = out.path.display().to_string();
    let err = |what: &str, at: u64, e: io::Error| format!("{what} at byte {at}: {e}");
    while off < size {
        if job.cancelled() {
            return Err(cancelled());
        }
        let len = CHUNK.min(size - off);
        let extents = vol
            .block_status(off, len)
            .map_err(|e| err("reading the volume's map", off, e))?;
        let mut at = off;
        for e in extents {
            let e_len = e.len.min(off + len - at);
            if e_len == 0 {
                break;
            }
            if !e.zero {
                let b = buf.get_mut(..e_len as usize).unwrap_or_default();
                vol.read_at(b, at)
                    .map_err(|e| err("reading the volume", at, e))?;
                runs(b, at, block, |pos, data, zero| {
                    if zero {
                        Ok(())
                    } else {
                        out.target.write_at(data, pos)
                    }
                })
                .map_err(|e| err(&format!("writing {file}"), at, e))?;
            }
            at += e_len;
        }
        // block_status covers at least one byte: always progress.
        off = at.max(off + 1).min(off + len);
        job.done.store(off, Ordering::Relaxed);
    }
    let synced = match &out.target {
        Target::Raw(f) => f.sync_all(),
        Target::Qcow2(q) => q.flush(),
    };
    synced.map_err(|e| format!("syncing {file}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_zero_and_data_blocks() {
        let mut buf = vec![0u8; 10 * 4];
        buf[4] = 1;
        buf[13] = 2;
        buf[39] = 3;
        let mut seen = Vec::new();
        runs(&buf, 100, 4, |at, data, zero| {
            seen.push((at, data.len(), zero));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (100, 4, true),
                (104, 4, false),
                (108, 4, true),
                (112, 4, false),
                (116, 20, true),
                (136, 4, false)
            ]
        );
        let mut n = 0;
        runs(&[], 0, 4, |_, _, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 0);
        assert!(is_zero(&[0u8; 1000]));
        assert!(!is_zero(&[0, 0, 0, 1]));
    }
}
