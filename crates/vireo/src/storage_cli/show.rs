//! How the storage client shows the service's JSON: tables, sizes and progress bars.

use serde_json::Value;

pub fn pretty(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// `1.0 GiB`, `420 MiB`, `512 B`: one decimal below 10 units, whole units above.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {name}")
    } else {
        format!("{v:.0} {name}")
    }
}

/// A JSON byte count as [`human`], or `-`.
pub fn bytes(v: &Value) -> String {
    v.as_u64().map(human).unwrap_or_else(|| "-".into())
}

/// `[########............] 42% 420 MiB/1.0 GiB`
pub fn progress(done: u64, total: u64) -> String {
    const WIDTH: u64 = 20;
    let frac = if total == 0 {
        1.0
    } else {
        (done.min(total) as f64) / (total as f64)
    };
    let filled = ((frac * WIDTH as f64) as u64).min(WIDTH);
    format!(
        "[{}{}] {:>3}% {}/{}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        (frac * 100.0) as u64,
        human(done),
        human(total)
    )
}

/// A volume's limits: `1000 iops, 100 MiB/s`, or `unlimited`.
pub fn qos(vol: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(n) = vol["iops"].as_u64() {
        parts.push(format!("{n} iops"));
    }
    if let Some(n) = vol["bps"].as_u64() {
        parts.push(format!("{}/s", human(n)));
    }
    if parts.is_empty() {
        "unlimited".into()
    } else {
        parts.join(", ")
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `vireo storage list`: pools, volumes and vhost-user exports from `GET /api/v1/stats`.
pub fn list(stats: &Value) -> String {
    let pools = items(&stats["pools"]);
    if pools.is_empty() {
        return "no pools: create one with `vireo storage pool create POOL --device FILE`\n".into();
    }
    let mut rows = vec![[
        "POOL",
        "SIZE",
        "USED",
        "FREE",
        "VOLUMES",
        "BLOCK",
        "DEDUP",
        "COMPRESSION",
        "ENCRYPTED",
        "DEVICES",
    ]
    .map(String::from)
    .to_vec()];
    for p in pools {
        rows.push(vec![
            text(&p["name"]),
            bytes(&p["size"]),
            bytes(&p["used"]),
            bytes(&p["free"]),
            text(&p["volumes"]),
            bytes(&p["block_size"]),
            if p["dedup"] == Value::Bool(true) {
                format!("{:.2}x", p["dedup_ratio"].as_f64().unwrap_or(1.0))
            } else {
                "off".into()
            },
            match text(&p["compression"]).as_str() {
                "off" => "off".into(),
                c => format!("{c} {:.2}x", p["compression_ratio"].as_f64().unwrap_or(1.0)),
            },
            if p["encrypted"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
            items(&p["devices"]).len().to_string(),
        ]);
    }
    let mut out = table(&rows);
    let volumes = items(&stats["volumes"]);
    if !volumes.is_empty() {
        let mut rows = vec![[
            "VOLUME",
            "SIZE",
            "ALLOCATED",
            "PROVISIONING",
            "QOS",
            "ORIGIN",
            "SNAPSHOTS",
        ]
        .map(String::from)
        .to_vec()];
        for v in volumes {
            rows.push(vec![
                text(&v["name"]),
                bytes(&v["size"]),
                bytes(&v["allocated"]),
                if v["thick"] == Value::Bool(true) {
                    "thick"
                } else {
                    "thin"
                }
                .into(),
                qos(v),
                text(&v["origin"]),
                items(&v["snapshots"]).len().to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    let exports = items(&stats["vhost_user"]);
    if !exports.is_empty() {
        let mut rows = vec![vec!["VHOST-USER SOCKET".to_string(), "VOLUME".to_string()]];
        for e in exports {
            rows.push(vec![text(&e["socket"]), text(&e["volume"])]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    if let Some(nbd) = stats["nbd"].as_str() {
        out.push_str(&format!("\nNBD: {nbd} (export names POOL/VOL)\n"));
    }
    out
}

pub fn snapshots(list: &Value) -> String {
    let snaps = items(list);
    if snaps.is_empty() {
        return "no snapshots\n".into();
    }
    let mut rows = vec![[
        "SNAPSHOT",
        "CREATED",
        "SIZE",
        "ALLOCATED",
        "UNIQUE",
        "CLONES",
    ]
    .map(String::from)
    .to_vec()];
    for s in snaps {
        let clones: Vec<String> = items(&s["clones"]).iter().map(text).collect();
        rows.push(vec![
            text(&s["name"]),
            text(&s["created"]),
            bytes(&s["size"]),
            bytes(&s["allocated"]),
            bytes(&s["unique"]),
            if clones.is_empty() {
                "-".into()
            } else {
                clones.join(",")
            },
        ]);
    }
    table(&rows)
}

pub fn jobs(list: &Value) -> String {
    let jobs = items(list);
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let mut rows = vec![
        ["ID", "KIND", "VOLUME", "STATE", "PROGRESS", "FILE", "ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for j in jobs {
        rows.push(vec![
            text(&j["id"]),
            text(&j["kind"]),
            text(&j["volume"]),
            text(&j["state"]),
            format!("{}/{}", bytes(&j["done"]), bytes(&j["total"])),
            text(&j["file"]),
            j["error"].as_str().unwrap_or("").to_string(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_and_bars_read_well() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(420 << 20), "420 MiB");
        assert_eq!(human(3 << 19), "1.5 MiB");
        assert_eq!(
            progress(420 << 20, 1000 << 20),
            "[########............]  42% 420 MiB/1000 MiB"
        );
        assert_eq!(progress(0, 0), "[####################] 100% 0 B/0 B");
        assert_eq!(qos(&json!({"iops": 100, "bps": null})), "100 iops");
        assert_eq!(qos(&json!({})), "unlimited");
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "LONGER".into()],
            vec!["wide cell".into(), "x".into()],
        ]);
        assert_eq!(t, "A          LONGER\nwide cell  x\n");
        assert!(list(&json!({"pools": []})).contains("no pools"));
    }
}
