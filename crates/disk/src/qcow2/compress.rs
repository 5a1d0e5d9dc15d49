//! Compressed clusters (zlib type: raw deflate, as `qemu-img convert -c` writes them). They
//! are read-only: writing to one first copies its data into a fresh standard cluster.

use super::{corrupt, State};
use flate2::{Decompress, FlushDecompress};
use std::io;
use std::os::unix::fs::FileExt;

/// The last cluster inflated: a guest reading a compressed cluster in small pieces inflates
/// it once.
#[derive(Default)]
pub(super) struct Cache {
    entry: Option<u64>,
    data: Vec<u8>,
    input: Vec<u8>,
}

impl Cache {
    pub(super) fn clear(&mut self) {
        self.entry = None;
    }
}

/// Reads `buf.len()` bytes at `offset`, zeros past the end of the file (as QEMU reads a
/// cluster allocated but never written).
pub(super) fn read_padded(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => {
                rest.fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl State {
    /// The data of the compressed cluster described by L2 entry `entry` (`sectors` 512-byte
    /// sectors from byte `offset`), inflated into the cache.
    pub(super) fn inflate(&mut self, entry: u64, offset: u64, sectors: u64) -> io::Result<&[u8]> {
        let cs = self.geo.cluster_size as usize;
        if self.compressed.entry != Some(entry) {
            self.compressed.entry = None;
            // The data starts at `offset` and ends with its last sector; the sector count is
            // at most 2^(cluster_bits - 8), so this is at most two clusters.
            let len = (sectors * 512 - (offset & 511)) as usize;
            let cache = &mut self.compressed;
            cache.input.resize(len, 0);
            read_padded(&self.file, &mut cache.input, offset)?;
            cache.data.resize(cs, 0);
            let mut z = Decompress::new(false);
            let status = z.decompress(&cache.input, &mut cache.data, FlushDecompress::Finish);
            // Decompression stops once it produced a cluster; fewer bytes is corruption.
            match status {
                Ok(_) if z.total_out() == cs as u64 => {}
                Ok(_) => {
                    return Err(corrupt(format!(
                        "the compressed cluster at {offset:#x} inflates to {} bytes",
                        z.total_out()
                    )))
                }
                Err(e) => {
                    return Err(corrupt(format!(
                        "the compressed cluster at {offset:#x} does not inflate: {e}"
                    )))
                }
            }
            self.compressed.entry = Some(entry);
        }
        Ok(&self.compressed.data)
    }
}
