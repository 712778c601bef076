//! `plugin_data`: SPIRE prints the block back as HCL (v1 printer) without
//! braces and passes it in `Configure`. Keys may arrive quoted (`"key" = …`,
//! from JSON configs), which HCL 2 parsers refuse, so quotes around a key are
//! removed first.

use std::path::PathBuf;

use attestation_proto::policy::Policy;
use attestation_proto::verify::{Trust, ak_digest};
use serde::Deserialize;

/// A configuration error, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not HCL, or unknown/mistyped keys.
    #[error("plugin_data is not valid: {0}")]
    Syntax(String),
    /// Something is missing or wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Unquotes the attribute keys of HCL v1 output: `"key" = v` → `key = v`.
pub fn unquote_keys(hcl: &str) -> String {
    hcl.lines()
        .map(|line| {
            let t = line.trim_start();
            let indent = &line[..line.len() - t.len()];
            if let Some(rest) = t.strip_prefix('"') {
                if let Some(end) = rest.find('"') {
                    let (key, after) = (&rest[..end], rest[end + 1..].trim_start());
                    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') && after.starts_with('=') {
                        return format!("{indent}{key} {after}");
                    }
                }
            }
            line.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses `plugin_data` into `T` (empty text = all defaults).
pub fn parse<T: for<'de> Deserialize<'de> + Default>(hcl: &str) -> Result<T, ConfigError> {
    if hcl.trim().is_empty() {
        return Ok(T::default());
    }
    hcl::from_str(&unquote_keys(hcl)).map_err(|e| ConfigError::Syntax(e.to_string()))
}

/// The server plugin's `plugin_data`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerData {
    /// `HOST=SHA256`: each trusted host and the SHA-256 (hex) of its AK's
    /// TPMT_PUBLIC (`zonectl eventlog` prints both). An AK is trusted only
    /// for the host it is listed with.
    #[serde(default)]
    pub trusted_hosts: Vec<String>,
    /// `HOST=PATH`: each trusted host and a file with its AK's TPMT_PUBLIC
    /// (`ak.pub` from `zonectl eventlog --export-keys`).
    #[serde(default)]
    pub trusted_host_ak_paths: Vec<String>,
    /// Replaced by `trusted_hosts` (kept to say so).
    #[serde(default)]
    pub trusted_ak_sha256: Option<Vec<String>>,
    /// Replaced by `trusted_host_ak_paths` (kept to say so).
    #[serde(default)]
    pub trusted_ak_paths: Option<Vec<PathBuf>>,
    /// The policy file (TOML, as `zonectl measure --policy` and `zonectl policy suggest` write it).
    #[serde(default)]
    pub policy_path: Option<PathBuf>,
    /// EK trust: a PEM bundle (or a directory of PEM/DER files) of the CAs
    /// that issue TPM EK certificates, intermediates included. A host whose
    /// AK is not pinned attests by its EK certificate and a credential
    /// activation; its host id is derived from the EK.
    #[serde(default)]
    pub endorsement_ca_path: Option<PathBuf>,
    /// With EK trust, only these EKs (SHA-256 hex of the EK's
    /// SubjectPublicKeyInfo, the `zone:ek:sha256:` selector value).
    #[serde(default)]
    pub trusted_ek_sha256: Option<Vec<String>>,
    /// With EK trust, only the EKs named by the files in this directory
    /// (file name = SHA-256 hex; read at each attestation, so hosts can be
    /// added or removed without reconfiguring).
    #[serde(default)]
    pub trusted_ek_hash_path: Option<PathBuf>,
}

/// Which EKs the server plugin trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkConfig {
    /// The EK CAs.
    pub cas: attestation_proto::ek::EkTrust,
    /// Only these EK digests (`None`: any EK the CAs certify).
    pub allowed: Option<Vec<[u8; 32]>>,
    /// Only the EK digests named by the files here.
    pub allowed_dir: Option<PathBuf>,
}

