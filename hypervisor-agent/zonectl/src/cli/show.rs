//! Rendering zones for humans.

use std::time::{SystemTime, UNIX_EPOCH};

use attestation_proto::control::{Zone, ZoneState};

/// Lower-case state name.
pub fn state(z: &Zone) -> &'static str {
    match ZoneState::try_from(z.state).unwrap_or(ZoneState::Unspecified) {
        ZoneState::Unspecified => "unknown",
        ZoneState::Creating => "creating",
        ZoneState::Booting => "booting",
        ZoneState::Running => "running",
        ZoneState::Stopping => "stopping",
        ZoneState::Stopped => "stopped",
        ZoneState::Failed => "failed",
    }
}

/// "3m", "2h", "5d" since a Unix time in ms.
pub fn age(unix_ms: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let s = now.saturating_sub(unix_ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The zone as a JSON value (for `-o json`).
pub fn json(z: &Zone) -> serde_json::Value {
    let spec = z.spec.clone().unwrap_or_default();
    serde_json::json!({
        "name": z.name,
        "state": state(z),
        "failure": (!z.failure.is_empty()).then_some(&z.failure),
        "vcpus": spec.vcpus,
        "memory_mib": spec.memory_mib,
        "scratch_mib": (spec.scratch_mib != 0).then_some(spec.scratch_mib),
        "network": spec.network.as_ref().map(|n| serde_json::json!({
            "address": n.address,
            "gateway": n.gateway,
            "address6": (!n.address6.is_empty()).then_some(&n.address6),
            "gateway6": (!n.gateway6.is_empty()).then_some(&n.gateway6),
            "mac": n.mac,
            "tap": n.tap,
            "cni_network": (!n.cni_network.is_empty()).then_some(&n.cni_network),
            "netns": (!n.netns.is_empty()).then_some(&n.netns),
            "nameservers": n.nameservers,
            "publish": n.publish.iter().map(|p| format!("{}:{}->{}", p.host_address, p.host_port, p.zone_port)).collect::<Vec<_>>(),
        })),
        "kernel": spec.kernel,
        "initrd": (!spec.initrd.is_empty()).then_some(&spec.initrd),
        "cmdline": spec.cmdline,
        "command": spec.command,
        "created_unix_ms": z.created_unix_ms,
        "ready_uptime_ms": (z.ready_uptime_ms != 0).then_some(z.ready_uptime_ms),
        "launch_to_ready_ms": (z.launch_to_ready_ms != 0).then_some(z.launch_to_ready_ms),
        "vmm_pid": (z.vmm_pid != 0).then_some(z.vmm_pid),
        "exit_status": z.exit_status,
        "guest_cid": z.guest_cid,
        "measurement": z.measurement.as_ref().map(|m| serde_json::json!({
            "launch_id": m.launch_id,
            "kernel_sha256": m.kernel_sha256,
            "initrd_sha256": m.initrd_sha256,
            "cmdline_sha256": m.cmdline_sha256,
            "cmdline": m.cmdline,
            "devices": attestation_proto::launch::LaunchRecord::decode(&m.launch_record).ok().map(|r| r.devices),
            "rootfs": attestation_proto::launch::LaunchRecord::decode(&m.launch_record).ok().and_then(|r| r.rootfs).map(|f| serde_json::json!({
                "image": f.image,
                "format": f.format,
                "verity_root": f.verity.root,
            })),
        })),
    })
}

/// A table of zones.
pub fn table(zones: &[Zone]) -> String {
    let mut rows = vec![["NAME", "STATE", "VCPUS", "MEMORY", "READY IN", "EXIT", "AGE", "NOTE"].map(String::from).to_vec()];
    for z in zones {
        let spec = z.spec.clone().unwrap_or_default();
        rows.push(vec![
            z.name.clone(),
            state(z).into(),
            spec.vcpus.to_string(),
            format!("{} MiB", spec.memory_mib),
            if z.launch_to_ready_ms > 0 { format!("{} ms", z.launch_to_ready_ms) } else { "-".into() },
            z.exit_status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            age(z.created_unix_ms),
            z.failure.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Key/value details of one zone.
pub fn details(z: &Zone) -> String {
    let v = json(z);
    let mut out = String::new();
    if let Some(map) = v.as_object() {
        for (k, val) in map {
            if val.is_null() {
                continue;
            }
            let text = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<20} {text}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let z = Zone { name: "web".into(), state: ZoneState::Running as i32, launch_to_ready_ms: 812, ..Default::default() };
        let t = table(&[z]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("web   running"), "{t}");
        assert_eq!(lines[0].find("STATE"), lines[1].find("running"));
    }
}
