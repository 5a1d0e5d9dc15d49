//! Opening image files: locking them like QEMU does, and following backing files.

use crate::qcow2::{self, Qcow2};
use crate::{DiskImage, OpenError, RawImage};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// The deepest backing chain followed (the image itself not counted). A chain that loops
/// back on itself read-only would otherwise be followed forever.
pub const MAX_CHAIN: u32 = 16;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `path` (a regular file or a block device) and locks it: exclusively when it will be
/// written, shared when it is only read. Returns the file and its length.
pub(crate) fn open_locked(path: &Path, readonly: bool) -> Result<(File, u64), OpenError> {
    // Look before opening: opening a FIFO would block.
    let meta = std::fs::metadata(path).map_err(io_error(path))?;
    let ft = meta.file_type();
    if !ft.is_file() && !ft.is_block_device() {
        return Err(OpenError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or a block device",
            ),
        });
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(!readonly)
        .open(path)
        .map_err(io_error(path))?;
    let locked = if readonly {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match locked {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(OpenError::Locked {
                path: path.to_path_buf(),
                readonly,
            })
        }
        Err(TryLockError::Error(e)) => return Err(io_error(path)(e)),
    }
    // Block devices report a zero length in their metadata; seeking works for both.
    let len = file.seek(SeekFrom::End(0)).map_err(io_error(path))?;
    Ok((file, len))
}

/// Where a backing file named `name` in the image at `image` lives: relative names are
/// relative to the image's directory, as in QEMU.
pub(crate) fn backing_path(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match image.parent() {
        Some(dir) => dir.join(name),
        None => name.to_path_buf(),
    }
}

/// Opens a backing file read-only (shared lock), in `format` if the image names one, else
/// probed. `depth` is its depth in the chain (1 for the image's own backing file).
///
/// Probing only tells qcow2 (its magic) from raw. The risk, as in QEMU: a raw backing file
/// whose guest-written first bytes are a qcow2 header would be read as qcow2, and could then
/// name any host file as its own backing file. Images should record the backing format
/// (`qemu-img create -F`, or `qemu-img rebase -u -F raw -b BASE IMAGE`).
pub(crate) fn open_backing(
    path: &Path,
    format: Option<&str>,
    depth: u32,
) -> Result<Box<dyn DiskImage>, OpenError> {
    if depth > MAX_CHAIN {
        return Err(OpenError::Unsupported {
            path: path.to_path_buf(),
            feature: format!("a backing chain deeper than {MAX_CHAIN} images (or one that loops)"),
            fix: format!(
                "flatten it into one image: `qemu-img convert -O qcow2 TOP NEW` (reached {})",
                path.display()
            ),
        });
    }
    let format = match format {
        Some(f) => f.to_string(),
        None => probe(path)?.to_string(),
    };
    match format.as_str() {
        "raw" => Ok(Box::new(RawImage::open(path)?)),
        "qcow2" => Ok(Box::new(Qcow2::open_backing(path, depth)?)),
        other => Err(OpenError::Unsupported {
            path: path.to_path_buf(),
            feature: format!("backing file format {other:?}"),
            fix: format!(
                "convert the backing file to qcow2 or raw (`qemu-img convert -O qcow2 {} NEW`) and rebase onto it (`qemu-img rebase -F qcow2 -b NEW IMAGE`)",
                path.display()
            ),
        }),
    }
}

/// "qcow2" if the file starts with the qcow2 magic, else "raw".
pub fn probe(path: &Path) -> Result<&'static str, OpenError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut magic = [0u8; 4];
    let n = file.read_at(&mut magic, 0).map_err(io_error(path))?;
    Ok(if n == 4 && magic == qcow2::MAGIC {
        "qcow2"
    } else {
        "raw"
    })
}