impl EkConfig {
    /// Whether the EK with SPKI digest `d` may attest.
    pub fn allows(&self, d: &[u8; 32]) -> Result<(), String> {
        let hex_d = hex::encode(d);
        if let Some(list) = &self.allowed
            && !list.contains(d)
        {
            return Err(format!("EK sha256:{hex_d} is not in trusted_ek_sha256"));
        }
        if let Some(dir) = &self.allowed_dir
            && !dir.join(&hex_d).is_file()
        {
            return Err(format!("EK sha256:{hex_d} has no file in trusted_ek_hash_path {}", dir.display()));
        }
        Ok(())
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.trim()).ok().and_then(|d| <[u8; 32]>::try_from(d).ok())
}

/// Reads the EK CA bundle at `path`: a PEM file, or every file of a directory.
fn read_ek_cas(path: &std::path::Path) -> Result<attestation_proto::ek::EkTrust, ConfigError> {
    let bad = |e: String| ConfigError::Invalid(format!("endorsement_ca_path {}: {e}", path.display()));
    let mut ders = Vec::new();
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path).map_err(|e| bad(e.to_string()))?.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        v.sort();
        v
    } else {
        vec![path.to_owned()]
    };
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| bad(format!("cannot read {}: {e}", f.display())))?;
        ders.extend(attestation_proto::ek::certificates_of(&bytes).map_err(|e| bad(format!("{}: {e}", f.display())))?);
    }
    attestation_proto::ek::EkTrust::new(ders).map_err(bad)
}

/// What the server plugin runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The trust domain (from SPIRE's core configuration).
    pub trust_domain: String,
    /// The pinned AKs.
    pub trust: Trust,
    /// The policy.
    pub policy: Policy,
    /// EK trust, if configured.
    pub ek: Option<EkConfig>,
}

/// A trust domain name as SPIFFE allows it: lower-case letters, digits, `.`, `-`, `_`.
fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty() && td.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

