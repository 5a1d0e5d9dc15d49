//! The qcow2 header and its extensions (QEMU's docs/interop/qcow2.txt). Everything the rest
//! of the driver relies on is checked here: the geometry, where the tables lie, and the
//! features the image needs. What we cannot serve is refused with the command that converts
//! or repairs the image.

use crate::OpenError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
const V2_HEADER_LEN: u32 = 72;
const V3_HEADER_LEN: u32 = 104;
pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
/// QEMU's limit (2 MiB), which bounds every table we hold in memory.
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's limits on the L1 table (32 MiB) and the refcount table (8 MiB).
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
pub(crate) const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Longest backing file name (the spec's limit).
const MAX_BACKING_NAME: u32 = 1023;

/// Header fields we rewrite: refcount_table_offset (u64) and refcount_table_clusters (u32)
/// are adjacent, so one write switches tables.
pub(crate) const FIELD_REFCOUNT_TABLE: u64 = 48;
pub(crate) const FIELD_AUTOCLEAR: u64 = 88;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = (1 << 5) - 1;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const FEATURE_ENTRY_LEN: usize = 48;

#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub compression_type: u8,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// (type, bit, name) from the feature name table, for error messages.
    pub feature_names: Vec<(u8, u8, String)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_be_bytes(v)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_be_bytes(v)
}

