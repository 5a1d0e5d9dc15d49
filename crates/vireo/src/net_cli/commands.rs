//! The client commands: each one API call and a line or table of output.

use super::{seg, show, Client, NetworkCmd, PortCmd, QosCmd};
use serde_json::{json, Value};

pub(super) fn network(c: &Client, cmd: NetworkCmd) -> Result<(), String> {
    match cmd {
        NetworkCmd::Create {
            name,
            vlan,
            subnet,
            gateway,
            dhcp,
        } => {
            let n = c.call(
                "POST",
                "/api/v1/networks",
                Some(json!({
                    "name": name, "vlan": vlan, "subnet": subnet, "gateway": gateway, "dhcp": dhcp,
                })),
            )?;
            println!("created network {name}{}", show::network_extras(&n));
        }
        NetworkCmd::Delete { name } => {
            c.call("DELETE", &format!("/api/v1/networks/{}", seg(&name)), None)?;
            println!("deleted network {name}");
        }
        NetworkCmd::List { json } => {
            let list = c.call("GET", "/api/v1/networks", None)?;
            show::print(&list, json, show::networks);
        }
        NetworkCmd::Info { name } => {
            show::pretty(&c.call("GET", &format!("/api/v1/networks/{}", seg(&name)), None)?)
        }
    }
    Ok(())
}

pub(super) fn port(c: &Client, cmd: PortCmd) -> Result<(), String> {
    match cmd {
        PortCmd::Add {
            network,
            name,
            tap,
            vhost_user,
            mac,
            vlan,
            trunk,
        } => {
            let mut body = json!({
                "name": name, "network": network, "mac": mac, "vlan": vlan, "trunk": trunk,
            });
            // clap takes exactly one of --tap and --vhost-user.
            let link = if let Some(path) = vhost_user {
                // The service resolves nothing against our working directory.
                let path =
                    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                body["vhost_user"] = json!(path);
                "vhost_user"
            } else {
                body["tap"] = json!(tap);
                "tap"
            };
            let p = c.call("POST", "/api/v1/ports", Some(body))?;
            println!(
                "added port {name} to network {network}: {} {}{}",
                link.replace('_', "-"),
                s(&p[link]),
                show::port_vlan(&p)
            );
        }
        PortCmd::Delete { name } => {
            c.call("DELETE", &format!("/api/v1/ports/{}", seg(&name)), None)?;
            println!("deleted port {name}");
        }
        PortCmd::List { json } => {
            let list = c.call("GET", "/api/v1/ports", None)?;
            show::print(&list, json, show::ports);
        }
        PortCmd::Info { name } => {
            show::pretty(&c.call("GET", &format!("/api/v1/ports/{}", seg(&name)), None)?)
        }
    }
    Ok(())
}

pub(super) fn qos(c: &Client, cmd: QosCmd) -> Result<(), String> {
    let QosCmd::Set {
        port,
        rate,
        burst,
        delay,
        jitter,
        loss,
    } = cmd;
    let p = c.call(
        "PUT",
        &format!("/api/v1/ports/{}/qos", seg(&port)),
        Some(json!({
            "rate": rate, "burst": burst, "delay": delay, "jitter": jitter, "loss": loss,
        })),
    )?;
    println!("{port}: {}", show::qos(&p));
    Ok(())
}

pub(super) fn stats(c: &Client, port: Option<String>, json: bool) -> Result<(), String> {
    let v = match &port {
        Some(p) => Value::Array(vec![c.call(
            "GET",
            &format!("/api/v1/stats/{}", seg(p)),
            None,
        )?]),
        None => c.call("GET", "/api/v1/stats", None)?,
    };
    // One port's JSON is the object itself; its table still takes a list.
    let shown = if port.is_some() { &v[0] } else { &v };
    show::print(shown, json, |_| show::stats(&v));
    Ok(())
}

/// A string field of a JSON reply, or "".
pub(super) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}
