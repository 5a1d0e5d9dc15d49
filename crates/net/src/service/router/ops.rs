//! The router operations of the API (`/api/v1/routers/...`, see docs/net-api.md) and the
//! routers' Prometheus counters.

use super::{router_of, subnet_of, v4, v4_cidr, NatSpec, RouteSpec, RouterSpec};
use crate::datapath::packet::{proto_name, FlowKey};
use crate::error::{NetError, Result};
use crate::service::api::body;
use crate::service::{validate, Control, Net};
use serde::Deserialize;
use serde_json::{json, Value};
use vireo_http::{Reply, Request};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attach {
    network: String,
}

/// The methods each router path takes (for 405 answers); mirrors [`api`].
pub(in crate::service) fn methods(s: &[&str]) -> &'static [&'static str] {
    match s {
        ["routers"] => &["GET", "POST"],
        ["routers", _] => &["GET", "DELETE"],
        ["routers", _, "networks"] => &["POST"],
        ["routers", _, "networks", _] | ["routers", _, "routes", _] | ["routers", _, "nat", _] => {
            &["DELETE"]
        }
        ["routers", _, "routes"] | ["routers", _, "nat"] => &["GET", "POST"],
        ["routers", _, "sessions"] => &["GET"],
        _ => &[],
    }
}

