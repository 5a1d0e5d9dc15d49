//! A writer for cpio "newc" (SVR4, magic `070701`) archives, the format the
//! Linux kernel unpacks as an initramfs.
//!
//! Layout of each entry: a 110-byte ASCII header, the NUL-terminated name
//! padded so header+name is a multiple of 4, then the data padded to 4.
//! The archive ends with an entry named `TRAILER!!!`.
//!
//! Paths are stored relative (no leading `/`), like `find . | cpio -o` does.
//! Missing parent directories are added automatically (mode 0755) because the
//! kernel's unpacker does not create them and would fail to create the child.

use std::collections::HashMap;
use std::io::Write;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;
const PERM_MASK: u32 = 0o7777;
const TRAILER: &str = "TRAILER!!!";

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    mode: u32,
    data: Vec<u8>,
    rdev: (u32, u32),
}

impl Entry {
    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// One archive entry as seen by [`Archive::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Relative path without a leading `/`, e.g. `bin/sh`.
    pub path: &'a str,
    /// Permission bits, e.g. `0o755`.
    pub perm: u32,
    pub kind: EntryKind<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a str),
    CharDev { major: u32, minor: u32 },
}

/// An in-memory cpio newc archive builder.
///
/// Adding a path twice replaces the earlier entry (in its original position),
/// which matches how the kernel treats duplicates (last one wins) but keeps
/// the archive free of confusing repeats.
///
/// # Panics
/// The `add_*` methods panic on paths that are empty or contain NUL, `.` or
/// `..` components, and on files over 4 GiB: those are caller bugs, and
/// this builder only ever receives paths chosen by our own code.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory. `mode` holds permission bits (e.g. `0o755`).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.insert(path, S_IFDIR | (mode & PERM_MASK), Vec::new(), (0, 0))
    }

    /// Adds a regular file with the given permission bits and contents.
    pub fn add_file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.insert(path, S_IFREG | (mode & PERM_MASK), data.to_vec(), (0, 0))
    }

    /// Adds a symlink; newc stores the link target as the entry's data.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(path, S_IFLNK | 0o777, target.as_bytes().to_vec(), (0, 0))
    }

    /// Adds a character device node, e.g. `/dev/console` (5, 1), which must
    /// exist before devtmpfs is mounted so the kernel can open it for init.
    pub fn add_char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.insert(
            path,
            S_IFCHR | (mode & PERM_MASK),
            Vec::new(),
            (major, minor),
        )
    }

    /// Number of entries added so far (including implicit parent dirs).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `path` has been added (explicitly or as an implicit parent).
    pub fn contains(&self, path: &str) -> bool {
        self.index.contains_key(&normalize(path))
    }

    /// The entries in archive order (parents before children), for writing
    /// the same tree somewhere else, e.g. the ext4 root disk.
    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.entries.iter().map(|e| EntryRef {
            path: &e.path,
            perm: e.mode & PERM_MASK,
            kind: match e.mode & S_IFMT {
                S_IFDIR => EntryKind::Dir,
                S_IFLNK => EntryKind::Symlink(std::str::from_utf8(&e.data).unwrap_or_default()),
                S_IFCHR => EntryKind::CharDev {
                    major: e.rdev.0,
                    minor: e.rdev.1,
                },
                _ => EntryKind::File(&e.data),
            },
        })
    }

    /// Serialises the archive, including the trailer.
    pub fn finish(&self) -> Vec<u8> {
        let subdirs = self.subdir_counts();
        let mut out = Vec::with_capacity(self.entries.iter().map(|e| e.data.len() + 128).sum());
        for (i, e) in self.entries.iter().enumerate() {
            // A directory's link count is 2 ("." and its name) plus one per
            // subdirectory's "..", as on a real filesystem.
            let nlink = if e.is_dir() {
                2 + subdirs.get(e.path.as_str()).copied().unwrap_or(0)
            } else {
                1
            };
            // Inode 0 is left to the trailer; numbering by position keeps
            // inodes unique, which cpio uses to detect hard links.
            write_entry(&mut out, u32::try_from(i + 1).unwrap_or(u32::MAX), e, nlink);
        }
        let trailer = Entry {
            path: TRAILER.to_string(),
            mode: 0,
            data: Vec::new(),
            rdev: (0, 0),
        };
        write_entry(&mut out, 0, &trailer, 1);
        out
    }

    /// Serialises the archive and gzips it (the kernel's default initramfs
    /// decompressor, CONFIG_RD_GZIP, is enabled on every distro kernel).
    pub fn finish_gzip(&self) -> Vec<u8> {
        let raw = self.finish();
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 2),
            flate2::Compression::default(),
        );
        // Writing to a Vec cannot fail.
        enc.write_all(&raw).expect("in-memory gzip write");
        enc.finish().expect("in-memory gzip finish")
    }

    fn insert(&mut self, path: &str, mode: u32, data: Vec<u8>, rdev: (u32, u32)) -> &mut Self {
        let path = normalize(path);
        // newc stores sizes as 8 hex digits; an initramfs never gets close.
        assert!(
            u32::try_from(data.len()).is_ok(),
            "cpio newc cannot store {path:?}: over 4 GiB"
        );
        assert!(
            !path.is_empty()
                && !path.contains('\0')
                && !path.split('/').any(|c| c == ".." || c == "."),
            "invalid cpio path {path:?}"
        );
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !self.index.contains_key(parent) {
                self.insert(parent, S_IFDIR | 0o755, Vec::new(), (0, 0));
            }
        }
        let entry = Entry {
            path: path.clone(),
            mode,
            data,
            rdev,
        };
        match self.index.get(&path) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(path, self.entries.len());
                self.entries.push(entry);
            }
        }
        self
    }

    /// Counts direct subdirectories per directory path.
    fn subdir_counts(&self) -> HashMap<&str, u32> {
        let mut counts = HashMap::new();
        for e in &self.entries {
            if e.is_dir() {
                if let Some((parent, _)) = e.path.rsplit_once('/') {
                    *counts.entry(parent).or_insert(0) += 1;
                }
            }
        }
        counts
    }
}

fn normalize(path: &str) -> String {
    path.trim_matches('/').to_string()
}

fn write_entry(out: &mut Vec<u8>, ino: u32, e: &Entry, nlink: u32) {
    let namesize = e.path.len() + 1;
    let fields = [
        ino,
        e.mode,
        0, // uid: root
        0, // gid: root
        nlink,
        0, // mtime: fixed for reproducible images
        e.data.len() as u32,
        0, // devmajor of the containing fs: irrelevant
        0,
        e.rdev.0,
        e.rdev.1,
        namesize as u32,
        0, // check: only used by the "crc" variant
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(e.path.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(&e.data);
    pad4(out);
}

/// Pads with NULs to a 4-byte boundary. Each entry starts aligned, so the
/// absolute length of `out` is the right thing to align.
fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
#[path = "cpio_tests.rs"]
mod tests;
