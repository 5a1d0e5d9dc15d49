//! The vhost-user-blk exports the service runs: one volume (or snapshot, read-only) per
//! socket, kept until stopped or until their volume is deleted.

use super::jobs::of_volume;
use crate::error::{Result, StorageError};
use crate::registry::{parse_volume_ref, Storage};
use crate::vhost_user::VhostUserBlk;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Export {
    volume: String,
    /// Serves until dropped.
    _server: VhostUserBlk,
}

#[derive(Default)]
pub(crate) struct VhostExports {
    exports: Mutex<BTreeMap<PathBuf, Export>>,
}

impl VhostExports {
    /// Serves `volume` (`POOL/VOL` or `POOL/VOL@SNAP`) on `socket`.
    pub fn start(&self, storage: &Storage, volume: &str, socket: &Path) -> Result<Value> {
        parse_volume_ref(volume)?;
        let mut exports = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = exports.get(socket) {
            return Err(StorageError::Conflict(format!(
                "{} already serves {} over vhost-user; stop it first (`vireo storage vhost-user --stop --socket {}`)",
                socket.display(),
                e.volume,
                socket.display()
            )));
        }
        let dev = storage.open_export(volume)?;
        let server = VhostUserBlk::start(socket, dev, volume).map_err(|e| match e.kind() {
            // A live socket of someone else, or a file that is not a socket.
            std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AlreadyExists => {
                StorageError::Conflict(e.to_string())
            }
            _ => StorageError::io(socket)(e),
        })?;
        tracing::info!(
            "serving {volume} over vhost-user-blk on {}",
            socket.display()
        );
        exports.insert(
            socket.to_path_buf(),
            Export {
                volume: volume.to_string(),
                _server: server,
            },
        );
        Ok(json!({ "socket": socket, "volume": volume }))
    }

    pub fn stop(&self, socket: &Path) -> Result<()> {
        let removed = self
            .exports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(socket);
        match removed {
            Some(e) => {
                tracing::info!(
                    "stopped serving {} over vhost-user-blk on {}",
                    e.volume,
                    socket.display()
                );
                Ok(())
            }
            None => Err(StorageError::NotFound(format!(
                "no vhost-user export on {}: `vireo storage list` shows them",
                socket.display()
            ))),
        }
    }

    /// Stops the exports of volume `vol` (`POOL/VOL`) and its snapshots, or of the one
    /// snapshot if `vol` is `POOL/VOL@SNAP`.
    pub fn stop_volume(&self, vol: &str) {
        let mut exports = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        exports.retain(|socket, e| {
            let keep = !of_volume(&e.volume, vol);
            if !keep {
                tracing::info!(
                    "stopped serving {} on {}: it was deleted",
                    e.volume,
                    socket.display()
                );
            }
            keep
        });
    }

    /// The socket serving exactly `volume` (not its snapshots), if one does.
    pub fn serving(&self, volume: &str) -> Option<PathBuf> {
        let exports = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        exports
            .iter()
            .find(|(_, e)| e.volume == volume)
            .map(|(socket, _)| socket.clone())
    }

    pub fn list(&self) -> Vec<Value> {
        let exports = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        exports
            .iter()
            .map(|(socket, e)| json!({ "socket": socket, "volume": e.volume }))
            .collect()
    }

    pub fn stop_all(&self) {
        std::mem::take(&mut *self.exports.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
