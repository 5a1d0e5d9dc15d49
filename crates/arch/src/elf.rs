//! An ELF loader for PVH images, 32- and 64-bit alike.
//!
//! linux-loader's ELF loader only takes ELF64; PVH payloads (and 32-bit kernels) are ELF32, and
//! both classes carry the entry point in the same `XEN_ELFNOTE_PHYS32_ENTRY` note, so one small
//! reader handles both. Every offset and size comes from the file and is checked.

use crate::loader::{write_checked, Entry, LoadError, LoadedKernel};
use std::io::{Read, Seek, SeekFrom};
use vm_memory::GuestMemoryBackend;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Refuse absurd headers before allocating for them.
const MAX_PHDRS: usize = 128;
const MAX_NOTE: u64 = 64 * 1024;

struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn err(msg: impl Into<String>) -> LoadError {
    LoadError::Elf(msg.into())
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, LoadError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| err("truncated header"))
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, LoadError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| err("truncated header"))
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, LoadError> {
    let lo = u64::from(u32_at(b, o)?);
    let hi = u64::from(u32_at(b, o + 4)?);
    Ok(lo | (hi << 32))
}

fn read_exact_at<F: Read + Seek>(f: &mut F, off: u64, len: u64) -> Result<Vec<u8>, LoadError> {
    let len = usize::try_from(len).map_err(|_| err("segment too large"))?;
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(&mut buf)
        .map_err(|_| err(format!("file ends inside a segment at offset {off:#x}")))?;
    Ok(buf)
}

/// What the headers of a PVH ELF image say, read and checked without loading anything.
struct Parsed {
    is64: bool,
    phdrs: Vec<Phdr>,
    entry: u64,
}

/// The PVH entry point of an ELF image and its class, checked as the loader checks them; nothing
/// is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvhImage {
    pub entry: u64,
    pub is64: bool,
}

/// Reads an ELF image's headers and PVH note without loading it, and checks that every
/// loadable segment's bytes are in the file.
pub fn probe_pvh_elf<F: Read + Seek>(f: &mut F) -> Result<PvhImage, LoadError> {
    let p = parse(f)?;
    let len = f.seek(SeekFrom::End(0))?;
    let mut loads = p.phdrs.iter().filter(|p| p.kind == PT_LOAD).peekable();
    if loads.peek().is_none() {
        return Err(err("no loadable segment"));
    }
    for s in loads {
        if s.filesz > s.memsz || s.offset.checked_add(s.filesz).is_none_or(|e| e > len) {
            return Err(err(format!(
                "loadable segment at file offset {:#x} is not within the file",
                s.offset
            )));
        }
    }
    Ok(PvhImage {
        entry: p.entry,
        is64: p.is64,
    })
}

