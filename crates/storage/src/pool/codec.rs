//! What a block becomes on a device (seed 4: compression, and section 7: encryption at
//! rest): compressed with lz4 or zstd when that saves at least one sector, then encrypted
//! with AES-256-XTS per 4 KiB sector, the tweak being the sector's address in the pool (so
//! equal plaintext at two places gives different ciphertext). Dedup hashes are BLAKE3,
//! keyed from the encryption key when there is one, so a hash reveals nothing without it.

use super::alloc::SECTOR;
use super::types::Compression;
use crate::error::{Result, StorageError};
use aes::cipher::KeyInit;
use aes::Aes256;
use std::io;
use std::path::Path;
use xts_mode::{get_tweak_default, Xts128};

/// How a stored block is encoded (kept in its location record).
pub const RAW: u8 = 0;
pub const LZ4: u8 = 1;
pub const ZSTD: u8 = 2;

pub struct Codec {
    compression: Compression,
    xts: Option<Xts128<Aes256>>,
    hash_key: Option<[u8; 32]>,
}

/// Reads a 64-byte key: raw bytes, or 128 hexadecimal digits.
pub fn read_key_file(path: &Path) -> Result<[u8; 64]> {
    let data = std::fs::read(path).map_err(StorageError::io(path))?;
    let text = std::str::from_utf8(&data).map(str::trim).unwrap_or("");
    let bytes = if text.len() == 128 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..64)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    } else {
        data
    };
    bytes.try_into().map_err(|_| {
        StorageError::Invalid(format!(
            "{}: an encryption key file holds 64 bytes (AES-256-XTS), raw or as 128 hex \
             digits; make one with `head -c 64 /dev/urandom > KEYFILE`",
            path.display()
        ))
    })
}

impl Codec {
    pub fn new(compression: Compression, key: Option<&[u8; 64]>) -> Codec {
        let xts =
            key.map(|k| Xts128::new(Aes256::new(k[..32].into()), Aes256::new(k[32..].into())));
        let hash_key = key.map(|k| blake3::derive_key("vireo pool dedup v1", k));
        Codec {
            compression,
            xts,
            hash_key,
        }
    }

    pub fn encrypted(&self) -> bool {
        self.xts.is_some()
    }

    pub fn hash(&self, block: &[u8]) -> [u8; 32] {
        match &self.hash_key {
            Some(k) => *blake3::keyed_hash(k, block).as_bytes(),
            None => *blake3::hash(block).as_bytes(),
        }
    }

    /// The compressed form of `block` padded to whole sectors, with its codec and length,
    /// when compression is on and saves at least one sector.
    pub fn compress(&self, block: &[u8]) -> Option<(u8, Vec<u8>, u32)> {
        let (codec, mut out) = match self.compression {
            Compression::Off => return None,
            Compression::Lz4 => (LZ4, lz4_flex::block::compress(block)),
            Compression::Zstd => (ZSTD, zstd::bulk::compress(block, 1).ok()?),
        };
        let len = out.len() as u64;
        let padded = len.div_ceil(SECTOR) * SECTOR;
        if padded + SECTOR > block.len() as u64 {
            return None;
        }
        out.resize(padded as usize, 0);
        Some((codec, out, len as u32))
    }

    /// Decodes `stored` (the first `len` bytes are the compressed form) into `out`, which
    /// must come out exactly full.
    pub fn decompress(codec: u8, stored: &[u8], len: u32, out: &mut [u8]) -> io::Result<()> {
        let corrupt = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let src = stored
            .get(..len as usize)
            .ok_or_else(|| corrupt("compressed length past its sectors".into()))?;
        let n = match codec {
            LZ4 => lz4_flex::block::decompress_into(src, out)
                .map_err(|e| corrupt(format!("lz4: {e}")))?,
            ZSTD => zstd::bulk::decompress_to_buffer(src, out)
                .map_err(|e| corrupt(format!("zstd: {e}")))?,
            other => return Err(corrupt(format!("unknown block codec {other}"))),
        };
        if n != out.len() {
            return Err(corrupt(format!("a block decompressed to {n} bytes")));
        }
        Ok(())
    }

    /// Encrypts whole sectors in place; `sector` is the pool address of the first.
    pub fn encrypt(&self, buf: &mut [u8], sector: u128) {
        if let Some(x) = &self.xts {
            x.encrypt_area(buf, SECTOR as usize, sector, get_tweak_default);
        }
    }

    pub fn decrypt(&self, buf: &mut [u8], sector: u128) {
        if let Some(x) = &self.xts {
            x.decrypt_area(buf, SECTOR as usize, sector, get_tweak_default);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_saves_or_declines() {
        for c in [Compression::Lz4, Compression::Zstd] {
            let codec = Codec::new(c, None);
            let text: Vec<u8> = (0..65536u32).map(|i| (i % 7) as u8 + b'a').collect();
            let (tag, stored, len) = codec.compress(&text).unwrap();
            assert_eq!(stored.len() as u64 % SECTOR, 0);
            let mut out = vec![0; 65536];
            Codec::decompress(tag, &stored, len, &mut out).unwrap();
            assert_eq!(out, text);
            // Random data does not shrink by a sector: stored raw.
            let mut x = 1u64;
            let noise: Vec<u8> = (0..65536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(codec.compress(&noise).is_none());
            // Corrupt input is an error, not a panic.
            let mut bad = stored.clone();
            bad[..16].fill(0xff);
            let _ = Codec::decompress(tag, &bad, len, &mut out);
            assert!(Codec::decompress(tag, &stored, u32::MAX, &mut out).is_err());
        }
    }

    #[test]
    fn encryption_depends_on_place_and_round_trips() {
        let codec = Codec::new(Compression::Off, Some(&[7u8; 64]));
        let plain = vec![0x41u8; 8192];
        let mut a = plain.clone();
        codec.encrypt(&mut a, 100);
        let mut b = plain.clone();
        codec.encrypt(&mut b, 200);
        assert_ne!(a, b);
        assert_ne!(&a[..4096], &a[4096..]);
        assert!(!a.windows(16).any(|w| w == [0x41u8; 16]));
        codec.decrypt(&mut a, 100);
        assert_eq!(a, plain);
        assert_ne!(
            codec.hash(&plain),
            Codec::new(Compression::Off, None).hash(&plain)
        );
    }
}
