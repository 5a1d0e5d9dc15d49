//! Unpacking a bzImage in the VMM: the compressed ELF `vmlinux` it carries, found through the
//! setup header and decompressed natively, so that it can be entered through its PVH note.
//!
//! A bzImage is the kernel's own decompressor wrapped around a compressed `vmlinux`. Under KVM
//! that decompressor runs at native speed; under the emulator it is interpreted and costs more
//! than a second before Linux prints anything. Firecracker and Cloud Hypervisor boot the ELF
//! `vmlinux` directly through its PVH entry; [`extract_pvh_vmlinux`] gives the emulator path
//! that same ELF from a bzImage.
//!
//! Boot protocol 2.08+ (Documentation/arch/x86/boot.rst): `payload_offset` (0x248) and
//! `payload_length` (0x24c) locate the payload relative to the start of the protected-mode code,
//! which begins at `(setup_sects + 1) * 512` in the file (`setup_sects` 0 means 4). The kernel
//! build appends the uncompressed size as a little-endian u32 to every compressed payload.
//!
//! Everything in the file is untrusted: offsets are checked, every decoder is bounds-checked,
//! and the output is capped at [`MAX_VMLINUX`].

use crate::elf;
use crate::loader::LoadError;
use std::io::{Cursor, Read};

/// The largest `vmlinux` the VMM unpacks (a distribution kernel is 50-70 MiB).
pub const MAX_VMLINUX: usize = 256 << 20;

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Each block of an LZ4 legacy frame decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// `LZ4_compressBound(8 MiB)`: no valid block is larger.
const LZ4_LEGACY_MAX_COMPRESSED: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;

/// The compression of a bzImage payload, from its magic bytes (as the kernel's
/// `lib/decompress.c` tells them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4Legacy,
    Gzip,
    Zstd,
    Xz,
    Lzma,
    Bzip2,
    Lzo,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4Legacy => "LZ4",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "LZO",
        }
    }

    fn detect(payload: &[u8]) -> Option<Compression> {
        let magics: [(&[u8], Compression); 7] = [
            (&LZ4_LEGACY_MAGIC.to_le_bytes(), Compression::Lz4Legacy),
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (b"\xfd7zXZ\0", Compression::Xz),
            (&[0x5d, 0, 0], Compression::Lzma),
            (b"BZh", Compression::Bzip2),
            (b"\x89LZO", Compression::Lzo),
        ];
        magics
            .iter()
            .find(|(m, _)| payload.starts_with(m))
            .map(|&(_, c)| c)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("not a bzImage (no \"HdrS\" setup header)")]
    NotBzImage,
    #[error("boot protocol {0:#x} has no payload fields (they came with 2.08)")]
    OldProtocol(u16),
    #[error("the setup header puts the payload at {offset:#x}+{len:#x}: empty, or outside the {size:#x}-byte file")]
    PayloadOutOfBounds { offset: u64, len: u64, size: usize },
    #[error("the payload is {0}-compressed, which the VMM does not decompress")]
    Unsupported(Compression),
    #[error("unknown payload compression (first bytes {0:02x?})")]
    UnknownCompression(Vec<u8>),
    #[error("corrupt {format} payload: {why}")]
    Corrupt { format: Compression, why: String },
    #[error("the payload decompresses to more than {max} MiB", max = MAX_VMLINUX >> 20)]
    TooLarge,
    #[error("the payload is not an ELF64 vmlinux")]
    NotElf64,
    #[error("the vmlinux cannot be entered through PVH: {0}")]
    Elf(LoadError),
}

