//! The ext4 root disk (`rootfs.ext4`): the initramfs tree, written out to a
//! staging directory and packed with e2fsprogs' `mke2fs -d`.
//!
//! `mke2fs -d` copies owners and timestamps from the staging files, and an
//! unprivileged build cannot create `dev/console` there. So a `debugfs` pass
//! afterwards adds the device nodes and resets every entry to root-owned
//! with a fixed time. With `E2FSPROGS_FAKE_TIME` and a UUID and directory
//! hash seed derived from the content, the same archive gives the same bytes.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{find_tool, output, output_and_stderr};
use crate::cpio::{Archive, EntryKind};
use crate::ImageError;

/// Filesystem label, so the disk can be found with `findfs LABEL=vireo-root`.
pub(crate) const LABEL: &str = "vireo-root";
/// Room left for users on top of the content (journal and inode tables
/// come out of it too).
const FREE_SPACE: u64 = 64 << 20;
const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;
/// Every timestamp in the image. e2fsprogs reads 0 as "use the clock", so
/// this is 1970-01-01 00:00:01 rather than the initramfs' 0.
const FIXED_TIME: &str = "1";
const HINT: &str = "mke2fs and debugfs are part of e2fsprogs: apt-get install e2fsprogs";

/// Writes `archive` as an ext4 image to `path` (atomically, via a temporary
/// name) and returns the image size in bytes.
pub(crate) fn write(archive: &Archive, path: &Path) -> Result<u64, ImageError> {
    let fail = |reason: String| ImageError::Rootfs {
        path: path.to_path_buf(),
        reason,
    };
    // Checked before any work: a path debugfs cannot parse is a bug here.
    let script = debugfs_script(archive).map_err(fail)?;
    let staging = Scratch::new(sibling(path, "staging"));
    fs::create_dir(&staging.0).map_err(ImageError::io("creating", &staging.0))?;
    write_tree(archive, &staging.0)?;

    let size = disk_size(archive);
    let tmp = Scratch::new(sibling(path, "tmp"));
    let (uuid, hash_seed) = ids(archive);
    output(
        Command::new(find_tool("mke2fs"))
            .args(["-q", "-t", "ext4", "-L", LABEL, "-U", &uuid])
            .arg("-E")
            .arg(format!("hash_seed={hash_seed},root_owner=0:0"))
            .arg("-d")
            .arg(&staging.0)
            .arg("-F")
            .arg(&tmp.0)
            .arg(format!("{}k", size / 1024))
            .env("E2FSPROGS_FAKE_TIME", FIXED_TIME),
        HINT,
    )?;

    // The staging tree is packed by now, so it can hold the script.
    let script_path = staging.0.join("debugfs.cmds");
    fs::write(&script_path, script).map_err(ImageError::io("writing", &script_path))?;
    let mut debugfs = Command::new(find_tool("debugfs"));
    debugfs
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(&tmp.0)
        .env("E2FSPROGS_FAKE_TIME", FIXED_TIME);
    let (_, stderr) = output_and_stderr(&mut debugfs, HINT)?;
    // debugfs exits 0 even when commands fail; it reports them on stderr
    // after its version banner.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !errors.is_empty() {
        return Err(fail(format!("debugfs: {}", errors.join("; "))));
    }
    fs::rename(&tmp.0, path).map_err(ImageError::io("renaming into place", path))?;
    Ok(size)
}

/// Materialises the archive under `root`. Device nodes are skipped: they
/// need CAP_MKNOD, so debugfs creates them in the image instead.
pub(crate) fn write_tree(archive: &Archive, root: &Path) -> Result<(), ImageError> {
    let mut dirs = Vec::new();
    for e in archive.entries() {
        let dst = root.join(e.path);
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir_all(&dst).map_err(ImageError::io("creating", &dst))?;
                dirs.push((dst, e.perm));
            }
            EntryKind::File(data) => {
                fs::write(&dst, data).map_err(ImageError::io("writing", &dst))?;
                set_perm(&dst, e.perm)?;
            }
            EntryKind::Symlink(target) => {
                symlink(target, &dst).map_err(ImageError::io("creating symlink", &dst))?;
            }
            EntryKind::CharDev { .. } => {}
        }
    }
    // Directory modes last, children first, so a directory without write
    // permission can still be filled.
    for (dir, perm) in dirs.iter().rev() {
        set_perm(dir, *perm)?;
    }
    Ok(())
}

