//! `zonectl eventlog`: the host's event log, the zone PCR and the AK; with
//! `--export-keys`, the keys a verifier pins (AK, EK, EK certificate).

use std::path::PathBuf;

use attestation_proto::control::GetEventLogRequest;
use attestation_proto::eventlog::{self, ZoneEvent};
use attestation_proto::launch::{CheckpointRecord, LaunchRecord, StopRecord};
use attestation_proto::verify::ak_digest;
use clap::Args;
use serde_json::json;

use super::GlobalArgs;
use super::client::{block_on, connect, explain};
use super::format::{OutputFormat, print_json};

/// Arguments of `zonectl eventlog`.
#[derive(Debug, Args)]
pub struct EventLogArgs {
    /// Also write the raw log (TCG crypto-agile format, for tpm2_eventlog) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the host's keys for verifiers into this directory: ak.pub
    /// (TPMT_PUBLIC), ak.pem, ek.pub (TPMT_PUBLIC) and, when the TPM has one,
    /// ek-cert.der (the EK certificate).
    #[arg(long, value_name = "DIR")]
    pub export_keys: Option<PathBuf>,
}

/// Writes the keys a verifier needs into `dir`; returns the files written.
fn export_keys(reply: &attestation_proto::control::GetEventLogReply, dir: &std::path::Path) -> anyhow::Result<Vec<&'static str>> {
    use anyhow::Context;
    let ak = attestation_proto::tpm::public::PublicArea::parse(&reply.ak_public).context("the daemon's AK public area")?;
    let mut files = vec![
        ("ak.pub", reply.ak_public.clone()),
        ("ak.pem", ak.to_spki_pem()?.into_bytes()),
        ("ek.pub", reply.ek_public.clone()),
    ];
    if !reply.ek_certificate.is_empty() {
        files.push(("ek-cert.der", reply.ek_certificate.clone()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in &files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(n, _)| n).collect())
}

fn describe(e: &eventlog::Event) -> serde_json::Value {
    match e.zone_event() {
        Some(ZoneEvent::Launch { record, .. }) => match LaunchRecord::decode(record) {
            Ok(r) => json!({"kind": "launch", "zone": r.zone, "launch_id": r.launch_id, "kernel_sha256": r.kernel.sha256,
                            "initrd_sha256": r.initrd_sha256(), "cmdline_sha256": r.cmdline_sha256,
                            "image_sha256": r.image_sha256(), "devices": r.devices}),
            Err(err) => json!({"kind": "launch", "error": err.to_string()}),
        },
        Some(ZoneEvent::Stop { record, .. }) => match StopRecord::decode(record) {
            Ok(r) => json!({"kind": "stop", "zone": r.zone, "launch_id": r.launch_id, "reason": r.reason}),
            Err(err) => json!({"kind": "stop", "error": err.to_string()}),
        },
        Some(ZoneEvent::Checkpoint { record }) => match CheckpointRecord::decode(record) {
            Ok(r) => json!({"kind": "checkpoint", "seq": r.seq, "live": r.live_count}),
            Err(err) => json!({"kind": "checkpoint", "error": err.to_string()}),
        },
        Some(ZoneEvent::Redacted { .. }) => json!({"kind": "redacted"}),
        None => json!({"kind": "other", "event_type": e.event_type}),
    }
}

/// Runs `zonectl eventlog`.
pub fn run(g: &GlobalArgs, args: EventLogArgs) -> anyhow::Result<i32> {
    let reply = block_on(async {
        let mut client = connect(&g.socket()).await?;
        Ok(client.get_event_log(GetEventLogRequest {}).await.map_err(explain)?.into_inner())
    })?;
    if let Some(out) = &args.out {
        std::fs::write(out, &reply.event_log)?;
    }
    if let Some(dir) = &args.export_keys {
        let written = export_keys(&reply, dir)?;
        eprintln!("wrote {} to {}", written.join(", "), dir.display());
    }
    let events = eventlog::parse(&reply.event_log, &eventlog::Limits::host_log())?;
    let start = <[u8; 32]>::try_from(reply.start_value.as_slice()).unwrap_or([0; 32]);
    let replay = eventlog::replay_from(start, &events, reply.pcr);
    let tpm_kind = match (reply.software_tpm, attestation_proto::ek::describe(&reply.ek_certificate)) {
        (true, Ok(i)) => format!("software TPM (embedded swtpm, private to this daemon; EK certificate issued by {})", i.issuer_cn),
        (true, Err(_)) => "software TPM (embedded swtpm, private to this daemon)".to_owned(),
        (false, Ok(i)) => format!("TPM device (EK certificate issued by {})", i.issuer_cn),
        (false, Err(_)) => "TPM device (no readable EK certificate)".to_owned(),
    };
    let consistent = replay.as_slice() == reply.pcr_value.as_slice();
    let ak = hex::encode(ak_digest(&reply.ak_public));
    match g.output {
        OutputFormat::Json => print_json(&json!({
            "host_id": reply.host_id,
            "tpm": reply.tpm,
            "tpm_kind": tpm_kind,
            "software_tpm": reply.software_tpm,
            "events_total": reply.events,
            "events_before": reply.events_before,
            "checkpoint_seq": reply.checkpoint_seq,
            "pcr": reply.pcr,
            "pcr_value": hex::encode(&reply.pcr_value),
            "replay": hex::encode(replay),
            "replays_to_pcr": consistent,
            "reset_count": reply.reset_count,
            "ak_sha256": ak,
            "trust_entry": format!("{}={ak}", reply.host_id),
            "ek_certificate": !reply.ek_certificate.is_empty(),
            "events": events.iter().map(|e| {
                let mut v = describe(e);
                v["pcr"] = json!(e.pcr);
                v["digest"] = json!(hex::encode(e.digest));
                v
            }).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Table => {
            println!("host {}  TPM {}  reset count {}", reply.host_id, reply.tpm, reply.reset_count);
            println!("{tpm_kind}");
            if reply.events_before > 0 {
                println!("{} events in all; shown from checkpoint {} on ({} before it)", reply.events, reply.checkpoint_seq, reply.events_before);
            }
            println!("AK sha256:{ak} (trust it for this host: --trust-ak {}={ak}, or trusted_hosts in SPIRE)", reply.host_id);
            println!(
                "PCR {} = {}  ({})",
                reply.pcr,
                hex::encode(&reply.pcr_value),
                if consistent { "the log replays to it" } else { "THE LOG DOES NOT REPLAY TO IT" }
            );
            println!("{:<4} {:<8} {:<24} {:<34} DIGEST", "#", "KIND", "ZONE", "LAUNCH");
            for (i, e) in events.iter().enumerate() {
                let d = describe(e);
                let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                println!("{:<4} {:<8} {:<24} {:<34} {}", i + 1, s("kind"), s("zone"), s("launch_id"), hex::encode(&e.digest[..8]));
            }
        }
    }
    Ok(if consistent { 0 } else { 1 })
}
