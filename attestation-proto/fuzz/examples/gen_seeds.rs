//! Writes the seed corpora under `corpus/<target>/` (tracked in git): genuine
//! evidence built by `attestation_proto_fuzz::Scenario` and its parts, so
//! every target starts from inputs that pass, and a few policies and frames.
//!
//!     cd attestation-proto/fuzz && cargo run --example gen_seeds
//!
//! The output is deterministic (fixed key and signing nonce, fixed bytes).

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use attestation_proto::channel;
use attestation_proto::evidence;
use attestation_proto::guest::{EvidenceRequest, GuestMessage, Hello, guest_message};
use attestation_proto::policy::Policy;
use attestation_proto::verify;
use attestation_proto_fuzz::{CheckpointSpec, EventSpec, Expect, Scenario, default_scenario, fixed_policy, trust};

/// Bytes from a fixed xorshift stream (the structure-aware seeds).
fn stream(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    fs::create_dir_all(&d)?;
    fs::write(d.join(name), bytes)
}

/// Genuine scenarios whose record [`fixed_policy`] admits.
fn genuine() -> Vec<(&'static str, Scenario)> {
    let plain = default_scenario();
    let mut busy = default_scenario();
    busy.events = vec![
        EventSpec::Redacted { stop: false, launch_id: "02".into(), record_sha256: [7; 32] },
        EventSpec::OtherLaunch { zone: "db".into(), launch_id: "01".into(), redact: false },
        EventSpec::Stop { zone: "db".into(), launch_id: "01".into(), reason: "stopped".into(), stopped_unix_ms: 5 },
    ];
    busy.ours_at = 1;
    busy.leaves = vec![[1; 32], [2; 32], [3; 32], [4; 32]];
    busy.leaf_at = 3;
    busy.pcr_mask = 0x80_00ff;
    busy.pcr_values = vec![[0x11; 32], [0x22; 32]];
    busy.nonce_len = 24;
    let mut checkpointed = busy.clone();
    checkpointed.checkpoint = Some(CheckpointSpec { at: 2, seq: 3, clock_before: 1000, fault: None });
    vec![("plain", plain), ("busy", busy), ("checkpointed", checkpointed)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (trust, policy) = (trust(), fixed_policy());
    for (name, s) in genuine() {
        let b = s.build();
        assert_eq!(b.expect, Expect::Verify);
        verify::verify(&b.evidence, &b.nonce, &trust, &policy).map_err(|r| format!("seed {name}: {r}"))?;
        let mut v = vec![u8::try_from(b.nonce.len())?];
        v.extend_from_slice(&b.nonce);
        v.extend_from_slice(&b.evidence);
        write(&dir, "verify", name, &v)?;
        write(&dir, "evidence_decode", name, &b.evidence)?;
        let ev = evidence::decode(&b.evidence)?;
        write(&dir, "eventlog_parse", name, &ev.event_log)?;
        write(&dir, "tpm_parse", &format!("{name}-attest"), &ev.quote_attest)?;
        write(&dir, "tpm_parse", &format!("{name}-signature"), &ev.quote_signature)?;
        write(&dir, "tpm_parse", &format!("{name}-ak"), &ev.ak_public)?;
        write(&dir, "tpm_parse", &format!("{name}-ek"), &ev.ek_public)?;
        let mut tpm2b = u16::try_from(ev.ak_public.len())?.to_be_bytes().to_vec();
        tpm2b.extend_from_slice(&ev.ak_public);
        write(&dir, "tpm_parse", &format!("{name}-ak-tpm2b"), &tpm2b)?;
    }
    // Structure-aware seeds: fixed byte streams as Scenarios (each must build).
    for (i, len) in [64usize, 256, 1024].into_iter().enumerate() {
        let bytes = stream(0x5eed + i as u64, len);
        let _ = Scenario::arbitrary_take_rest(Unstructured::new(&bytes))?.build();
        write(&dir, "verify_signed", &format!("stream-{len}"), &bytes)?;
    }

    write(&dir, "policy_parse", "fixed", policy.to_toml().as_bytes())?;
    let mut two = policy.clone();
    let mut wild = two.allow[0].clone();
    wild.name = "web-*".into();
    wild.initrd_sha256.push("none".into());
    two.allow.push(wild);
    Policy::parse(&two.to_toml())?;
    write(&dir, "policy_parse", "two-rules", two.to_toml().as_bytes())?;

    let hello = GuestMessage { message: Some(guest_message::Message::Hello(Hello { ready_uptime_ms: 42, version: "1".into() })) };
    let request = GuestMessage { message: Some(guest_message::Message::EvidenceRequest(EvidenceRequest { id: 7, nonce: vec![9; 32] })) };
    let mut frames = vec![5u8];
    frames.extend(channel::encode(&hello)?);
    frames.extend(channel::encode(&request)?);
    write(&dir, "channel_decode", "hello-request", &frames)?;
    println!("seeds written under {}", dir.display());
    Ok(())
}