fn set_perm(path: &Path, perm: u32) -> Result<(), ImageError> {
    fs::set_permissions(path, fs::Permissions::from_mode(perm))
        .map_err(ImageError::io("setting permissions of", path))
}

/// debugfs commands that add the device nodes, then make every entry
/// root-owned with [`FIXED_TIME`]. Errors on paths debugfs cannot quote.
pub(crate) fn debugfs_script(archive: &Archive) -> Result<String, String> {
    let mut nodes = String::new();
    let mut fixups = String::new();
    for e in archive.entries() {
        if e.path.contains(['"', '\\']) || e.path.chars().any(char::is_control) {
            return Err(format!("path {:?} cannot be passed to debugfs", e.path));
        }
        let p = format!("\"/{}\"", e.path);
        if let EntryKind::CharDev { major, minor } = e.kind {
            // mknod takes a name in the current directory, not a path.
            let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path));
            nodes.push_str(&format!(
                "cd \"/{dir}\"\nmknod \"{name}\" c {major} {minor}\nsif {p} mode 0{:o}\n",
                0o020000 | e.perm
            ));
        }
        for (field, value) in [
            ("uid", "0"),
            ("gid", "0"),
            ("atime", FIXED_TIME),
            ("mtime", FIXED_TIME),
            ("ctime", FIXED_TIME),
        ] {
            fixups.push_str(&format!("sif {p} {field} {value}\n"));
        }
    }
    Ok(format!("{nodes}cd /\n{fixups}"))
}

/// Image size: the content as ext4 stores it (whole 4 KiB blocks per file,
/// one block per other entry, which errs on the large side) plus
/// [`FREE_SPACE`], in whole MiB.
pub(crate) fn disk_size(archive: &Archive) -> u64 {
    let content: u64 = archive
        .entries()
        .map(|e| match e.kind {
            EntryKind::File(data) => (data.len() as u64).next_multiple_of(BLOCK).max(BLOCK),
            _ => BLOCK,
        })
        .sum();
    (content + FREE_SPACE).next_multiple_of(MIB)
}

/// Filesystem UUID and directory hash seed, derived from the content: the
/// same image rebuilds bit for bit, while different images (another kernel
/// or busybox) still get different UUIDs and can be attached side by side.
pub(crate) fn ids(archive: &Archive) -> (String, String) {
    // FNV-1a: tiny and stable, unlike std's hasher; not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in archive.entries() {
        feed(e.path.as_bytes());
        feed(&e.perm.to_le_bytes());
        match e.kind {
            EntryKind::Dir => feed(b"d"),
            EntryKind::File(data) => {
                feed(b"f");
                feed(data);
            }
            EntryKind::Symlink(target) => {
                feed(b"l");
                feed(target.as_bytes());
            }
            EntryKind::CharDev { major, minor } => {
                feed(b"c");
                feed(&major.to_le_bytes());
                feed(&minor.to_le_bytes());
            }
        }
    }
    // splitmix64 spreads the one hash over the 256 bits needed.
    let mut next = || {
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut uuid = [next(), next()];
    // Version 4 / RFC 4122 variant bits, so tools treat it as a normal UUID.
    uuid[0] = (uuid[0] & !0xf000) | 0x4000;
    uuid[1] = (uuid[1] & !(0b11 << 62)) | (0b10 << 62);
    (format_uuid(uuid), format_uuid([next(), next()]))
}

fn format_uuid([hi, lo]: [u64; 2]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// `rootfs.ext4` -> `rootfs.ext4.<what>-<pid>`, next to the output so the
/// final rename stays on one filesystem.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{what}-{}", std::process::id()));
    PathBuf::from(name)
}

/// A scratch file or directory, removed when dropped (also on errors).
struct Scratch(PathBuf);

impl Scratch {
    /// Clears leftovers from a killed earlier run with the same pid.
    fn new(path: PathBuf) -> Self {
        remove(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

fn remove(path: &Path) {
    let _ = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            make_removable(path, m.mode());
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Gives the owner rwx on `dir` and the directories below it: without
/// root, a read-only directory of the tree could not be emptied.
fn make_removable(dir: &Path, mode: u32) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(m) = entry.metadata() {
            if m.is_dir() {
                make_removable(&entry.path(), m.mode());
            }
        }
    }
}

#[cfg(test)]
#[path = "rootfs_tests.rs"]
mod tests;
