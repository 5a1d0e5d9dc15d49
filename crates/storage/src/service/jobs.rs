//! Long operations (imports and exports) run as jobs on their own threads: the request that
//! starts one returns at once with the job's id, and the client polls `GET /api/v1/jobs/ID`
//! for its progress and outcome.

use crate::error::{Result, StorageError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Finished jobs kept for clients to read their outcome; older ones are forgotten.
const KEEP_FINISHED: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Failed(String),
    Cancelled,
}

pub(crate) struct Job {
    pub id: u64,
    kind: &'static str,
    /// `POOL/VOL` or `POOL/VOL@SNAP`.
    pub volume: String,
    file: PathBuf,
    started: u64,
    pub total: AtomicU64,
    pub done: AtomicU64,
    cancel: AtomicBool,
    state: Mutex<State>,
}

impl Job {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn running(&self) -> bool {
        self.state() == State::Running
    }

    pub fn to_json(&self) -> Value {
        let (state, error) = match self.state() {
            State::Running => ("running", None),
            State::Done => ("done", None),
            State::Failed(e) => ("failed", Some(e)),
            State::Cancelled => ("cancelled", None),
        };
        json!({
            "id": self.id,
            "kind": self.kind,
            "volume": self.volume,
            "file": self.file,
            "started": self.started,
            "state": state,
            "done": self.done.load(Ordering::Relaxed),
            "total": self.total.load(Ordering::Relaxed),
            "error": error,
        })
    }
}

#[derive(Default)]
pub(crate) struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Whether `name` (`POOL/VOL[@SNAP]`) is volume `vol` (`POOL/VOL`) or one of its snapshots.
pub(crate) fn of_volume(name: &str, vol: &str) -> bool {
    name == vol
        || name
            .strip_prefix(vol)
            .is_some_and(|rest| rest.starts_with('@'))
}

impl Jobs {
    /// Registers a job on `volume`, refusing if another job is running on it or its
    /// snapshots (two copies into one volume would interleave).
    pub fn begin(&self, kind: &'static str, volume: &str, file: PathBuf) -> Result<Arc<Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let base = volume.split('@').next().unwrap_or(volume);
        if let Some(j) = jobs
            .values()
            .find(|j| j.running() && (of_volume(&j.volume, base) || of_volume(volume, &j.volume)))
        {
            return Err(busy(j));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            kind,
            volume: volume.to_string(),
            file,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            state: Mutex::new(State::Running),
        });
        jobs.insert(id, job.clone());
        // Forget the oldest finished jobs beyond the bound.
        let finished: Vec<u64> = jobs
            .values()
            .filter(|j| !j.running())
            .map(|j| j.id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            jobs.remove(id);
        }
        Ok(job)
    }

    /// Drops a job that failed before its thread started (its error went to the request).
    pub fn abandon(&self, job: &Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.id);
    }

    /// Runs `work` for `job` on a new thread; its result becomes the job's outcome.
    pub fn run<F>(&self, job: Arc<Job>, work: F) -> Result<()>
    where
        F: FnOnce(&Job) -> std::result::Result<(), String> + Send + 'static,
    {
        let j = job.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("job-{}", job.id))
            .spawn(move || {
                let outcome = match work(&j) {
                    Ok(()) => State::Done,
                    Err(_) if j.cancelled() => State::Cancelled,
                    Err(e) => {
                        tracing::warn!("job {} ({} {}): {e}", j.id, j.kind, j.volume);
                        State::Failed(e)
                    }
                };
                tracing::info!("job {} ({} {}): {outcome:?}", j.id, j.kind, j.volume);
                *j.state.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
            });
        match spawned {
            Ok(handle) => {
                let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
                Ok(())
            }
            Err(e) => {
                self.abandon(&job);
                Err(StorageError::Io {
                    path: PathBuf::from("job thread"),
                    source: e,
                })
            }
        }
    }

    pub fn get(&self, id: u64) -> Result<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                StorageError::NotFound(format!(
                    "no job {id}: `GET /api/v1/jobs` lists the jobs (finished ones are kept for a while)"
                ))
            })
    }

    pub fn list(&self) -> Vec<Value> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.values().map(|j| j.to_json()).collect()
    }

    /// Asks a running job to stop; it ends as `cancelled` at its next chunk.
    pub fn cancel(&self, id: u64) -> Result<Arc<Job>> {
        let job = self.get(id)?;
        job.cancel.store(true, Ordering::Relaxed);
        Ok(job)
    }

    /// Fails with Conflict if a job runs on volume `vol` (`POOL/VOL`) or its snapshots.
    pub fn check_idle(&self, vol: &str) -> Result<()> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs
            .values()
            .find(|j| j.running() && of_volume(&j.volume, vol))
        {
            Some(j) => Err(busy(j)),
            None => Ok(()),
        }
    }

    /// Fails with Conflict if an import into volume `vol` (`POOL/VOL`) is running.
    pub fn check_not_importing(&self, vol: &str) -> Result<()> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs
            .values()
            .find(|j| j.running() && j.kind == "import" && j.volume == vol)
        {
            Some(j) => Err(busy(j)),
            None => Ok(()),
        }
    }

    /// Cancels every job and waits for their threads (at shutdown).
    pub fn stop_all(&self) {
        for job in self.jobs.lock().unwrap_or_else(|p| p.into_inner()).values() {
            job.cancel.store(true, Ordering::Relaxed);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn busy(j: &Job) -> StorageError {
    StorageError::Conflict(format!(
        "{} is busy: job {} ({}) is running on {}; wait for it, or cancel it with `vireo storage jobs --cancel {}`",
        j.volume, j.id, j.kind, j.volume, j.id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_report_and_exclude_each_other() {
        let jobs = Jobs::default();
        let a = jobs.begin("import", "p/v", "/x".into()).unwrap();
        assert!(jobs.begin("export", "p/v@s", "/y".into()).is_err());
        assert!(jobs.check_idle("p/v").is_err());
        assert!(jobs.check_idle("p/vv").is_ok());
        let b = jobs.begin("export", "p/w", "/y".into()).unwrap();
        jobs.run(a.clone(), |j| {
            j.done.store(5, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        jobs.run(b.clone(), |_| Err("disk on fire".into())).unwrap();
        let c = jobs.begin("import", "p/x", "/z".into()).unwrap();
        jobs.cancel(c.id).unwrap();
        jobs.run(c.clone(), |j| {
            while !j.cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err("stopped".into())
        })
        .unwrap();
        // Let a and b end on their own before c is stopped with the rest.
        while a.running() || b.running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        jobs.stop_all();
        let v = jobs.get(a.id).unwrap().to_json();
        assert_eq!(v["state"], "done");
        assert_eq!(v["done"], 5);
        let v = jobs.get(b.id).unwrap().to_json();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["error"], "disk on fire");
        assert_eq!(jobs.get(c.id).unwrap().to_json()["state"], "cancelled");
        assert!(jobs.get(99).is_err());
        assert_eq!(jobs.list().len(), 3);
        // Finished jobs no longer hold their volume.
        jobs.check_idle("p/v").unwrap();
    }

    #[test]
    fn snapshot_names_belong_to_their_volume() {
        assert!(of_volume("p/v", "p/v"));
        assert!(of_volume("p/v@s", "p/v"));
        assert!(!of_volume("p/vx", "p/v"));
        assert!(!of_volume("p/v", "p/v@s"));
    }
}
