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
    /// A trusted attestation key: SHA-256 of its TPMT_PUBLIC, hex (`zonectl eventlog` prints it). Repeatable.
    #[arg(long = "trust-ak", value_name = "SHA256")]
    pub trust_ak: Vec<String>,
    /// A trusted attestation key as a TPMT_PUBLIC file (`ak.pub` of `zonectl evidence --export`). Repeatable.
    #[arg(long = "trust-ak-file", value_name = "FILE")]
    pub trust_ak_file: Vec<PathBuf>,
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
        let d = hex::decode(h.trim()).ok().and_then(|d| <[u8; 32]>::try_from(d).ok());
        trust.ak_sha256.push(d.ok_or_else(|| anyhow::anyhow!("--trust-ak {h:?} is not 64 hex digits"))?);
    }
    for f in &args.trust_ak_file {
        let b = std::fs::read(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        trust.ak_sha256.push(ak_digest(&b));
    }
    if trust.ak_sha256.is_empty() {
        anyhow::bail!("no trusted attestation key: pass --trust-ak SHA256 (see `zonectl eventlog`) or --trust-ak-file");
    }
    match verify(&bytes, &nonce, &trust, &policy) {
        Ok(v) => {
            match g.output {
                OutputFormat::Json => print_json(&json!({
                    "verified": true,
                    "zone": v.record.zone,
                    "host": v.record.host,
                    "launch_id": v.record.launch_id,
                    "kernel_sha256": v.record.kernel.sha256,
                    "initrd_sha256": v.record.initrd_sha256(),
                    "cmdline_sha256": v.record.cmdline_sha256,
                    "ak_sha256": v.ak_sha256,
                    "zone_pcr": v.zone_pcr,
                    "reset_count": v.reset_count,
                    "batch_size": v.batch_size,
                    "events": v.events,
                }))?,
                OutputFormat::Table => {
                    println!("verified: zone {} on host {} (launch {})", v.record.zone, v.record.host, v.record.launch_id);
                    println!("  kernel  sha256:{}", v.record.kernel.sha256);
                    println!("  initrd  sha256:{}", v.record.initrd_sha256());
                    println!("  cmdline sha256:{}", v.record.cmdline_sha256);
                    println!("  AK sha256:{}, PCR {}, {} events, batch of {}", v.ak_sha256, v.zone_pcr, v.events, v.batch_size);
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
