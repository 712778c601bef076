//! `zonectl verify FILE`: runs the verifier (offline, no daemon, no TPM).

use std::path::PathBuf;

use attestation_proto::policy::Policy;
use attestation_proto::verify::{Trust, ak_digest, verify};
use clap::Args;
use serde_json::json;

use super::GlobalArgs;
use super::format::{OutputFormat, print_json};

/// Arguments of `zonectl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Evidence file (from `zonectl evidence --out`).
    pub file: PathBuf,
    /// Policy file (TOML; `zonectl measure --policy` or `zonectl policy suggest` write one).
    #[arg(long)]
    pub policy: PathBuf,
    /// The nonce the evidence must answer, hex.
    #[arg(long)]
    pub nonce: String,
    /// A trusted host and its attestation key: HOST=SHA256 of the AK's
    /// TPMT_PUBLIC, hex (`zonectl eventlog` prints both). An AK is trusted
    /// only for the host it is named with. Repeatable.
    #[arg(long = "trust-ak", value_name = "HOST=SHA256")]
    pub trust_ak: Vec<String>,
    /// A trusted host and its AK as a TPMT_PUBLIC file: HOST=FILE (`ak.pub` of
    /// `zonectl eventlog --export-keys`). Repeatable.
    #[arg(long = "trust-ak-file", value_name = "HOST=FILE")]
    pub trust_ak_file: Vec<String>,
}

/// Runs `zonectl verify`; exit code 0 when the evidence is accepted, 3 when rejected.
pub fn run(g: &GlobalArgs, args: VerifyArgs) -> anyhow::Result<i32> {
    let bytes = std::fs::read(&args.file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    let policy_text = std::fs::read_to_string(&args.policy)
        .map_err(|e| anyhow::anyhow!("cannot read the policy {}: {e}", args.policy.display()))?;
    let policy = Policy::parse(&policy_text).map_err(|e| anyhow::anyhow!("{}: {e}", args.policy.display()))?;
    let nonce = hex::decode(args.nonce.trim()).map_err(|e| anyhow::anyhow!("--nonce is not hex ({e})"))?;
    let mut trust = Trust::default();
    for h in &args.trust_ak {
        trust.aks.push(Trust::parse_entry(h).map_err(|e| anyhow::anyhow!("--trust-ak: {e}"))?);
    }
    for entry in &args.trust_ak_file {
        let (host, f) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--trust-ak-file {entry:?}: write HOST=FILE (an AK is trusted for one host)"))?;
        let b = std::fs::read(f).map_err(|e| anyhow::anyhow!("cannot read {f}: {e}"))?;
        trust = trust.with(host, ak_digest(&b));
    }
    if trust.aks.is_empty() {
        anyhow::bail!("no trusted attestation key: pass --trust-ak HOST=SHA256 (see `zonectl eventlog`) or --trust-ak-file HOST=FILE");
    }
    match verify(&bytes, &nonce, &trust, &policy) {
        Ok(v) => {
            let tpm = match v.ek_certificate.as_deref().map(attestation_proto::ek::describe) {
                Some(Ok(i)) if i.software => format!("software TPM (EK certificate issued by {})", i.issuer_cn),
                Some(Ok(i)) => format!("TPM with an EK certificate issued by {}", i.issuer_cn),
                Some(Err(e)) => format!("TPM with an unreadable EK certificate ({e})"),
                None => "TPM without an EK certificate".into(),
            };
            match g.output {
                OutputFormat::Json => print_json(&json!({
                    "verified": true,
                    "zone": v.record.zone,
                    "host": v.record.host,
                    "launch_id": v.record.launch_id,
                    "kernel_sha256": v.record.kernel.sha256,
                    "initrd_sha256": v.record.initrd_sha256(),
                    "cmdline_sha256": v.record.cmdline_sha256,
                    "policy_cmdline_sha256": v.record.policy_cmdline_sha256(),
                    "network": v.record.net().and_then(Result::ok).map(|n| format!("{}/{}", n.address, n.prefix)),
                    "network6": v.record.net().and_then(Result::ok).and_then(|n| n.v6).map(|l| format!("{}/{}", l.address, l.prefix)),
                    "image_sha256": v.record.image_sha256(),
                    "rootfs_verity": v.record.rootfs_verity(),
                    "ak_sha256": v.ak_sha256,
                    "zone_pcr": v.zone_pcr,
                    "reset_count": v.reset_count,
                    "batch_size": v.batch_size,
                    "events": v.events,
                    "checkpoint_seq": v.checkpoint_seq,
                    "tpm": tpm,
                }))?,
                OutputFormat::Table => {
                    println!("verified: zone {} on host {} (launch {})", v.record.zone, v.record.host, v.record.launch_id);
                    println!("  kernel  sha256:{}", v.record.kernel.sha256);
                    println!("  initrd  sha256:{}", v.record.initrd_sha256());
                    println!("  cmdline sha256:{}", v.record.cmdline_sha256);
                    if let Some(Ok(n)) = v.record.net() {
                        // What policies and selectors name: the line with its zone.net= value elided.
                        let v6 = n.v6.map(|l| format!(" {}/{}", l.address, l.prefix)).unwrap_or_default();
                        println!("  network {}/{}{v6} (cmdline sha256:{} with zone.net= elided)", n.address, n.prefix, v.record.policy_cmdline_sha256());
                    }
                    if let Some(fs) = &v.record.rootfs {
                        println!("  image   {} ({}, verity root {})", fs.image, fs.format, fs.verity.root);
                    }
                    let from = v.checkpoint_seq.map_or_else(String::new, |s| format!(" after checkpoint {s}"));
                    println!("  AK sha256:{}, PCR {}, {} events{from}, batch of {}", v.ak_sha256, v.zone_pcr, v.events, v.batch_size);
                    println!("  {tpm}");
                }
            }
            Ok(0)
        }
        Err(r) => {
            match g.output {
                OutputFormat::Json => print_json(&json!({"verified": false, "check": r.check.as_str(), "detail": r.detail}))?,
                OutputFormat::Table => println!("rejected: {r}"),
            }
            Ok(3)
        }
    }
}