impl ServerConfig {
    /// Builds the configuration from SPIRE's `Configure` request (reads the files it names).
    pub fn from_request(trust_domain: &str, hcl: &str) -> Result<Self, ConfigError> {
        if !valid_trust_domain(trust_domain) {
            return Err(ConfigError::Invalid(format!("trust domain {trust_domain:?} is not a valid SPIFFE trust domain name")));
        }
        let data: ServerData = parse(hcl)?;
        if data.trusted_ak_sha256.is_some() || data.trusted_ak_paths.is_some() {
            return Err(ConfigError::Invalid(
                "trusted_ak_sha256 and trusted_ak_paths are replaced by trusted_hosts = [\"HOST=SHA256\"] and \
                 trusted_host_ak_paths = [\"HOST=PATH\"]: an AK is trusted only for the host it speaks for \
                 (`zonectl eventlog` prints the host id and the AK's sha256)"
                    .into(),
            ));
        }
        let mut trust = Trust::default();
        for entry in &data.trusted_hosts {
            trust.aks.push(Trust::parse_entry(entry).map_err(|e| ConfigError::Invalid(format!("trusted_hosts: {e}")))?);
        }
        for entry in &data.trusted_host_ak_paths {
            let (host, p) = entry.split_once('=').ok_or_else(|| {
                ConfigError::Invalid(format!("trusted_host_ak_paths entry {entry:?}: write HOST=PATH"))
            })?;
            let p = PathBuf::from(p.trim());
            let bytes = std::fs::read(&p)
                .map_err(|e| ConfigError::Invalid(format!("cannot read trusted_host_ak_paths entry {}: {e}", p.display())))?;
            attestation_proto::tpm::public::PublicArea::parse(&bytes).map_err(|e| {
                ConfigError::Invalid(format!("{} is not an AK public area (ak.pub from `zonectl eventlog --export-keys`): {e}", p.display()))
            })?;
            trust = trust.with(host.trim(), ak_digest(&bytes));
        }
        let ek = match &data.endorsement_ca_path {
            None => {
                if data.trusted_ek_sha256.is_some() || data.trusted_ek_hash_path.is_some() {
                    return Err(ConfigError::Invalid("trusted_ek_sha256 and trusted_ek_hash_path need endorsement_ca_path".into()));
                }
                None
            }
            Some(p) => {
                let allowed = data
                    .trusted_ek_sha256
                    .as_ref()
                    .map(|l| {
                        l.iter()
                            .map(|h| hex32(h).ok_or_else(|| ConfigError::Invalid(format!("trusted_ek_sha256: {h:?} is not 64 hex digits"))))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                if let Some(d) = &data.trusted_ek_hash_path
                    && !d.is_dir()
                {
                    return Err(ConfigError::Invalid(format!("trusted_ek_hash_path {} is not a directory", d.display())));
                }
                Some(EkConfig { cas: read_ek_cas(p)?, allowed, allowed_dir: data.trusted_ek_hash_path.clone() })
            }
        };
        if trust.aks.is_empty() && ek.is_none() {
            return Err(ConfigError::Invalid(
                "no trusted host: set trusted_hosts = [\"HOST=SHA256\"] (`zonectl eventlog` prints both), trusted_host_ak_paths, \
                 or endorsement_ca_path (trust hosts by their TPM's EK certificate)"
                    .into(),
            ));
        }
        let path = data.policy_path.ok_or_else(|| {
            ConfigError::Invalid("policy_path is required: a policy file from `zonectl measure --policy` or `zonectl policy suggest`".into())
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid(format!("cannot read policy_path {}: {e}", path.display())))?;
        let policy = Policy::parse(&text).map_err(|e| ConfigError::Invalid(format!("policy_path {}: {e}", path.display())))?;
        Ok(Self { trust_domain: trust_domain.to_owned(), trust, policy, ek })
    }
}

/// The agent plugin's `plugin_data`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentData {
    /// Seconds to wait for the host's evidence (default 30).
    #[serde(default)]
    pub evidence_timeout_seconds: Option<u64>,
    /// Testing only: answer every challenge with this file's bytes instead
    /// of fresh evidence (a replaying or impersonating agent, which the
    /// server plugin must deny).
    #[serde(default)]
    pub test_evidence_path: Option<PathBuf>,
    /// Testing only: send this payload instead of the plugin's own.
    #[serde(default)]
    pub test_payload: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_keys_are_unquoted() {
        assert_eq!(unquote_keys("\"policy_path\" = \"/p\"\n  \"a_b\"= 1"), "policy_path = \"/p\"\n  a_b = 1");
        assert_eq!(unquote_keys("x = \"\\\"q\\\" = 1\""), "x = \"\\\"q\\\" = 1\"");
    }

    #[test]
    fn server_config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("p.toml");
        std::fs::write(&policy, format!("version = 1\n[[allow]]\nname = \"web-*\"\nkernel_sha256 = [\"{d}\"]\ninitrd_sha256 = [\"none\"]\ncmdline_sha256 = [\"{d}\"]\n", d = "ab".repeat(32))).unwrap();
        let ak = "cd".repeat(32);
        let hcl = format!("\"trusted_hosts\" = [\"host-a={ak}\"]\n\"policy_path\" = \"{}\"", policy.display());
        let c = ServerConfig::from_request("example.org", &hcl).unwrap();
        assert_eq!(c.trust, Trust::default().with("host-a", [0xcd; 32]));
        let err = |td: &str, hcl: &str| ServerConfig::from_request(td, hcl).unwrap_err().to_string();
        assert!(err("example.org", "").contains("no trusted host"));
        assert!(err("example.org", &format!("trusted_hosts = [\"h={ak}\"]")).contains("policy_path is required"));
        assert!(err("example.org", "trusted_hosts = [\"h=zz\"]").contains("64 hex digits"));
        assert!(err("example.org", &format!("trusted_hosts = [\"{ak}\"]")).contains("HOST=SHA256"));
        assert!(err("example.org", &format!("trusted_ak_sha256 = [\"{ak}\"]")).contains("replaced by trusted_hosts"));
        assert!(err("example.org", "unknown_key = 1").contains("not valid"));
        assert!(err("Example Org", &hcl).contains("trust domain"));
        assert!(err("example.org", &format!("trusted_hosts = [\"h={ak}\"]\npolicy_path = \"/nonexistent\"")).contains("cannot read"));
    }
}
