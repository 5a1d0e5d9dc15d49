//! STATE_DIR/leases.json: every network's leases, so that a restarted service gives each
//! client the address it had.
//!
//! The DHCP servers run on the port threads, which forward every frame of their port: they
//! must not wait for a disk (an fsync can take tens of milliseconds on a busy one). So a
//! server only replaces its network's leases in memory and nudges a writer thread through a
//! channel of one slot: nudges while a write is pending coalesce, and the writer always
//! writes the newest state. The write is atomic (temporary file, fsync, rename, directory
//! fsync), as net.json's. Dropping the store flushes the last change.

use super::pool::Lease;
use crate::datapath::lock;
use crate::error::{NetError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The file's name inside the state directory.
pub const LEASES_FILE: &str = "leases.json";

type Leases = BTreeMap<String, Vec<Lease>>;

pub struct LeaseStore {
    leases: Arc<Mutex<Leases>>,
    nudge: Option<SyncSender<()>>,
    writer: Option<JoinHandle<()>>,
}

impl LeaseStore {
    /// Loads `path` (missing: no leases yet) and starts its writer.
    pub fn open(path: &Path) -> Result<LeaseStore> {
        let leases: Leases = match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|e| {
                NetError::Invalid(format!(
                    "{} is not a valid lease file ({e}); fix or move it away",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Leases::new(),
            Err(source) => {
                return Err(NetError::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })
            }
        };
        let leases = Arc::new(Mutex::new(leases));
        let (nudge, nudged) = sync_channel::<()>(1);
        let (shared, file) = (leases.clone(), path.to_path_buf());
        let writer = std::thread::Builder::new()
            .name("net-leases".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    let snapshot = lock(&shared).clone();
                    if let Err(e) = write_json_atomic(&file, &snapshot) {
                        tracing::error!("saving the DHCP leases: {e}");
                    }
                }
            })
            .map_err(|source| NetError::Io {
                context: "starting the DHCP lease writer".into(),
                source,
            })?;
        Ok(LeaseStore {
            leases,
            nudge: Some(nudge),
            writer: Some(writer),
        })
    }

    /// The saved leases of network `net`.
    pub fn leases(&self, net: &str) -> Vec<Lease> {
        lock(&self.leases).get(net).cloned().unwrap_or_default()
    }

    /// Replaces network `net`'s leases (none: the network is forgotten) and has them
    /// written soon. Never blocks on the disk.
    pub fn update(&self, net: &str, leases: Vec<Lease>) {
        {
            let mut all = lock(&self.leases);
            if leases.is_empty() {
                all.remove(net);
            } else {
                all.insert(net.to_string(), leases);
            }
        }
        if let Some(n) = &self.nudge {
            match n.try_send(()) {
                // Full: a write is pending and will see this change.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::error!("the DHCP lease writer stopped; leases are not saved")
                }
            }
        }
    }
}

impl Drop for LeaseStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after the pending write, if any.
        self.nudge.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Writes `value` to `path` as JSON: to a temporary file, synced, renamed over the old
/// one, and the directory synced: a crash leaves either the old file or the new one, never
/// half of one. (net.json and leases.json.)
pub(crate) fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let io = |what: &str| {
        let context = format!("{what} {}", path.display());
        move |source| NetError::Io { context, source }
    };
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| io("encoding")(e.into()))?;
    text.push(b'\n');
    let mut f = std::fs::File::create(&tmp).map_err(io("creating a temporary for"))?;
    f.write_all(&text).map_err(io("writing"))?;
    f.sync_all().map_err(io("syncing"))?;
    std::fs::rename(&tmp, path).map_err(io("replacing"))?;
    if let Some(dir) = path.parent() {
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