/// `None`: no route for this method and path.
pub(in crate::service) fn api(net: &Net, req: &Request, s: &[&str]) -> Option<Result<Reply>> {
    let created = |v| Reply::with_status(201, v);
    Some(match (s, req.method.as_str()) {
        (["routers"], "GET") => Ok(Reply::ok(net.routers())),
        (["routers"], "POST") => body::<Named>(req, r#"{"name": "r1"}"#)
            .and_then(|n| net.create_router(&n.name))
            .map(created),
        (["routers", r], "GET") => net.router(r).map(Reply::ok),
        (["routers", r], "DELETE") => net.delete_router(r).map(|()| Reply::no_content()),
        (["routers", r, "networks"], "POST") => body::<Attach>(req, r#"{"network": "blue"}"#)
            .and_then(|a| net.attach(r, &a.network))
            .map(created),
        (["routers", r, "networks", n], "DELETE") => net.detach(r, n).map(Reply::ok),
        (["routers", r, "routes"], "GET") => net.router(r).map(|v| Reply::ok(v["routes"].clone())),
        (["routers", r, "routes"], "POST") => {
            body::<RouteSpec>(req, r#"{"cidr": "10.9.0.0/24", "via": "10.0.1.254"}"#)
                .and_then(|rt| net.add_route(r, &rt))
                .map(created)
        }
        (["routers", r, "routes", cidr], "DELETE") => net.delete_route(r, cidr).map(Reply::ok),
        (["routers", r, "nat"], "GET") => net.router(r).map(|v| Reply::ok(v["nat"].clone())),
        (["routers", r, "nat"], "POST") => body::<NatSpec>(
            req,
            r#"{"kind": "snat", "source": "10.0.1.0/24", "out": "wan"}"#,
        )
        .and_then(|n| net.add_nat(r, &n))
        .map(created),
        (["routers", r, "nat", id], "DELETE") => net.delete_nat(r, id).map(Reply::ok),
        (["routers", r, "sessions"], "GET") => net.sessions(r).map(Reply::ok),
        _ => return None,
    })
}

fn flow_json(f: &FlowKey) -> Value {
    json!({
        "proto": proto_name(f.proto),
        "src": format!("{}:{}", f.src, f.sport),
        "dst": format!("{}:{}", f.dst, f.dport),
    })
}

impl Net {
    /// Makes router `name` be `new` (`None`: deleted) in the datapath, then saves; if the
    /// save fails the datapath gets the old router back.
    fn change_router(&self, c: &mut Control, name: &str, new: Option<&RouterSpec>) -> Result<()> {
        let old = c.saved.routers.iter().find(|r| r.name == name).cloned();
        let mut next = c.saved.clone();
        match new {
            Some(r) => {
                self.datapath.apply_router(&r.config()?)?;
                match next.routers.iter_mut().find(|o| o.name == name) {
                    Some(o) => *o = r.clone(),
                    None => next.routers.push(r.clone()),
                }
            }
            None => {
                self.datapath.remove_router(name)?;
                next.routers.retain(|o| o.name != name);
            }
        }
        self.commit(c, next, || {
            let undo = match &old {
                Some(o) => o.config().and_then(|cfg| self.datapath.apply_router(&cfg)),
                None => self.datapath.remove_router(name),
            };
            if let Err(u) = undo {
                tracing::error!("router {name}: undoing after a failed save: {u}");
            }
        })
    }

    /// Changes router `name` with `f` (which checks what it does against the state).
    fn edit_router(
        &self,
        name: &str,
        f: impl FnOnce(&crate::service::config::NetState, &mut RouterSpec) -> Result<()>,
    ) -> Result<Value> {
        let mut c = self.control();
        let mut r = find(&c, name)?.clone();
        f(&c.saved, &mut r)?;
        self.change_router(&mut c, name, Some(&r))?;
        Ok(self.router_json(&c, &r))
    }

    pub fn routers(&self) -> Value {
        let c = self.control();
        json!(c
            .saved
            .routers
            .iter()
            .map(|r| self.router_json(&c, r))
            .collect::<Vec<_>>())
    }

    pub fn router(&self, name: &str) -> Result<Value> {
        let c = self.control();
        Ok(self.router_json(&c, find(&c, name)?))
    }

    pub fn create_router(&self, name: &str) -> Result<Value> {
        validate::name("router", name)?;
        let mut c = self.control();
        if find(&c, name).is_ok() {
            return Err(NetError::Conflict(format!(
                "a router named {name} exists already"
            )));
        }
        let r = RouterSpec {
            name: name.to_string(),
            ..Default::default()
        };
        self.change_router(&mut c, name, Some(&r))?;
        tracing::info!("created router {name}");
        Ok(self.router_json(&c, &r))
    }

    /// Refused while networks are attached: detaching them is what undoes the routing,
    /// one deliberate step at a time (as deleting a network needs its ports gone).
    pub fn delete_router(&self, name: &str) -> Result<()> {
        let mut c = self.control();
        let r = find(&c, name)?;
        if !r.networks.is_empty() {
            return Err(NetError::Conflict(format!(
                "router {name} is attached to {}; detach them first",
                r.networks.join(", ")
            )));
        }
        self.change_router(&mut c, name, None)?;
        tracing::info!("deleted router {name}");
        Ok(())
    }

    pub fn attach(&self, name: &str, net: &str) -> Result<Value> {
        let v = self.edit_router(name, |st, r| {
            subnet_of(st, net)?;
            if let Some(o) = router_of(st, net) {
                return Err(NetError::Conflict(format!(
                    "network {net} is attached to router {} already; a network joins one \
                     router at most",
                    o.name
                )));
            }
            r.networks.push(net.to_string());
            Ok(())
        })?;
        tracing::info!("attached network {net} to router {name}");
        Ok(v)
    }

    pub fn detach(&self, name: &str, net: &str) -> Result<Value> {
        self.edit_router(name, |st, r| {
            if !r.networks.iter().any(|n| n == net) {
                return Err(NetError::NotFound(format!(
                    "network {net} is not attached to router {name}"
                )));
            }
            let users = r.users_of(st, net);
            if !users.is_empty() {
                return Err(NetError::Conflict(format!(
                    "network {net} is used by {} of router {name}; delete them first",
                    users.join(", ")
                )));
            }
            r.networks.retain(|n| n != net);
            Ok(())
        })
    }

    pub fn add_route(&self, name: &str, route: &RouteSpec) -> Result<Value> {
        self.edit_router(name, |st, r| {
            let (net, len) = v4_cidr(&route.cidr)?;
            let cidr = format!("{net}/{len}");
            let via = v4(&route.via, "next hop")?;
            let on = r
                .networks
                .iter()
                .find(|n| subnet_of(st, n).is_ok_and(|s| super::in_net(via, s)));
            let Some(on) = on else {
                return Err(NetError::Invalid(format!(
                    "the next hop {via} is in no network attached to router {name}; \
                     it must be a neighbour in one of {}",
                    r.networks.join(", ")
                )));
            };
            let gw = st.network(on)?.addressing().gateway;
            if gw == Some(via) {
                return Err(NetError::Invalid(format!(
                    "the next hop {via} is the router's own address in {on}"
                )));
            }
            if r.routes.iter().any(|o| o.cidr == cidr) {
                return Err(NetError::Conflict(format!(
                    "router {name} has a route to {cidr} already; delete it first"
                )));
            }
            r.routes.push(RouteSpec {
                cidr,
                via: via.to_string(),
            });
            Ok(())
        })
    }

    pub fn delete_route(&self, name: &str, cidr: &str) -> Result<Value> {
        self.edit_router(name, |_, r| {
            let (net, len) = v4_cidr(cidr)?;
            let cidr = format!("{net}/{len}");
            let before = r.routes.len();
            r.routes.retain(|o| o.cidr != cidr);
            if r.routes.len() == before {
                return Err(NetError::NotFound(format!(
                    "router {name} has no route to {cidr}"
                )));
            }
            Ok(())
        })
    }

    pub fn add_nat(&self, name: &str, spec: &NatSpec) -> Result<Value> {
        self.edit_router(name, |st, r| {
            let n = spec.check(st, r)?;
            r.nat.push(n);
            Ok(())
        })
    }

    pub fn delete_nat(&self, name: &str, id: &str) -> Result<Value> {
        self.edit_router(name, |_, r| {
            let id: u32 = id.parse().map_err(|_| {
                NetError::Invalid(format!(
                    "bad NAT rule id {id:?}: use the number `nat list` shows"
                ))
            })?;
            let before = r.nat.len();
            r.nat.retain(|n| n.id != id);
            if r.nat.len() == before {
                return Err(NetError::NotFound(format!(
                    "router {name} has no NAT rule {id}"
                )));
            }
            Ok(())
        })
    }

    pub fn sessions(&self, name: &str) -> Result<Value> {
        let c = self.control();
        find(&c, name)?;
        let v = self.datapath.router_sessions(name)?;
        Ok(json!(v
            .iter()
            .map(|(orig, reply, left)| json!({
                "original": flow_json(orig),
                "reply": flow_json(reply),
                "expires_secs": left,
            }))
            .collect::<Vec<_>>()))
    }

    fn router_json(&self, c: &Control, r: &RouterSpec) -> Value {
        let interfaces: Vec<Value> = r
            .networks
            .iter()
            .filter_map(|n| c.saved.network(n).ok())
            .map(|n| json!({"network": n.name, "address": n.gateway, "subnet": n.subnet}))
            .collect();
        let stats = self.datapath.router_stats(&r.name).ok();
        json!({
            "name": r.name, "networks": r.networks, "interfaces": interfaces,
            "routes": r.routes, "nat": r.nat, "stats": stats,
        })
    }
}

fn find<'a>(c: &'a Control, name: &str) -> Result<&'a RouterSpec> {
    c.saved
        .routers
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| NetError::NotFound(format!("no router named {name:?}")))
}
