mod common;
mod net;
use net::*;

// `vireo net firewall` end to end: a rule added through the CLI denies real traffic
// between namespaces, counts its hits, survives a restart of the service; a default-deny
// network lets through what is explicitly allowed, replies included; the flow log shows
// both. Needs root, iproute2 and busybox.

fn plug(ns: &Namespaces, ta: &str, tb: &str) {
    ns.plug(0, ta, "10.216.0.1");
    ns.plug(1, tb, "10.216.0.2");
}

/// `firewall add TARGET --direction DIR --proto PROTO --action ACTION`, TARGET a name or
/// `--port-name NAME`.
fn add<'a>(target: &[&'a str], dir: &'a str, proto: &'a str, action: &'a str) -> Vec<&'a str> {
    let mut args = vec!["firewall", "add"];
    args.extend_from_slice(target);
    args.extend(["--direction", dir, "--proto", proto, "--action", action]);
    args
}

fn rule_hits(svc: &Service, id: u64) -> u64 {
    let list = svc.json(&["firewall", "list", "--json"]);
    let rules = list.as_array().unwrap();
    let r = rules.iter().find(|r| r["id"] == id);
    r.unwrap_or_else(|| panic!("no rule {id}: {list}"))["hits"]
        .as_u64()
        .unwrap()
}

#[test]
fn firewall_rules_deny_count_and_survive_a_restart() {
    let dir = Scratch::new("fw");
    let ns = Namespaces::new("fw", 2);
    let (ta, tb) = (tap("fwa"), tap("fwb"));
    let svc = Service::start(&dir);
    svc.ok(&["network", "create", "fwn"]);
    svc.ok(&["port", "add", "fwn", "a", "--tap", &ta]);
    svc.ok(&["port", "add", "fwn", "b", "--tap", &tb]);
    plug(&ns, &ta, &tb);
    assert!(ns.ping(0, "10.216.0.2"), "no rules yet\n{}", svc.log());

    let out = svc.ok(&add(&["b"], "in", "icmp", "deny"));
    assert!(
        out.contains("added firewall rule 1: port b in icmp deny"),
        "{out}"
    );
    assert!(!ns.ping(0, "10.216.0.2"), "the rule must deny the ping");
    assert!(rule_hits(&svc, 1) >= 1);
    let table = svc.ok(&["firewall", "list", "b"]);
    assert!(
        table.contains("HITS") && table.contains("port b"),
        "{table}"
    );
    let (_, metrics) = svc.http("GET", "/metrics", "");
    assert!(
        metrics.contains("vireo_net_firewall_rule_hits_total{rule=\"1\"} ")
            && metrics.contains("vireo_net_firewall_denied_packets_total "),
        "{metrics}"
    );
    let flows = svc.json(&["flows", "--json"]);
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"] == "deny"
                && f["proto"] == "icmp"
                && f["rule"] == 1
                && f["port"] == "b"),
        "{flows}"
    );

    // What it refuses, and why.
    let mut icmp_port = add(&["b"], "in", "icmp", "deny");
    icmp_port.extend(["--port", "22"]);
    svc.fails(&icmp_port, "tcp or udp");
    let nowhere = add(&["zz"], "in", "any", "deny");
    svc.fails(&nowhere, "no network or port named");
    svc.fails(&["port", "delete", "b"], "has firewall rules (1)");
    svc.ok(&["network", "create", "b"]);
    let both = add(&["b"], "in", "tcp", "deny");
    svc.fails(&both, "names both a network and a port");
    svc.ok(&["network", "delete", "b"]);

    // Restarted: the rule is back and still denies.
    assert!(svc.terminate().success());
    let svc = Service::start(&dir);
    plug(&ns, &ta, &tb);
    let list = svc.json(&["firewall", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["port"], "b");
    assert!(
        !ns.ping(0, "10.216.0.2"),
        "the rule must deny after a restart"
    );
    assert!(rule_hits(&svc, 1) >= 1);
    svc.ok(&["firewall", "delete", "1"]);
    assert!(ns.ping(0, "10.216.0.2"), "deleted: the ping passes");

    // Default deny: only what is allowed on both sides passes, and its replies.
    svc.ok(&["firewall", "default", "fwn", "deny"]);
    assert!(!ns.ping(0, "10.216.0.2"), "default deny");
    for (port, dir) in [("a", "out"), ("b", "in")] {
        svc.ok(&add(&["--port-name", port], dir, "icmp", "allow"));
    }
    assert!(ns.ping(0, "10.216.0.2"), "allowed a -> b, replies included");
    assert!(!ns.ping(1, "10.216.0.1"), "b -> a stays denied");
    let shown = svc.ok(&["flows"]);
    assert!(
        shown.contains("REPLIED") && shown.contains("allow") && shown.contains("deny"),
        "{shown}"
    );
    let log = std::fs::read_to_string(dir.0.join("state/flows.jsonl")).unwrap();
    assert!(log.contains("\"action\":\"allow\"") && log.contains("\"action\":\"deny\""));
    assert!(svc.ok(&["firewall", "flush-conntrack"]).contains("flushed"));
}