/// A `vmlinux` unpacked from a bzImage, checked to be an ELF64 with a PVH entry.
#[derive(Debug)]
pub struct Unpacked {
    pub compression: Compression,
    /// Size of the compressed payload in the bzImage.
    pub compressed_len: usize,
    pub vmlinux: Vec<u8>,
    pub pvh_entry: u64,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The compressed payload of a bzImage, as its setup header locates it.
pub fn payload(bz: &[u8]) -> Result<&[u8], UnpackError> {
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        return Err(UnpackError::NotBzImage);
    }
    let version = le16(bz, 0x206).ok_or(UnpackError::NotBzImage)?;
    if version < 0x0208 {
        return Err(UnpackError::OldProtocol(version));
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let (Some(off), Some(len)) = (le32(bz, 0x248), le32(bz, 0x24c)) else {
        return Err(UnpackError::NotBzImage);
    };
    let offset = (setup_sects + 1) * 512 + u64::from(off);
    let len = u64::from(len);
    let out_of_bounds = UnpackError::PayloadOutOfBounds {
        offset,
        len,
        size: bz.len(),
    };
    // Both are below 2^33, so the sum cannot overflow.
    if len == 0 || offset + len > bz.len() as u64 {
        return Err(out_of_bounds);
    }
    Ok(&bz[offset as usize..(offset + len) as usize])
}

/// Decompresses a bzImage payload into at most `max` bytes.
pub fn decompress(payload: &[u8], max: usize) -> Result<(Compression, Vec<u8>), UnpackError> {
    let format = Compression::detect(payload).ok_or_else(|| {
        UnpackError::UnknownCompression(payload.iter().take(6).copied().collect())
    })?;
    // The size the build appended: only a hint for the first allocation, never trusted beyond.
    let hint = payload
        .len()
        .checked_sub(4)
        .and_then(|at| le32(payload, at))
        .map_or(0, |n| (n as usize).min(max));
    let out = match format {
        Compression::Lz4Legacy => unlz4_legacy(payload, max, hint)?,
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(payload), format, max, hint)?,
        Compression::Zstd => {
            let d = ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| {
                UnpackError::Corrupt {
                    format,
                    why: e.to_string(),
                }
            })?;
            read_capped(d, format, max, hint)?
        }
        _ => return Err(UnpackError::Unsupported(format)),
    };
    Ok((format, out))
}

/// Reads a decoder to its end, refusing more than `max` bytes.
fn read_capped<R: Read>(
    r: R,
    format: Compression,
    max: usize,
    hint: usize,
) -> Result<Vec<u8>, UnpackError> {
    let mut out = Vec::with_capacity(hint);
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| UnpackError::Corrupt {
            format,
            why: e.to_string(),
        })?;
    if out.len() > max {
        return Err(UnpackError::TooLarge);
    }
    Ok(out)
}

/// The LZ4 legacy frame the kernel build writes (`lz4 -l`): the magic, then blocks of
/// `[u32 LE compressed size][LZ4 block]`, each decompressing on its own to at most 8 MiB. The
/// stream ends at the end of the payload or at a size that cannot be a block (the appended
/// uncompressed size); a repeated magic starts a concatenated frame.
fn unlz4_legacy(p: &[u8], max: usize, hint: usize) -> Result<Vec<u8>, UnpackError> {
    let corrupt = |why: String| UnpackError::Corrupt {
        format: Compression::Lz4Legacy,
        why,
    };
    let mut out = Vec::with_capacity(hint);
    let mut len = 0;
    let mut at = 4;
    while let Some(size) = le32(p, at) {
        if size == LZ4_LEGACY_MAGIC {
            at += 4;
            continue;
        }
        let size = size as usize;
        let body = at + 4;
        if size == 0 || size > LZ4_LEGACY_MAX_COMPRESSED || size > p.len() - body {
            break;
        }
        let room = LZ4_LEGACY_BLOCK.min(max - len);
        if room == 0 {
            return Err(UnpackError::TooLarge);
        }
        // `out` stays zero-filled past `len`, so each byte is cleared once, not once a block.
        if out.len() < len + room {
            out.resize(len + room, 0);
        }
        match lz4_flex::block::decompress_into(&p[body..body + size], &mut out[len..len + room]) {
            Ok(n) => len += n,
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. })
                if room < LZ4_LEGACY_BLOCK =>
            {
                return Err(UnpackError::TooLarge)
            }
            Err(e) => return Err(corrupt(format!("block at payload offset {at:#x}: {e}"))),
        }
        at = body + size;
    }
    if len == 0 {
        return Err(corrupt("no data block".into()));
    }
    out.truncate(len);
    Ok(out)
}

