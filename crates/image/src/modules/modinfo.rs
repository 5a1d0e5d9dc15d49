//! Reading kernel module files and their `.modinfo` ELF section.
//!
//! A minimal ELF64 little-endian section-table walk is enough here (modules
//! for x86-64 are always ELF64 LE), so no ELF crate is pulled in.

use std::io::Read;
use std::path::Path;

use crate::ImageError;

/// Reads a module file, transparently decompressing `.ko.xz`, `.ko.zst` and
/// `.ko.gz`. Decompressing at build time means the guest never depends on
/// the kernel (CONFIG_MODULE_DECOMPRESS) or busybox insmod handling it.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ImageError> {
    let raw = std::fs::read(path).map_err(ImageError::io("reading module", path))?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let result = if name.ends_with(".ko.xz") {
        xz2::read::XzDecoder::new(raw.as_slice()).read_to_end(&mut out)
    } else if name.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out)
    } else if name.ends_with(".ko.zst") {
        match ruzstd::decoding::StreamingDecoder::new(raw.as_slice()) {
            Ok(mut d) => d.read_to_end(&mut out),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
        }
    } else {
        return Ok(raw);
    };
    result.map_err(ImageError::io("decompressing module", path))?;
    Ok(out)
}

/// Returns the `key=value` pairs of an ELF module's `.modinfo` section.
pub fn modinfo_fields(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let section = find_section(elf, ".modinfo")?.ok_or("no .modinfo section")?;
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let s = std::str::from_utf8(entry).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

fn find_section<'a>(elf: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let shoff = read_u64(elf, 0x28)?;
    let shentsize = u64::from(read_u16(elf, 0x3a)?);
    let shnum = u64::from(read_u16(elf, 0x3c)?);
    let shstrndx = u64::from(read_u16(elf, 0x3e)?);
    if shentsize < 64 {
        return Err(format!("bad section header size {shentsize}"));
    }

    // (offset, size) of section `i`'s contents, and its name offset.
    let header = |i: u64| -> Result<(u32, &'a [u8]), String> {
        let at = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or("section header offset overflows")?;
        let name = read_u32(elf, at)?;
        let offset = read_u64(elf, at + 24)?;
        let size = read_u64(elf, at + 32)?;
        Ok((name, slice(elf, offset, size)?))
    };

    let (_, names) = header(shstrndx)?;
    for i in 0..shnum {
        let (name_off, data) = header(i)?;
        let name = names.get(name_off as usize..).unwrap_or_default();
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

fn slice(data: &[u8], offset: u64, size: u64) -> Result<&[u8], String> {
    let start = usize::try_from(offset).map_err(|e| e.to_string())?;
    let len = usize::try_from(size).map_err(|e| e.to_string())?;
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or_else(|| format!("range {offset:#x}+{size:#x} is outside the file"))
}

fn read_u16(d: &[u8], at: u64) -> Result<u16, String> {
    let b = slice(d, at, 2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(d: &[u8], at: u64) -> Result<u32, String> {
    let b = slice(d, at, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(d: &[u8], at: u64) -> Result<u64, String> {
    let b = slice(d, at, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}
