//! Errors of the storage service. Each message names the object and, where there is one,
//! the fix; the kind decides the API's HTTP status.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An unknown pool, volume or snapshot (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, or the object is in use: a volume with clones, a device of another
    /// pool (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Malformed or out-of-range input: size 0, a bad name, an unaligned size (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The pool cannot hold it (HTTP 507).
    #[error("{0}")]
    NoSpace(String),
    /// A device or state file failed (HTTP 500).
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl StorageError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { path, source }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            StorageError::NotFound(_) => 404,
            StorageError::Conflict(_) => 409,
            StorageError::Invalid(_) => 400,
            StorageError::NoSpace(_) => 507,
            StorageError::Io { .. } => 500,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
