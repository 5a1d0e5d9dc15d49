use super::*;
use crate::service::config::NetworkSpec;

fn spec(network: Option<&str>, port: Option<&str>) -> RuleSpec {
    RuleSpec {
        id: 7,
        network: network.map(String::from),
        port: port.map(String::from),
        direction: Direction::In,
        proto: Proto::Tcp,
        cidr: Some("10.2.0.0/16".into()),
        dport: Some("80-81".into()),
        action: Action::Deny,
        priority: DEFAULT_PRIORITY,
    }
}

#[test]
fn specs_become_configs_or_clear_errors() {
    let c = spec(Some("blue"), None).config().unwrap();
    assert_eq!(c.target, Target::Network("blue".into()));
    assert_eq!(c.ports, Some((80, 81)));
    assert!(spec(None, None).config().is_err());
    assert!(spec(Some("a"), Some("b")).config().is_err());
    let mut icmp = spec(None, Some("p"));
    icmp.proto = Proto::Icmp;
    assert_eq!(icmp.config().unwrap_err().http_status(), 400);
    let mut bad = spec(None, Some("p"));
    bad.cidr = Some("10.2.0.0/40".into());
    assert!(bad.config().unwrap_err().to_string().contains("--cidr"));
}

#[test]
fn what_rules_refer_to_cannot_be_deleted() {
    let mut st = NetState::default();
    st.networks.push(NetworkSpec {
        name: "blue".into(),
        vlan: None,
        subnet: None,
        gateway: None,
        dhcp: None,
    });
    st.firewall.rules.push(spec(None, Some("p")));
    let e = check_unused(&st, None, Some("p")).unwrap_err();
    assert_eq!(e.http_status(), 409);
    assert!(e.to_string().contains("rules (7)"), "{e}");
    assert!(check_unused(&st, Some("blue"), None).is_ok());
    st.firewall.deny_default.push("blue".into());
    assert!(check_unused(&st, Some("blue"), None)
        .unwrap_err()
        .to_string()
        .contains("default blue allow"));
    // The state round-trips through JSON, and old files without it still load.
    let text = serde_json::to_string(&st).unwrap();
    let back: NetState = serde_json::from_str(&text).unwrap();
    assert_eq!(back.firewall, st.firewall);
    let old: NetState = serde_json::from_str(r#"{"networks": [], "ports": []}"#).unwrap();
    assert_eq!(old.firewall, FirewallState::default());
}