/// Unpacks a bzImage's `vmlinux` and checks that it is an ELF64 that can be entered through PVH
/// (its headers, note and every loadable segment within the file).
pub fn extract_pvh_vmlinux(bz: &[u8]) -> Result<Unpacked, UnpackError> {
    extract(bz, MAX_VMLINUX)
}

fn extract(bz: &[u8], max: usize) -> Result<Unpacked, UnpackError> {
    let payload = payload(bz)?;
    let (compression, vmlinux) = decompress(payload, max)?;
    if !vmlinux.starts_with(b"\x7fELF\x02") {
        return Err(UnpackError::NotElf64);
    }
    let pvh = elf::probe_pvh_elf(&mut Cursor::new(&vmlinux)).map_err(UnpackError::Elf)?;
    Ok(Unpacked {
        compression,
        compressed_len: payload.len(),
        vmlinux,
        pvh_entry: pvh.entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal ELF64 vmlinux: one PT_LOAD at 16 MiB and, unless `note` is false, a PVH note;
    /// padded with `filler` bytes so that it compresses into more than one LZ4 block if asked.
    fn tiny_vmlinux(note: bool, filler: usize) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |f: &mut Vec<u8>, at: usize, kind: u32, v: [u64; 6]| {
            f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            for (i, x) in v.iter().enumerate() {
                f[at + 8 + i * 8..at + 16 + i * 8].copy_from_slice(&x.to_le_bytes());
            }
        };
        let load_len = 0x100 + filler as u64;
        ph(
            &mut f,
            64,
            1,
            [0x200, 0x100_0000, 0x100_0000, load_len, load_len, 0x1000],
        );
        ph(&mut f, 120, 4, [0x1c0, 0, 0, 20, 20, 4]);
        let kind: u32 = if note { 18 } else { 17 };
        let n: Vec<u8> = [4u32, 4, kind]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .chain(*b"Xen\0")
            .chain(0x100_0040u32.to_le_bytes())
            .collect();
        f[0x1c0..0x1c0 + n.len()].copy_from_slice(&n);
        f.extend((0..0x100 + filler).map(|i| (i * 7 % 251) as u8));
        f
    }

    /// An LZ4 legacy frame of `data` cut into blocks of at most `chunk` bytes, with the
    /// uncompressed size appended as the kernel build does.
    fn lz4_legacy(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut p = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for c in data.chunks(chunk) {
            let b = lz4_flex::block::compress(c);
            p.extend((b.len() as u32).to_le_bytes());
            p.extend(b);
        }
        p.extend((data.len() as u32).to_le_bytes());
        p
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        let mut p = e.finish().unwrap();
        p.extend((data.len() as u32).to_le_bytes());
        p
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        let mut p =
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest);
        p.extend((data.len() as u32).to_le_bytes());
        p
    }

    /// A bzImage around `payload`: 2 setup sectors after the boot sector, some decompressor
    /// bytes, the payload, then trailing bytes.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 3 * 512];
        f[0x1f1] = 2;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        f[0x248..0x24c].copy_from_slice(&0x40u32.to_le_bytes());
        f[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend([0xccu8; 0x40]);
        f.extend(payload);
        f.extend([0x90u8; 100]);
        f
    }

    #[test]
    fn unpacks_lz4_legacy_gzip_and_zstd() {
        let elf = tiny_vmlinux(true, 100_000);
        for (payload, want) in [
            (lz4_legacy(&elf, 40_000), Compression::Lz4Legacy),
            (lz4_legacy(&elf, LZ4_LEGACY_BLOCK), Compression::Lz4Legacy),
            (gzip(&elf), Compression::Gzip),
            (zstd(&elf), Compression::Zstd),
        ] {
            let u = extract_pvh_vmlinux(&bzimage(&payload)).unwrap();
            assert_eq!(u.compression, want);
            assert_eq!(u.compressed_len, payload.len());
            assert_eq!(u.pvh_entry, 0x100_0040);
            assert!(u.vmlinux == elf, "{want} round trip");
        }
    }

    #[test]
    fn lz4_legacy_concatenated_frames() {
        let elf = tiny_vmlinux(true, 1000);
        let mut p = lz4_legacy(&elf[..300], 100);
        p.truncate(p.len() - 4);
        p.extend(lz4_legacy(&elf[300..], 100));
        assert_eq!(decompress(&p, MAX_VMLINUX).unwrap().1, elf);
    }

    #[test]
    fn refuses_what_it_cannot_boot() {
        let no_note = tiny_vmlinux(false, 0);
        let r = extract_pvh_vmlinux(&bzimage(&lz4_legacy(&no_note, 1 << 20)));
        assert!(
            matches!(r, Err(UnpackError::Elf(LoadError::NoPvhNote))),
            "{r:?}"
        );

        let r = extract_pvh_vmlinux(&bzimage(&gzip(b"not an ELF at all")));
        assert!(matches!(r, Err(UnpackError::NotElf64)), "{r:?}");

        // The loadable segment runs past the end of the (truncated) vmlinux.
        let mut short = tiny_vmlinux(true, 1000);
        short.truncate(0x300);
        let r = extract_pvh_vmlinux(&bzimage(&gzip(&short)));
        assert!(matches!(r, Err(UnpackError::Elf(_))), "{r:?}");

        let mut xz = b"\xfd7zXZ\0".to_vec();
        xz.extend([0u8; 64]);
        let r = extract_pvh_vmlinux(&bzimage(&xz));
        assert!(
            matches!(r, Err(UnpackError::Unsupported(Compression::Xz))),
            "{r:?}"
        );
        let r = extract_pvh_vmlinux(&bzimage(&[0x42; 64]));
        assert!(
            matches!(r, Err(UnpackError::UnknownCompression(_))),
            "{r:?}"
        );

        let r = extract_pvh_vmlinux(&no_note);
        assert!(matches!(r, Err(UnpackError::NotBzImage)), "{r:?}");
        let mut old = bzimage(&gzip(&no_note));
        old[0x206] = 0x07;
        assert!(matches!(
            extract_pvh_vmlinux(&old),
            Err(UnpackError::OldProtocol(0x207))
        ));
    }

    #[test]
    fn payload_bounds_come_from_the_header_and_are_checked() {
        let p = lz4_legacy(&tiny_vmlinux(true, 0), 1 << 20);
        let mut bz = bzimage(&p);
        assert_eq!(payload(&bz).unwrap(), &p[..]);
        bz[0x1f1] = 0; // setup_sects 0 means 4: the payload now starts past the file's end
        assert!(matches!(
            payload(&bz),
            Err(UnpackError::PayloadOutOfBounds { .. })
        ));
        let mut bz = bzimage(&p);
        bz[0x248..0x250].copy_from_slice(&[0xff; 8]);
        assert!(matches!(
            payload(&bz),
            Err(UnpackError::PayloadOutOfBounds { .. })
        ));
        assert!(matches!(
            payload(&bz[..0x230]),
            Err(UnpackError::NotBzImage)
        ));
    }

    #[test]
    fn output_is_capped() {
        let data = vec![0u8; 3 << 20];
        for p in [lz4_legacy(&data, 1 << 20), gzip(&data), zstd(&data)] {
            assert!(matches!(
                decompress(&p, 2 << 20),
                Err(UnpackError::TooLarge)
            ));
            assert_eq!(decompress(&p, 3 << 20).unwrap().1.len(), 3 << 20);
        }
    }

    /// Damaged payloads give errors, never a panic or a runaway allocation.
    #[test]
    fn corrupt_payloads_are_errors() {
        let elf = tiny_vmlinux(true, 20_000);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for good in [lz4_legacy(&elf, 5000), gzip(&elf), zstd(&elf)] {
            for _ in 0..300 {
                let mut p = good.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % p.len() as u64) as usize;
                    p[i] = next() as u8;
                }
                if next() % 4 == 0 {
                    p.truncate((next() % p.len() as u64) as usize);
                }
                // A small cap keeps this quick in debug builds (each LZ4 block gets that room).
                let _ = extract(&bzimage(&p), 256 << 10);
            }
        }
        let r = decompress(b"\x02\x21\x4c\x18\x10\0\0\0garbagegarbage!!", MAX_VMLINUX);
        assert!(matches!(r, Err(UnpackError::Corrupt { .. })), "{r:?}");
    }
}
