//! Talking to apt: choosing the kernel package and downloading .debs.
//!
//! We only ever use `apt-cache` (read-only queries) and `apt-get download`
//! (fetch a .deb into the current directory); nothing is installed on the
//! host, so building an image needs no package state changes.

use std::fs;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::command::{describe, output};
use crate::ImageError;

/// Metapackage that always depends on Debian's current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
const KERNEL_PREFIX: &str = "linux-image-";
const KERNEL_SUFFIX: &str = "-cloud-amd64-unsigned";

const APT_HINT: &str = "make sure apt is installed and working: run `apt-get update` (as root) \
     and check that the Debian archive is reachable";

/// What apt would fetch for a package name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Size of the .deb in bytes, if apt reports it.
    pub size: Option<u64>,
}

impl PackageInfo {
    /// File name `apt-get download` gives the .deb (an epoch's `:` is
    /// URL-escaped as `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }
}

/// The kernel ABI part of a `linux-image-<abi>-cloud-amd64[-unsigned]` name,
/// as numbers for ordering, e.g. `6.1.0-56` -> `[6, 1, 0, 56]`.
fn kernel_abi(name: &str) -> Option<Vec<u64>> {
    let abi = name
        .strip_prefix(KERNEL_PREFIX)?
        .strip_suffix(KERNEL_SUFFIX)
        .or_else(|| {
            name.strip_prefix(KERNEL_PREFIX)?
                .strip_suffix("-cloud-amd64")
        })?;
    abi.split(['.', '-']).map(|p| p.parse().ok()).collect()
}

/// Names of installable packages among `names`, per `apt-cache policy`
/// (a package whose candidate is `(none)` cannot be downloaded).
fn installable(names: &[String]) -> Result<Vec<String>, ImageError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let text = output(
        Command::new("apt-cache").arg("policy").args(names),
        APT_HINT,
    )?;
    Ok(parse_policy(&text))
}

/// Extracts the packages that have a candidate version from `apt-cache
/// policy` output.
pub(crate) fn parse_policy(text: &str) -> Vec<String> {
    let mut current: Option<&str> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            current = line.strip_suffix(':');
        } else if let (Some(pkg), Some(c)) = (current, line.trim().strip_prefix("Candidate:")) {
            if c.trim() != "(none)" {
                out.push(pkg.to_string());
            }
        }
    }
    out
}

/// Finds the newest installable `linux-image-<abi>-cloud-amd64-unsigned`.
///
/// Two sources are merged: the metapackage's dependency (what Debian
/// currently considers *the* cloud kernel) and a name search (in case a newer
/// ABI is available than the metapackage points to). The highest ABI that
/// apt can actually fetch wins.
pub fn newest_cloud_kernel() -> Result<String, ImageError> {
    let mut names: Vec<String> = Vec::new();

    let depends = output(
        Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        APT_HINT,
    );
    match depends {
        Ok(text) => names.extend(parse_depends(&text)),
        Err(e) => tracing::debug!(error = %e, "metapackage lookup failed; relying on search"),
    }
    let pattern = format!("^{KERNEL_PREFIX}[0-9.]+-[0-9]+{KERNEL_SUFFIX}$");
    let search = output(
        Command::new("apt-cache").args(["search", "--names-only", &pattern]),
        APT_HINT,
    )?;
    names.extend(
        search
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string),
    );

    names.retain(|n| kernel_abi(n).is_some() && n.ends_with(KERNEL_SUFFIX));
    names.sort_by_key(|n| std::cmp::Reverse(kernel_abi(n)));
    names.dedup();
    tracing::debug!(?names, "kernel package candidates");

    let ok = installable(&names)?;
    names
        .into_iter()
        .find(|n| ok.contains(n))
        .ok_or_else(|| ImageError::PackageNotFound {
            what: format!("`{KERNEL_PREFIX}*{KERNEL_SUFFIX}`"),
            hint: APT_HINT.to_string(),
        })
}

/// Kernel package names (as `-unsigned`) from `apt-cache depends` output.
pub(crate) fn parse_depends(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|d| d.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|d| kernel_abi(d).is_some())
        .map(|d| {
            if d.ends_with(KERNEL_SUFFIX) {
                d.to_string()
            } else {
                format!("{d}-unsigned")
            }
        })
        .collect()
}

