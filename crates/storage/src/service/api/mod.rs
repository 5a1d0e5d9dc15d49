//! The service's HTTP/JSON API (every route is documented, with examples, in
//! docs/storage-api.md). Paths name objects (`/api/v1/pools/P/volumes/V/snapshots/S`), the
//! method says what to do with them, and errors are `{"error": message}` with the status
//! of [`StorageError::http_status`].
//!
//! - [`objects`]: pools, volumes, snapshots.
//! - [`copies`]: import and export jobs, vhost-user exports.

mod copies;
mod objects;

use super::Shared;
use crate::error::{Result, StorageError};
use copies::{export, import, vhost_start, vhost_stop};
use objects::{
    clone, pool_add_device, pool_create, rollback, snapshot_create, snapshot_delete, snapshot_info,
    volume_create, volume_delete, volume_qos, volume_resize,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::path::Path;
use vireo_http::{dispatch, json_body, HttpError, Reply, Request};

pub(crate) fn handle(svc: &Shared, req: &Request) -> Reply {
    dispatch(req, "/api/v1/", |s| route(svc, req, s), methods)
}

impl HttpError for StorageError {
    fn http_status(&self) -> u16 {
        StorageError::http_status(self)
    }
}

/// The methods each path takes (for 405 answers); mirrors [`route`].
fn methods(s: &[&str]) -> &'static [&'static str] {
    match s {
        ["ping"] | ["stats"] | ["pools", _] | ["jobs"] => &["GET"],
        ["pools"] | ["pools", _, "volumes"] | ["pools", _, "volumes", _, "snapshots"] => {
            &["GET", "POST"]
        }
        ["pools", _, "devices"]
        | ["pools", _, "rebalance"]
        | ["pools", _, "volumes", _, "resize" | "import" | "export"]
        | ["pools", _, "volumes", _, "snapshots", _, "clone" | "rollback" | "export"] => &["POST"],
        ["pools", _, "volumes", _, "qos"] => &["PUT", "POST"],
        ["pools", _, "volumes", _] | ["pools", _, "volumes", _, "snapshots", _] | ["jobs", _] => {
            &["GET", "DELETE"]
        }
        ["vhost-user"] => &["GET", "POST", "DELETE"],
        _ => &[],
    }
}

/// `None`: no route for this method and path.
fn route(svc: &Shared, req: &Request, s: &[&str]) -> Option<Result<Reply>> {
    let m = req.method.as_str();
    Some(match (s, m) {
        (["ping"], "GET") => Ok(Reply::ok(json!({
            "service": "vireo-storage",
            "version": env!("CARGO_PKG_VERSION"),
        }))),
        (["stats"], "GET") => Ok(stats(svc)),
        (["pools"], "GET") => Ok(Reply::ok(json!(svc
            .storage
            .pools()
            .iter()
            .map(|p| p.info())
            .collect::<Vec<_>>()))),
        (["pools"], "POST") => pool_create(svc, req),
        (["pools", p], "GET") => svc.storage.pool(p).map(|p| Reply::ok(json!(p.info()))),
        (["pools", p, "devices"], "POST") => pool_add_device(svc, p, req),
        (["pools", p, "rebalance"], "POST") => svc
            .storage
            .pool(p)
            .and_then(|p| p.rebalance_tiers())
            .map(|moved| Reply::ok(json!({ "moved": moved }))),
        (["pools", p, "volumes"], "GET") => {
            svc.storage.pool(p).map(|p| Reply::ok(json!(p.volumes())))
        }
        (["pools", p, "volumes"], "POST") => volume_create(svc, p, req),
        (["pools", p, "volumes", v], "GET") => svc
            .storage
            .pool(p)
            .and_then(|p| p.volume_info(v))
            .map(|i| Reply::ok(json!(i))),
        (["pools", p, "volumes", v], "DELETE") => volume_delete(svc, p, v),
        (["pools", p, "volumes", v, "resize"], "POST") => volume_resize(svc, p, v, req),
        (["pools", p, "volumes", v, "qos"], "PUT" | "POST") => volume_qos(svc, p, v, req),
        (["pools", p, "volumes", v, "import"], "POST") => import(svc, p, v, req),
        (["pools", p, "volumes", v, "export"], "POST") => export(svc, p, v, req),
        (["pools", p, "volumes", v, "snapshots"], "GET") => svc
            .storage
            .pool(p)
            .and_then(|p| p.snapshots(v))
            .map(|l| Reply::ok(json!(l))),
        (["pools", p, "volumes", v, "snapshots"], "POST") => snapshot_create(svc, p, v, req),
        (["pools", p, "volumes", v, "snapshots", snap], "GET") => {
            snapshot_info(svc, p, v, snap).map(Reply::ok)
        }
        (["pools", p, "volumes", v, "snapshots", snap], "DELETE") => {
            snapshot_delete(svc, p, v, snap)
        }
        (["pools", p, "volumes", v, "snapshots", snap, "clone"], "POST") => {
            clone(svc, p, v, snap, req)
        }
        (["pools", p, "volumes", v, "snapshots", snap, "rollback"], "POST") => {
            rollback(svc, p, v, snap)
        }
        (["pools", p, "volumes", v, "snapshots", snap, "export"], "POST") => {
            export(svc, p, &format!("{v}@{snap}"), req)
        }
        (["jobs"], "GET") => Ok(Reply::ok(json!(svc.jobs.list()))),
        (["jobs", id], "GET") => job_id(id)
            .and_then(|id| svc.jobs.get(id))
            .map(|j| Reply::ok(j.to_json())),
        (["jobs", id], "DELETE") => job_id(id)
            .and_then(|id| svc.jobs.cancel(id))
            .map(|j| Reply::ok(j.to_json())),
        (["vhost-user"], "GET") => Ok(Reply::ok(json!(svc.vhost.list()))),
        (["vhost-user"], "POST") => vhost_start(svc, req),
        (["vhost-user"], "DELETE") => vhost_stop(svc, req),
        _ => return None,
    })
}

/// Parses a JSON body (an empty body is `{}`), explaining what was expected if it fails.
pub(super) fn body<T: DeserializeOwned>(req: &Request, example: &str) -> Result<T> {
    json_body(req, example).map_err(StorageError::Invalid)
}

/// The service does not resolve paths against its own working directory, which is not the
/// client's: every path it is given must be absolute.
pub(super) fn absolute(path: &Path, what: &str) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "the {what} path {} is relative; give the service an absolute path",
            path.display()
        )))
    }
}

fn job_id(id: &str) -> Result<u64> {
    id.parse()
        .map_err(|_| StorageError::Invalid(format!("{id:?} is not a job id")))
}

fn stats(svc: &Shared) -> Reply {
    let pools = svc.storage.pools();
    let volumes: Vec<_> = pools.iter().flat_map(|p| p.volumes()).collect();
    Reply::ok(json!({
        "pools": pools.iter().map(|p| p.info()).collect::<Vec<_>>(),
        "volumes": volumes,
        "jobs": svc.jobs.list(),
        "vhost_user": svc.vhost.list(),
        "nbd": svc.nbd,
    }))
}
