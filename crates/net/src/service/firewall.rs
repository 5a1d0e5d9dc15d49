//! The firewall's part of the service: rules and default policies (persisted in net.json
//! as [`FirewallState`], re-applied at start), their API, the flow log and the
//! connection table (docs/net-api.md, "Firewall").
//!
//! Choices: a network or port that has rules (or, for a network, a deny default) cannot be
//! deleted; the error lists the rules to delete first, so nothing is lost silently. Rule
//! changes judge new connections; tracked ones continue (`DELETE /api/v1/conntrack`
//! flushes them).

use super::api::body;
use super::config::NetState;
use super::{Control, Net};
use crate::datapath::firewall::rules::{
    parse_cidr, parse_ports, Action, Direction, Proto, RuleConfig, Target,
};
use crate::datapath::firewall::RuleHits;
use crate::datapath::packet::proto_name;
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;
use vireo_http::{Reply, Request};

/// Where a rule lands when the client gives no priority.
pub const DEFAULT_PRIORITY: u32 = 1000;
/// Tracked connections a listing shows at most.
const CONNTRACK_LIST_MAX: usize = 10_000;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FirewallState {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Networks whose default policy is deny (the others allow).
    #[serde(default)]
    pub deny_default: Vec<String>,
    /// The id the next rule gets (ids are never reused).
    #[serde(default)]
    pub next_id: u64,
}

/// A rule as saved and shown.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: u64,
    /// Exactly one of `network` and `port`: what the rule is attached to.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub port: Option<String>,
    pub direction: Direction,
    pub proto: Proto,
    #[serde(default)]
    pub cidr: Option<String>,
    /// Destination port or range, `80` or `8000-8080`.
    #[serde(default)]
    pub dport: Option<String>,
    pub action: Action,
    pub priority: u32,
}

/// What a client sends to add a rule: the target as `network` or `port`, or as `target`,
/// a name the service looks up (refused if it names both a network and a port).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    port: Option<String>,
    direction: Direction,
    proto: Proto,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    dport: Option<String>,
    action: Action,
    #[serde(default)]
    priority: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    action: Action,
}

impl RuleSpec {
    pub fn config(&self) -> Result<RuleConfig> {
        let target = match (&self.network, &self.port) {
            (Some(n), None) => Target::Network(n.clone()),
            (None, Some(p)) => Target::Port(p.clone()),
            _ => {
                return Err(NetError::Invalid(
                    "a rule is attached to a network or a port: give exactly one".into(),
                ))
            }
        };
        let c = RuleConfig {
            id: self.id,
            target,
            direction: self.direction,
            proto: self.proto,
            cidr: self.cidr.as_deref().map(parse_cidr).transpose()?,
            ports: self.dport.as_deref().map(parse_ports).transpose()?,
            action: self.action,
            priority: self.priority,
        };
        c.check()?;
        Ok(c)
    }
}

/// The datapath's view of the saved firewall, leaving out rules of `skip` ports.
fn configs(st: &NetState, skip: &HashSet<String>) -> Result<Vec<RuleConfig>> {
    st.firewall
        .rules
        .iter()
        .filter(|r| r.port.as_ref().is_none_or(|p| !skip.contains(p)))
        .map(RuleSpec::config)
        .collect()
}

fn apply(dp: &Datapath, st: &NetState, skip: &HashSet<String>) -> Result<()> {
    dp.set_firewall(&configs(st, skip)?, &st.firewall.deny_default)
}

