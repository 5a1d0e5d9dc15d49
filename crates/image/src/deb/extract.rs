//! Unpacking .deb files without dpkg: a .deb is an `ar` archive holding
//! `debian-binary`, `control.tar.*` and `data.tar.*`; only the data tarball
//! (the files the package installs) matters here.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ImageError;

/// Marker written after a complete extraction, holding the .deb's file name,
/// so a later build can skip work but never trusts a half-extracted tree.
const STAMP: &str = ".vireo-extracted";

/// Extracts `data.tar.*` of `deb` into `dest` (created if missing).
pub fn extract_deb(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    let bad = |reason: String| ImageError::BadDeb {
        path: deb.to_path_buf(),
        reason,
    };
    let file = File::open(deb).map_err(ImageError::io("opening", deb))?;
    let mut archive = ar::Archive::new(file);
    let mut saw_debian_binary = false;
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| bad(format!("reading ar member: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if name == "debian-binary" {
            saw_debian_binary = true;
            continue;
        }
        let Some(compression) = name.strip_prefix("data.tar") else {
            continue;
        };
        if !saw_debian_binary {
            return Err(bad("no debian-binary member before data.tar".into()));
        }
        let reader: Box<dyn Read> = match compression {
            ".xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            ".zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(entry)
                    .map_err(|e| bad(format!("zstd header: {e}")))?,
            ),
            "" => Box::new(entry),
            other => return Err(bad(format!("unsupported compression data.tar{other}"))),
        };
        fs::create_dir_all(dest).map_err(ImageError::io("creating", dest))?;
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.set_overwrite(true);
        tar.unpack(dest)
            .map_err(|e| bad(format!("unpacking {name} into {}: {e}", dest.display())))?;
        return Ok(());
    }
    Err(bad("no data.tar member (is this a .deb file?)".into()))
}

/// Extracts `deb` to `root/<package>/` unless that was already done for
/// this exact .deb. Extraction goes to a temporary sibling first and is
/// renamed into place, so an interrupted build leaves no partial tree.
pub fn ensure_extracted(deb: &Path, root: &Path, package: &str) -> Result<PathBuf, ImageError> {
    let dest = root.join(package);
    let deb_name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = dest.join(STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|s| s == deb_name) {
        tracing::debug!(dest = %dest.display(), "already extracted");
        return Ok(dest);
    }
    let tmp = root.join(format!(".{package}.tmp-{}", std::process::id()));
    remove_if_exists(&tmp)?;
    extract_deb(deb, &tmp)?;
    let tmp_stamp = tmp.join(STAMP);
    fs::write(&tmp_stamp, &deb_name).map_err(ImageError::io("writing", &tmp_stamp))?;
    remove_if_exists(&dest)?;
    fs::rename(&tmp, &dest).map_err(ImageError::io("moving extracted tree to", &dest))?;
    Ok(dest)
}

fn remove_if_exists(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ImageError::io("removing", path)(e))
        }
        _ => Ok(()),
    }
}
