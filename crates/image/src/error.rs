//! Error type for the image builder.
//!
//! Every variant carries enough context (package, file, command, stderr) that
//! a user can act on the message without re-running with debug logs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation on a specific path failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An external command could not be started at all (e.g. not installed).
    #[error("could not run `{command}`: {source}; {hint}")]
    CommandSpawn {
        command: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },

    /// An external command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}; {hint}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },

    /// apt knows no installable package matching what we need.
    #[error("no installable package found for {what}; {hint}")]
    PackageNotFound { what: String, hint: String },

    /// A .deb file is malformed or uses a layout we do not understand.
    #[error("bad .deb package {}: {reason}", path.display())]
    BadDeb { path: PathBuf, reason: String },

    /// An expected file is missing from an extracted package.
    #[error("package {package} does not contain {what} (looked in {})", path.display())]
    MissingInPackage {
        package: String,
        what: String,
        path: PathBuf,
    },

    /// The ext4 root disk could not be assembled.
    #[error("cannot build root disk {}: {reason}", path.display())]
    Rootfs { path: PathBuf, reason: String },

    /// A kernel module file could not be parsed.
    #[error("bad kernel module {}: {reason}", path.display())]
    BadModule { path: PathBuf, reason: String },
}

impl ImageError {
    /// Shorthand for wrapping an `io::Error` with what we were doing and where.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}