/// At start: the saved rules (those of ports that could not be re-created wait for
/// them), and the flow log in the state directory.
pub(super) fn restore(dp: &Datapath, st: &NetState, file: &Path, inactive: &HashSet<String>) {
    if let Err(e) = apply(dp, st, inactive) {
        tracing::error!("the firewall rules could not be restored: {e}");
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    if let Err(e) = dp.start_flow_log(dir) {
        tracing::error!("no flow log file: {e}");
    }
}

/// Refuses to delete a network or port the firewall refers to.
pub(super) fn check_unused(st: &NetState, network: Option<&str>, port: Option<&str>) -> Result<()> {
    let fw = &st.firewall;
    let ids: Vec<String> = fw
        .rules
        .iter()
        .filter(|r| {
            (network.is_some() && r.network.as_deref() == network)
                || (port.is_some() && r.port.as_deref() == port)
        })
        .map(|r| r.id.to_string())
        .collect();
    let (kind, name) = match (network, port) {
        (Some(n), _) => ("network", n),
        (None, Some(p)) => ("port", p),
        (None, None) => return Ok(()),
    };
    if !ids.is_empty() {
        return Err(NetError::Conflict(format!(
            "{kind} {name} has firewall rules ({}); delete them first (`vireo net firewall delete ID`)",
            ids.join(", ")
        )));
    }
    if network.is_some_and(|n| fw.deny_default.iter().any(|d| d == n)) {
        return Err(NetError::Conflict(format!(
            "network {name}'s firewall default is deny; set it back first (`vireo net firewall default {name} allow`)"
        )));
    }
    Ok(())
}

/// `/api/v1/firewall/...`, `/api/v1/flows`, `/api/v1/conntrack`.
pub(super) fn api(net: &Net, req: &Request, s: &[&str]) -> Option<Result<Reply>> {
    let id = |t: &str| {
        t.parse::<u64>()
            .map_err(|_| NetError::Invalid(format!("bad rule id {t:?}: rule ids are numbers")))
    };
    Some(match (s, req.method.as_str()) {
        (["firewall", "rules"], "GET") => Ok(Reply::ok(net.firewall_rules())),
        (["firewall", "rules"], "POST") => body::<NewRule>(
            req,
            r#"{"network": "blue", "direction": "in", "proto": "tcp", "dport": "22", "action": "allow"}"#,
        )
        .and_then(|r| net.add_firewall_rule(r))
        .map(|v| Reply::with_status(201, v)),
        (["firewall", "rules", i], "GET") => id(i).and_then(|i| net.firewall_rule(i)).map(Reply::ok),
        (["firewall", "rules", i], "DELETE") => id(i)
            .and_then(|i| net.delete_firewall_rule(i))
            .map(|()| Reply::no_content()),
        (["firewall", "defaults"], "GET") => Ok(Reply::ok(net.firewall_defaults())),
        (["firewall", "defaults", n], "PUT" | "POST") => body::<Policy>(req, r#"{"action": "deny"}"#)
            .and_then(|p| net.set_firewall_default(n, p.action))
            .map(Reply::ok),
        (["flows"], "GET") => Ok(Reply::ok(net.flows())),
        (["conntrack"], "GET") => Ok(Reply::ok(net.conntrack())),
        (["conntrack"], "DELETE") => Ok(Reply::ok(
            json!({ "flushed": net.datapath.flush_conntrack() }),
        )),
        _ => return None,
    })
}

/// The methods each firewall path takes; mirrors [`api`].
pub(super) fn methods(s: &[&str]) -> &'static [&'static str] {
    match s {
        ["firewall", "rules"] => &["GET", "POST"],
        ["firewall", "rules", _] => &["GET", "DELETE"],
        ["firewall", "defaults"] | ["flows"] => &["GET"],
        ["firewall", "defaults", _] => &["PUT", "POST"],
        ["conntrack"] => &["GET", "DELETE"],
        _ => &[],
    }
}

impl Net {
    /// Applies `next` to the datapath, then saves it; on failure the datapath gets the
    /// saved rules back.
    fn fw_commit(&self, c: &mut Control, next: NetState) -> Result<()> {
        apply(&self.datapath, &next, &c.inactive)?;
        if let Err(e) = next.save(&self.file) {
            if let Err(u) = apply(&self.datapath, &c.saved, &c.inactive) {
                tracing::error!("restoring the firewall rules after a failed save: {u}");
            }
            return Err(e);
        }
        c.saved = next;
        Ok(())
    }

    fn rule_json(&self, r: &RuleSpec, hits: &[RuleHits]) -> Value {
        let h = hits.iter().find(|h| h.id == r.id);
        let mut v = json!(r);
        v["hits"] = json!(h.map_or(0, |h| h.hits));
        v["bytes"] = json!(h.map_or(0, |h| h.bytes));
        v
    }

    pub fn firewall_rules(&self) -> Value {
        let c = self.control();
        let hits = self.datapath.firewall_hits();
        json!(c
            .saved
            .firewall
            .rules
            .iter()
            .map(|r| self.rule_json(r, &hits))
            .collect::<Vec<_>>())
    }

    pub fn firewall_rule(&self, id: u64) -> Result<Value> {
        let c = self.control();
        let r = c.saved.firewall.rules.iter().find(|r| r.id == id);
        r.map(|r| self.rule_json(r, &self.datapath.firewall_hits()))
            .ok_or_else(|| NetError::NotFound(format!("no firewall rule {id}")))
    }

    pub fn add_firewall_rule(&self, new: NewRule) -> Result<Value> {
        let mut c = self.control();
        let st = &c.saved;
        let (network, port) = match (new.target, new.network, new.port) {
            (None, Some(n), None) => (Some(st.network(&n)?.name.clone()), None),
            (None, None, Some(p)) => (None, Some(st.port(&p)?.name.clone())),
            (Some(t), None, None) => match (st.network(&t).is_ok(), st.port(&t).is_ok()) {
                (true, false) => (Some(t), None),
                (false, true) => (None, Some(t)),
                (true, true) => {
                    return Err(NetError::Conflict(format!(
                        "{t} names both a network and a port; say which: --network {t} or --port-name {t}"
                    )))
                }
                (false, false) => {
                    return Err(NetError::NotFound(format!(
                        "no network or port named {t:?}"
                    )))
                }
            },
            _ => {
                return Err(NetError::Invalid(
                    "give the rule's target once: a network or a port name".into(),
                ))
            }
        };
        let mut next = st.clone();
        let id = next.firewall.next_id.max(1);
        let mut rule = RuleSpec {
            id,
            network,
            port,
            direction: new.direction,
            proto: new.proto,
            cidr: new.cidr,
            dport: new.dport,
            action: new.action,
            priority: new.priority.unwrap_or(DEFAULT_PRIORITY),
        };
        // Checked, and saved normalized: `10.1.2.3` as `10.1.2.3/32`, `80-80` as `80`.
        let checked = rule.config()?;
        if let Some((a, len)) = checked.cidr {
            rule.cidr = Some(format!("{a}/{len}"));
        }
        if let Some((lo, hi)) = checked.ports {
            rule.dport = Some(if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            });
        }
        next.firewall.next_id = id + 1;
        next.firewall.rules.push(rule.clone());
        self.fw_commit(&mut c, next)?;
        tracing::info!("added firewall rule {id}");
        Ok(self.rule_json(&rule, &self.datapath.firewall_hits()))
    }

    pub fn delete_firewall_rule(&self, id: u64) -> Result<()> {
        let mut c = self.control();
        if !c.saved.firewall.rules.iter().any(|r| r.id == id) {
            return Err(NetError::NotFound(format!("no firewall rule {id}")));
        }
        let mut next = c.saved.clone();
        next.firewall.rules.retain(|r| r.id != id);
        self.fw_commit(&mut c, next)?;
        tracing::info!("deleted firewall rule {id}");
        Ok(())
    }

    pub fn firewall_defaults(&self) -> Value {
        let c = self.control();
        let deny = &c.saved.firewall.deny_default;
        json!(c
            .saved
            .networks
            .iter()
            .map(|n| {
                let d = deny.contains(&n.name);
                json!({ "network": n.name, "default": if d { "deny" } else { "allow" } })
            })
            .collect::<Vec<_>>())
    }

    pub fn set_firewall_default(&self, network: &str, action: Action) -> Result<Value> {
        let mut c = self.control();
        c.saved.network(network)?;
        let mut next = c.saved.clone();
        next.firewall.deny_default.retain(|n| n != network);
        if action == Action::Deny {
            next.firewall.deny_default.push(network.to_string());
        }
        self.fw_commit(&mut c, next)?;
        tracing::info!("firewall default of network {network}: {action:?}");
        Ok(json!({ "network": network, "default": action }))
    }

    /// The recent flow log (in memory, oldest first) and how many lines were suppressed.
    pub fn flows(&self) -> Value {
        let flows: Vec<Value> = self
            .datapath
            .flows(usize::MAX)
            .iter()
            .map(|f| f.json())
            .collect();
        let st = self.datapath.firewall_stats();
        json!({ "flows": flows, "suppressed": st.flowlog_suppressed })
    }

    pub fn conntrack(&self) -> Value {
        json!(self
            .datapath
            .conntrack(CONNTRACK_LIST_MAX)
            .iter()
            .map(|c| json!({
                "proto": proto_name(c.proto),
                "src": c.src.to_string(), "sport": c.sport,
                "dst": c.dst.to_string(), "dport": c.dport,
                "network": c.network, "from": c.from, "to": c.to,
                "state": c.state, "expires_in_secs": c.expires_in.as_secs(),
                "packets": c.packets[0] + c.packets[1], "bytes": c.bytes[0] + c.bytes[1],
                "reply_packets": c.packets[1],
            }))
            .collect::<Vec<_>>())
    }

    /// The firewall's counters in the Prometheus text format.
    pub fn firewall_metrics(&self) -> String {
        let mut out = String::new();
        let st = self.datapath.firewall_stats();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "vireo_net_conntrack_entries",
            "gauge",
            "Connections the firewall tracks.",
            st.conntrack_entries,
        );
        one(
            "vireo_net_firewall_denied_packets_total",
            "counter",
            "Packets of no tracked connection that the firewall rules denied.",
            st.denied,
        );
        one(
            "vireo_net_conntrack_full_drops_total",
            "counter",
            "New connections refused because the connection table was full.",
            st.conntrack_full,
        );
        one(
            "vireo_net_flowlog_suppressed_total",
            "counter",
            "Flow log lines not written: over the rate limit or the writer behind.",
            st.flowlog_suppressed,
        );
        let hits = self.datapath.firewall_hits();
        for (name, help, f) in [
            (
                "vireo_net_firewall_rule_hits_total",
                "New connections (first packets) the rule matched.",
                (|h: &RuleHits| h.hits) as fn(&_) -> u64,
            ),
            (
                "vireo_net_firewall_rule_bytes_total",
                "Bytes of the first packets the rule matched.",
                |h| h.bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for h in &hits {
                let _ = writeln!(out, "{name}{{rule=\"{}\"}} {}", h.id, f(h));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
