//! The `[tpm]` settings: which TPM, the zone PCR, evidence batching.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The TPM, the zone PCR and evidence batching (the daemon config's `[tpm]` table).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TpmSettings {
    /// The TPM device, used when it exists (the kernel resource manager).
    pub device: PathBuf,
    /// The PCR zone events extend. Default 15: PCRs 0-15 cannot be reset at
    /// locality 0 (16 and 23 can, by anyone; 17-22 cannot be extended), and
    /// firmware, boot loaders, IMA (10) and systemd-stub (11-13) use the
    /// others on common hosts. The daemon refuses a PCR something else extends.
    pub pcr: u32,
    /// Refuse to start without the TPM device (never fall back to the embedded swtpm).
    pub require_device: bool,
    /// TCP port of the embedded swtpm on the loopback interface of its own
    /// network namespace, private to the daemon (its control port is the next one).
    pub swtpm_port: u16,
    /// Most evidence requests answered by one quote (1 disables batching).
    pub max_batch: usize,
    /// Benchmarks only: sleep this long after every quote, standing in for a
    /// slow hardware TPM. Honoured only by test builds.
    pub simulated_quote_latency_ms: u64,
    /// PEM file of the CA certificates between the TPM's EK certificate and
    /// its manufacturer's root (the manufacturer publishes them; the EK
    /// certificate's Authority Information Access names where). Passed to
    /// verifiers with the TPM's keys, untrusted, to build the chain to a root
    /// they trust. The embedded swtpm's issuing certificate is passed without it.
    pub ek_chain_path: Option<PathBuf>,
}

impl Default for TpmSettings {
    fn default() -> Self {
        Self {
            device: "/dev/tpmrm0".into(),
            pcr: 15,
            require_device: false,
            swtpm_port: 2321,
            max_batch: 256,
            simulated_quote_latency_ms: 0,
            ek_chain_path: None,
        }
    }
}

impl TpmSettings {
    /// Range checks; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.pcr > 15 {
            return Err(format!(
                "tpm.pcr = {}: PCRs 16 and 23 can be reset by anyone at locality 0 and 17-22 cannot be extended; use 8-15",
                self.pcr
            ));
        }
        if self.max_batch == 0 || self.max_batch > 4096 {
            return Err("tpm.max_batch must be within 1..=4096".into());
        }
        if self.swtpm_port == 0 || self.swtpm_port == u16::MAX {
            return Err("tpm.swtpm_port must be within 1..=65534".into());
        }
        Ok(())
    }
}
