//! `zonectl evidence NAME`: fresh evidence about a running zone, for a
//! nonce; `--export DIR` also writes the files tpm2-tools checks.

use std::path::{Path, PathBuf};

use attestation_proto::control::GetEvidenceRequest;
use attestation_proto::evidence;
use attestation_proto::tpm::{PublicArea, serialize_tpm2_tools_pcrs};
use clap::Args;
use serde_json::json;

use super::GlobalArgs;
use super::client::{block_on, connect, explain};
use super::format::{OutputFormat, print_json};

/// Arguments of `zonectl evidence`.
#[derive(Debug, Args)]
pub struct EvidenceArgs {
    /// Zone name.
    pub name: String,
    /// The verifier's nonce, hex (8-64 bytes); default: 32 random bytes.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Write the evidence (protobuf) here instead of a summary.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also write tpm2-tools files: quote.msg, quote.sig, quote.pcrs
    /// (serialized), ak.pem, eventlog.bin, qualifying-data.hex (plus
    /// evidence.bin and nonce.hex).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
}

/// Reads a hex nonce, or makes a random one.
pub fn nonce_or_random(hex_nonce: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let nonce = match hex_nonce {
        Some(h) => hex::decode(h.trim()).map_err(|e| anyhow::anyhow!("--nonce is not hex ({e})"))?,
        None => {
            let mut b = vec![0u8; 32];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
            b
        }
    };
    evidence::check_nonce(&nonce)?;
    Ok(nonce)
}

/// Writes the tpm2-tools-compatible files of `bytes` into `dir`.
pub fn export(bytes: &[u8], nonce: &[u8], dir: &Path) -> anyhow::Result<()> {
    let ev = evidence::decode(bytes).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::create_dir_all(dir)?;
    let ak = PublicArea::parse(&ev.ak_public)?;
    let indices: Vec<u8> = ev.pcrs.iter().map(|p| u8::try_from(p.index)).collect::<Result<_, _>>()?;
    let values: Vec<[u8; 32]> = ev.pcrs.iter().map(|p| <[u8; 32]>::try_from(p.sha256.as_slice())).collect::<Result<_, _>>()?;
    let attest = attestation_proto::tpm::Attest::parse(&ev.quote_attest)?;
    let files: [(&str, Vec<u8>); 9] = [
        ("quote.msg", ev.quote_attest.clone()),
        ("quote.sig", ev.quote_signature.clone()),
        ("quote.pcrs", serialize_tpm2_tools_pcrs(&indices, &values)?),
        ("ak.pem", ak.to_spki_pem()?.into_bytes()),
        ("ak.pub", ev.ak_public.clone()),
        ("eventlog.bin", ev.event_log.clone()),
        ("qualifying-data.hex", hex::encode(&attest.extra_data).into_bytes()),
        ("nonce.hex", hex::encode(nonce).into_bytes()),
        ("evidence.bin", bytes.to_vec()),
    ];
    for (name, data) in files {
        std::fs::write(dir.join(name), data)?;
    }
    Ok(())
}

/// Runs `zonectl evidence`.
pub fn run(g: &GlobalArgs, args: EvidenceArgs) -> anyhow::Result<i32> {
    let nonce = nonce_or_random(args.nonce.as_deref())?;
    let bytes = block_on(async {
        let mut client = connect(&g.socket()).await?;
        let reply = client
            .get_evidence(GetEvidenceRequest { name: args.name.clone(), nonce: nonce.clone() })
            .await
            .map_err(explain)?
            .into_inner();
        Ok(reply.evidence)
    })?;
    if let Some(dir) = &args.export {
        export(&bytes, &nonce, dir)?;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &bytes)?;
    }
    let ev = evidence::decode(&bytes).map_err(|e| anyhow::anyhow!(e))?;
    let summary = json!({
        "zone": args.name,
        "nonce": hex::encode(&nonce),
        "bytes": bytes.len(),
        "batch_size": ev.batch.as_ref().map_or(0, |b| b.tree_size),
        "zone_pcr": ev.zone_pcr,
        "launch_record": String::from_utf8_lossy(&ev.launch_record),
        "out": args.out,
        "export": args.export,
    });
    match g.output {
        OutputFormat::Json => print_json(&summary)?,
        OutputFormat::Table => {
            println!("evidence for zone {} ({} bytes), nonce {}", args.name, bytes.len(), hex::encode(&nonce));
            if let Some(o) = &args.out {
                println!("written to {}", o.display());
            }
            if let Some(d) = &args.export {
                println!("tpm2-tools files in {}", d.display());
            }
        }
    }
    Ok(0)
}