impl Header {
    /// Reads and checks the header of the image `file` (`file_len` bytes long).
    pub(crate) fn read(file: &File, file_len: u64, path: &Path) -> Result<Header, OpenError> {
        let invalid = |reason: String| OpenError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let io = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut fixed = [0u8; V3_HEADER_LEN as usize];
        let n = (file_len.min(fixed.len() as u64)) as usize;
        file.read_exact_at(&mut fixed[..n], 0).map_err(io)?;
        if n < 4 || fixed[..4] != MAGIC {
            return Err(invalid(
                "it does not start with the qcow2 magic (is it a raw image?)".into(),
            ));
        }
        let version = be32(&fixed, 4);
        if version != 2 && version != 3 {
            return Err(OpenError::Unsupported {
                path: path.to_path_buf(),
                feature: format!("qcow2 version {version}"),
                fix: format!(
                    "convert it: `qemu-img convert -O qcow2 {} NEW`",
                    path.display()
                ),
            });
        }
        let header_len = if version == 2 {
            V2_HEADER_LEN
        } else {
            be32(&fixed, 100)
        };
        if u64::from(header_len.max(V2_HEADER_LEN)) > file_len {
            return Err(invalid(format!(
                "the file ends inside the header ({file_len} bytes)"
            )));
        }
        let cluster_bits = be32(&fixed, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(invalid(format!(
                "cluster_bits is {cluster_bits}; clusters of 512 bytes to 2 MiB (9 to 21) are supported"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        if version == 3
            && (header_len < V3_HEADER_LEN
                || !header_len.is_multiple_of(8)
                || u64::from(header_len) > cluster_size)
        {
            return Err(invalid(format!("header_length {header_len} is not valid")));
        }
        let v3 = |at: usize| if version == 3 { be64(&fixed, at) } else { 0 };
        let mut h = Header {
            version,
            cluster_bits,
            size: be64(&fixed, 24),
            crypt_method: be32(&fixed, 32),
            l1_size: be32(&fixed, 36),
            l1_table_offset: be64(&fixed, 40),
            refcount_table_offset: be64(&fixed, 48),
            refcount_table_clusters: be32(&fixed, 56),
            nb_snapshots: be32(&fixed, 60),
            incompatible: v3(72),
            autoclear: v3(88),
            refcount_order: if version == 3 { be32(&fixed, 96) } else { 4 },
            compression_type: if header_len > V3_HEADER_LEN {
                fixed.get(104).copied().unwrap_or(0)
            } else {
                0
            },
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
        };
        // The first cluster holds the extensions and the backing file name.
        let mut first = vec![0u8; cluster_size.min(file_len) as usize];
        file.read_exact_at(&mut first, 0).map_err(io)?;
        // header_len <= cluster_size and <= file_len was checked above.
        let backing_offset = be64(&fixed, 8);
        let backing_len = be32(&fixed, 16);
        h.read_extensions(&first, header_len as usize, backing_offset)
            .map_err(invalid)?;
        if backing_offset != 0 && backing_len != 0 {
            h.backing_file =
                Some(backing_name(&first, backing_offset, backing_len).map_err(invalid)?);
        }
        Ok(h)
    }

    /// Reads the header extensions between the header and the backing file name (or the end
    /// of the first cluster). Each step advances at least 8 bytes, so this ends.
    fn read_extensions(
        &mut self,
        first: &[u8],
        start: usize,
        backing_offset: u64,
    ) -> Result<(), String> {
        let end = if backing_offset != 0 {
            (backing_offset.min(first.len() as u64)) as usize
        } else {
            first.len()
        };
        let mut at = start;
        while at + 8 <= end {
            let kind = be32(first, at);
            let len = be32(first, at + 4) as usize;
            if kind == EXT_END {
                break;
            }
            let data_start = at + 8;
            let data = data_start
                .checked_add(len)
                .filter(|&e| e <= end)
                .and_then(|e| first.get(data_start..e))
                .ok_or_else(|| format!("header extension {kind:#x} overruns the header area"))?;
            match kind {
                EXT_BACKING_FORMAT => {
                    let name = std::str::from_utf8(data)
                        .map_err(|_| "the backing format name is not UTF-8".to_string())?;
                    self.backing_format = Some(name.to_string());
                }
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(FEATURE_ENTRY_LEN) {
                        let name = e.get(2..).unwrap_or_default();
                        let name = name.split(|&b| b == 0).next().unwrap_or_default();
                        let name = String::from_utf8_lossy(name).into_owned();
                        self.feature_names.push((e[0], e[1], name));
                    }
                }
                // Bitmaps, the encryption header, the external data file name and anything
                // newer: either refused through a feature bit or safe to ignore.
                _ => {}
            }
            at = data_start + len.next_multiple_of(8);
        }
        Ok(())
    }

    /// The name of incompatible feature `bit`, from the image's feature table if it has one.
    fn incompatible_name(&self, bit: u32) -> String {
        self.feature_names
            .iter()
            .find(|(t, b, _)| *t == 0 && u32::from(*b) == bit)
            .map(|(_, _, n)| format!("{n:?} (incompatible feature bit {bit})"))
            .unwrap_or_else(|| format!("incompatible feature bit {bit}"))
    }

    /// Refuses what we cannot serve, saying how to convert or repair the image.
    pub(crate) fn check_features(&self, path: &Path, readonly: bool) -> Result<(), OpenError> {
        let file = path.display();
        let refuse = |feature: String, fix: String| {
            Err(OpenError::Unsupported {
                path: path.to_path_buf(),
                feature,
                fix,
            })
        };
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64)
                .filter(|b| unknown & (1u64 << b) != 0)
                .map(|b| self.incompatible_name(b))
                .collect();
            return refuse(
                names.join(", "),
                format!("convert it with the qemu-img that wrote it: `qemu-img convert -O qcow2 -o compat=1.1 {file} NEW`"),
            );
        }
        if self.incompatible & INCOMPAT_CORRUPT != 0 {
            return refuse(
                "an image marked corrupt (the corrupt bit)".into(),
                format!("repair it: `qemu-img check -r all {file}`"),
            );
        }
        if self.incompatible & INCOMPAT_DIRTY != 0 && !readonly {
            return refuse(
                "writing an image with the dirty bit set (lazy refcounts not yet repaired)".into(),
                format!("repair its refcounts: `qemu-img check -r all {file}`"),
            );
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            return refuse(
                "an external data file".into(),
                format!("merge it into one image: `qemu-img convert -O qcow2 {file} NEW`"),
            );
        }
        if self.incompatible & INCOMPAT_EXTENDED_L2 != 0 {
            return refuse(
                "extended L2 entries (subclusters)".into(),
                format!("convert it: `qemu-img convert -O qcow2 -o extended_l2=off {file} NEW`"),
            );
        }
        if self.incompatible & INCOMPAT_COMPRESSION != 0 || self.compression_type != 0 {
            let what = match self.compression_type {
                1 => "zstd compression".to_string(),
                t => format!("compression type {t}"),
            };
            return refuse(
                what,
                format!("convert it to zlib: `qemu-img convert -O qcow2 -o compression_type=zlib {file} NEW`"),
            );
        }
        if self.crypt_method != 0 {
            return refuse(
                "encryption".into(),
                format!("decrypt it into a new image with `qemu-img convert -O qcow2` (giving the key with --object secret) from {file}"),
            );
        }
        if self.refcount_order != 4 {
            let bits = 1u64.checked_shl(self.refcount_order).unwrap_or(0);
            return refuse(
                format!("refcount_bits={bits} (only 16 is)"),
                format!("change it: `qemu-img amend -f qcow2 -o refcount_bits=16 {file}`"),
            );
        }
        Ok(())
    }
}

fn backing_name(first: &[u8], offset: u64, len: u32) -> Result<String, String> {
    if len > MAX_BACKING_NAME {
        return Err(format!("the backing file name is {len} bytes long"));
    }
    let bytes = usize::try_from(offset)
        .ok()
        .and_then(|o| first.get(o..o.checked_add(len as usize)?))
        .ok_or("the backing file name lies outside the first cluster")?;
    let name = std::str::from_utf8(bytes).map_err(|_| "the backing file name is not UTF-8")?;
    if name.contains('\0') {
        return Err("the backing file name contains a NUL byte".into());
    }
    Ok(name.to_string())
}
