//! Fetching and extracting Debian packages.
//!
//! apt does the fetching (it knows the mirrors, verifies signatures and
//! checksums); extraction is done in Rust so no dpkg state is touched.

mod apt;
mod extract;

use std::path::{Path, PathBuf};

pub use apt::{
    apt_download, cached_deb, cached_kernel, newest_cloud_kernel, package_info, PackageInfo,
    KERNEL_METAPACKAGE,
};
pub use extract::{ensure_extracted, extract_deb};

use crate::ImageError;

/// Package providing a statically linked busybox at `/bin/busybox`.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Outcome of [`fetch`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// True if the .deb was already in the cache and nothing was downloaded.
    pub cached: bool,
    /// What apt reported, if apt could be asked.
    pub info: Option<PackageInfo>,
}

/// Makes sure the candidate .deb of `name` is in `dir`, downloading it with
/// `apt-get download` if needed. `before_download` runs just before a real
/// download starts (for progress output).
///
/// If apt cannot be queried at all but some version of the package is
/// cached, that version is used (with a warning) so rebuilds work offline.
pub fn fetch(
    name: &str,
    dir: &Path,
    before_download: impl FnOnce(&PackageInfo),
) -> Result<Fetched, ImageError> {
    std::fs::create_dir_all(dir).map_err(ImageError::io("creating", dir))?;
    let info = match package_info(name) {
        Ok(info) => info,
        Err(e) => {
            return match cached_deb(dir, name) {
                Some(path) => {
                    tracing::warn!(error = %e, deb = %path.display(), "apt unavailable; using cached package");
                    Ok(Fetched {
                        path,
                        cached: true,
                        info: None,
                    })
                }
                None => Err(e),
            }
        }
    };
    let expected = dir.join(info.deb_file_name());
    if expected.is_file() {
        return Ok(Fetched {
            path: expected,
            cached: true,
            info: Some(info),
        });
    }
    before_download(&info);
    let path = apt_download(&info, dir)?;
    Ok(Fetched {
        path,
        cached: false,
        info: Some(info),
    })
}

#[cfg(test)]
mod tests;
