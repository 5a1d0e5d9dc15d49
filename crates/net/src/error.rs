//! Errors of the network service. Each message names the object and, where there is one,
//! the fix; the kind decides the API's HTTP status.

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An unknown network or port (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken, or in use: a tap name another interface has, a network with
    /// ports (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Malformed input: a bad name, VLAN id, MAC, rate (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The system refused: creating a tap, an ioctl (HTTP 500).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl NetError {
    pub fn http_status(&self) -> u16 {
        match self {
            NetError::NotFound(_) => 404,
            NetError::Conflict(_) => 409,
            NetError::Invalid(_) => 400,
            NetError::Io { .. } => 500,
        }
    }
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