/// Version, architecture and size apt would download for `name`.
pub fn package_info(name: &str) -> Result<PackageInfo, ImageError> {
    let text = output(
        Command::new("apt-cache").args(["show", "--no-all-versions", name]),
        APT_HINT,
    )?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    match (field("Version"), field("Architecture")) {
        (Some(version), Some(architecture)) => Ok(PackageInfo {
            name: name.to_string(),
            version,
            architecture,
            size: field("Size").and_then(|s| s.parse().ok()),
        }),
        _ => Err(ImageError::PackageNotFound {
            what: name.to_string(),
            hint: APT_HINT.to_string(),
        }),
    }
}

/// The newest-named cached .deb for `name` in `dir`, if any. Used when apt
/// is unavailable but an earlier build already fetched the package.
pub fn cached_deb(dir: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}_");
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&prefix) && f.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Newest cloud kernel package with a .deb in `dir` (offline fallback).
pub fn cached_kernel(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .split('_')
                .next()
                .map(str::to_string)
        })
        .filter(|n| n.ends_with(KERNEL_SUFFIX) && kernel_abi(n).is_some())
        .collect();
    names.sort_by_key(|n| kernel_abi(n));
    names.pop()
}

/// Runs `apt-get download` for `info` in a private temporary directory
/// under `dir` and moves the result into `dir`, so an interrupted download
/// never leaves a truncated .deb that later builds would trust.
pub fn apt_download(info: &PackageInfo, dir: &Path) -> Result<PathBuf, ImageError> {
    let tmp = dir.join(format!(".download-{}-{}", info.name, std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(ImageError::io("creating", &tmp))?;
    let result = download_into(info, &tmp, dir);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn download_into(info: &PackageInfo, tmp: &Path, dir: &Path) -> Result<PathBuf, ImageError> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", &format!("{}={}", info.name, info.version)])
        .current_dir(tmp)
        .stdin(Stdio::null());
    // apt's progress lines go to our stderr so the caller's stdout stays
    // clean; stderr is captured for the error message (and to hide apt's
    // harmless "unsandboxed as root" warning).
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    let command = describe(&cmd);
    tracing::debug!(%command, dir = %tmp.display(), "running");
    let out = cmd.output().map_err(|source| ImageError::CommandSpawn {
        command: command.clone(),
        hint: "install apt (this builder needs a Debian-based host)".into(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(ImageError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr,
            hint: APT_HINT.to_string(),
        });
    }
    tracing::debug!(%stderr, "apt-get download finished");
    let got = cached_deb(tmp, &info.name).ok_or_else(|| ImageError::CommandFailed {
        command,
        status: "succeeded".into(),
        stderr: format!("no {}_*.deb was written; apt said: {stderr}", info.name),
        hint: APT_HINT.to_string(),
    })?;
    let file_name = got.file_name().map(|f| f.to_owned()).unwrap_or_default();
    let dest = dir.join(file_name);
    fs::rename(&got, &dest).map_err(ImageError::io("moving download to", &dest))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_abi_orders_numerically() {
        assert_eq!(
            kernel_abi("linux-image-6.1.0-56-cloud-amd64-unsigned"),
            Some(vec![6, 1, 0, 56])
        );
        assert_eq!(
            kernel_abi("linux-image-6.1.0-9-cloud-amd64"),
            Some(vec![6, 1, 0, 9])
        );
        assert!(kernel_abi("linux-image-6.1.0-56-cloud-amd64-dbg").is_none());
        assert!(kernel_abi("linux-image-cloud-amd64").is_none());
        assert!(
            kernel_abi("linux-image-6.1.0-9-cloud-amd64")
                < kernel_abi("linux-image-6.1.0-10-cloud-amd64")
        );
    }

    #[test]
    fn parses_metapackage_depends() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n  Depends: <kmod>\n";
        assert_eq!(
            parse_depends(text),
            ["linux-image-6.1.0-56-cloud-amd64-unsigned"]
        );
    }

    #[test]
    fn parses_policy_candidates() {
        let text = "a:\n  Installed: (none)\n  Candidate: 1.0\n  Version table:\n     1.0 500\nb:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(parse_policy(text), ["a"]);
    }

    #[test]
    fn deb_file_name_escapes_epoch() {
        let info = PackageInfo {
            name: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            architecture: "amd64".into(),
            size: None,
        };
        assert_eq!(
            info.deb_file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }
}