fn parse<F: Read + Seek>(f: &mut F) -> Result<Parsed, LoadError> {
    let mut ehdr = [0u8; 64];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut ehdr[..52])
        .map_err(|_| err("file too short for an ELF header"))?;
    let is64 = match ehdr[4] {
        1 => false,
        2 => {
            f.read_exact(&mut ehdr[52..64])
                .map_err(|_| err("file too short for an ELF64 header"))?;
            true
        }
        c => return Err(err(format!("unknown ELF class {c}"))),
    };
    if ehdr[5] != 1 {
        return Err(err("big-endian ELF; x86 needs little-endian"));
    }
    let machine = u16_at(&ehdr, 18)?;
    if machine != 3 && machine != 62 {
        return Err(err(format!(
            "ELF machine {machine} is not x86 (3) or x86-64 (62)"
        )));
    }
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(&ehdr, 32)?, u16_at(&ehdr, 54)?, u16_at(&ehdr, 56)?)
    } else {
        (
            u64::from(u32_at(&ehdr, 28)?),
            u16_at(&ehdr, 42)?,
            u16_at(&ehdr, 44)?,
        )
    };
    let want = if is64 { 56 } else { 32 };
    if usize::from(phentsize) != want || usize::from(phnum) > MAX_PHDRS {
        return Err(err("bad program header table"));
    }
    let table = read_exact_at(f, phoff, u64::from(phentsize) * u64::from(phnum))?;
    let phdrs = table
        .chunks(want)
        .map(|p| {
            Ok(if is64 {
                Phdr {
                    kind: u32_at(p, 0)?,
                    offset: u64_at(p, 8)?,
                    paddr: u64_at(p, 24)?,
                    filesz: u64_at(p, 32)?,
                    memsz: u64_at(p, 40)?,
                }
            } else {
                Phdr {
                    kind: u32_at(p, 0)?,
                    offset: u64::from(u32_at(p, 4)?),
                    paddr: u64::from(u32_at(p, 12)?),
                    filesz: u64::from(u32_at(p, 16)?),
                    memsz: u64::from(u32_at(p, 20)?),
                }
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;

    let mut entry = None;
    for p in phdrs.iter().filter(|p| p.kind == PT_NOTE) {
        if p.filesz > MAX_NOTE {
            return Err(err("note segment too large"));
        }
        let notes = read_exact_at(f, p.offset, p.filesz)?;
        if let Some(e) = find_pvh_entry(&notes)? {
            entry = Some(e);
        }
    }
    let entry = entry.ok_or(LoadError::NoPvhNote)?;
    Ok(Parsed { is64, phdrs, entry })
}

/// Loads an ELF image with a PVH note into guest memory below `ram_end`.
pub fn load_pvh_elf<M: GuestMemoryBackend, F: Read + Seek>(
    mem: &M,
    ram_end: u64,
    f: &mut F,
) -> Result<LoadedKernel, LoadError> {
    let Parsed {
        is64,
        phdrs,
        entry: rip,
    } = parse(f)?;
    let mut end = 0u64;
    for p in phdrs.iter().filter(|p| p.kind == PT_LOAD) {
        if p.filesz > p.memsz {
            return Err(err("segment file size exceeds its memory size"));
        }
        let seg_end = p
            .paddr
            .checked_add(p.memsz)
            .ok_or_else(|| err("segment wraps around"))?;
        if seg_end > ram_end {
            return Err(LoadError::DoesNotFit {
                addr: p.paddr,
                len: p.memsz,
                limit: ram_end,
            });
        }
        let data = read_exact_at(f, p.offset, p.filesz)?;
        write_checked(mem, p.paddr, &data, ram_end)?;
        // .bss: guest RAM may have been used before (a reboot), so clear it explicitly.
        let bss = vec![0u8; (p.memsz - p.filesz) as usize];
        write_checked(mem, p.paddr + p.filesz, &bss, ram_end)?;
        end = end.max(seg_end);
    }
    if end == 0 {
        return Err(err("no loadable segment"));
    }
    Ok(LoadedKernel {
        entry: Entry::Pvh { rip },
        end,
        needs_long_mode: is64,
    })
}

/// Walks ELF notes (namesz, descsz, type, name, desc; each padded to 4 bytes).
fn find_pvh_entry(notes: &[u8]) -> Result<Option<u64>, LoadError> {
    let align4 = |n: usize| n.div_ceil(4) * 4;
    let mut off = 0usize;
    while off + 12 <= notes.len() {
        let namesz = u32_at(notes, off)? as usize;
        let descsz = u32_at(notes, off + 4)? as usize;
        let kind = u32_at(notes, off + 8)?;
        let name_at = off + 12;
        let desc_at = name_at
            .checked_add(align4(namesz))
            .ok_or_else(|| err("bad note"))?;
        let next = desc_at
            .checked_add(align4(descsz))
            .ok_or_else(|| err("bad note"))?;
        if next > notes.len() {
            return Err(err("truncated note"));
        }
        let name = &notes[name_at..name_at + namesz];
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
            let desc = &notes[desc_at..desc_at + descsz];
            let entry = match descsz {
                4 => u64::from(u32_at(desc, 0)?),
                8 => u64_at(desc, 0)?,
                _ => return Err(err("PVH entry note has a bad size")),
            };
            return Ok(Some(entry));
        }
        off = next;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// A minimal ELF32 with one PT_LOAD at 1 MiB and a PVH note.
    fn tiny_elf32(entry: u32) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 1;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&3u16.to_le_bytes());
        f[28..32].copy_from_slice(&52u32.to_le_bytes()); // phoff
        f[42..44].copy_from_slice(&32u16.to_le_bytes());
        f[44..46].copy_from_slice(&2u16.to_le_bytes());
        let ph = |f: &mut Vec<u8>, at: usize, v: [u32; 8]| {
            for (i, x) in v.iter().enumerate() {
                f[at + i * 4..at + i * 4 + 4].copy_from_slice(&x.to_le_bytes());
            }
        };
        ph(
            &mut f,
            52,
            [PT_LOAD, 0x100, 0x10_0000, 0x10_0000, 4, 16, 7, 0x1000],
        );
        ph(&mut f, 84, [PT_NOTE, 0x120, 0, 0, 20, 20, 4, 4]);
        f[0x100..0x104].copy_from_slice(&[0xf4, 0xeb, 0xfd, 0x90]);
        let note: Vec<u8> = [4u32, 4, XEN_ELFNOTE_PHYS32_ENTRY]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .chain(*b"Xen\0")
            .chain(entry.to_le_bytes())
            .collect();
        f[0x120..0x120 + note.len()].copy_from_slice(&note);
        f
    }

    #[test]
    fn loads_elf32_pvh_and_clears_bss() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        mem.write_slice(&[0xaa; 16], GuestAddress(0x10_0000))
            .unwrap();
        let img = tiny_elf32(0x10_0000);
        let k = crate::loader::load_kernel(&mem, 4 << 20, &mut std::io::Cursor::new(img)).unwrap();
        assert!(matches!(k.entry, Entry::Pvh { rip: 0x10_0000 }));
        assert!(!k.needs_long_mode);
        assert_eq!(k.end, 0x10_0010);
        let mut b = [0u8; 16];
        mem.read_slice(&mut b, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&b[..4], &[0xf4, 0xeb, 0xfd, 0x90]);
        assert_eq!(&b[4..], &[0u8; 12]);
    }

    #[test]
    fn rejects_missing_note_segments_past_ram_and_garbage() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let mut img = tiny_elf32(0x10_0000);
        img[0x128] = 17; // note type no longer PVH
        let r = crate::loader::load_kernel(&mem, 4 << 20, &mut std::io::Cursor::new(img));
        assert!(matches!(r, Err(LoadError::NoPvhNote)));
        let img = tiny_elf32(0x10_0000);
        let r = crate::loader::load_kernel(&mem, 0x10_0008, &mut std::io::Cursor::new(img));
        assert!(matches!(r, Err(LoadError::DoesNotFit { .. })));
        let r =
            crate::loader::load_kernel(&mem, 4 << 20, &mut std::io::Cursor::new(vec![7u8; 999]));
        assert!(matches!(r, Err(LoadError::UnknownFormat)));
        let mut img = tiny_elf32(0x10_0000);
        img.truncate(0x110);
        let r = crate::loader::load_kernel(&mem, 4 << 20, &mut std::io::Cursor::new(img));
        assert!(r.is_err());
    }
}
