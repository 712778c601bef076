//! `zonectl image pull`: an image from an OCI distribution registry
//! (`oci-client`), written as an OCI layout directory that [`super::import_from`]
//! then converts like an archive. Loopback registries (`localhost`,
//! `127.0.0.0/8`, `[::1]`) are spoken to over plain HTTP, others over HTTPS
//! (`--insecure-http` names more). Authentication is the registry's choice:
//! none, HTTP basic, or a bearer token from the realm its challenge names
//! (Docker's token protocol), fetched anonymously or with the caller's
//! credentials before the first request, so that a refusal is reported as
//! one. Credentials go only to the image's registry. The manifest's digest
//! is checked, and every blob is checked again against its digest by the
//! import.

use std::path::Path;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::archive::{Descriptor, Manifest, media, sha256_hex};
use super::{OciError, Progress};

/// How to reach the registry.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure_http: Vec<String>,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// Username and password for the registry (or its token realm); none: anonymous.
    pub credentials: Option<(String, String)>,
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').filter(|(h, p)| !h.ends_with(']') || p.is_empty()).map_or(registry, |(h, _)| h);
    let host = if registry.starts_with('[') { registry.split(']').next().unwrap_or("").trim_start_matches('[') } else { host };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn registry_error(what: &str) -> impl Fn(oci_client::errors::OciDistributionError) -> OciError + '_ {
    move |e| {
        // reqwest's message alone ("error sending request") hides why: add the causes.
        let mut msg = format!("{what}: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            cause = c.source();
        }
        OciError::Registry(msg)
    }
}

/// An access refusal as [`OciError::Unauthorized`], saying what to do; any other error back.
fn refused(e: OciDistributionError, registry: &str, with_credentials: bool) -> Result<OciError, OciDistributionError> {
    let detail = match &e {
        OciDistributionError::AuthenticationFailure(body) => body.trim().chars().take(200).collect::<String>(),
        OciDistributionError::UnauthorizedError { url } => format!("{url} answered 401 Unauthorized"),
        _ => return Err(e),
    };
    let what = if with_credentials {
        "refused these credentials: check --username and the password given on stdin"
    } else {
        "refused anonymous access: give credentials with --username NAME --password-stdin"
    };
    Ok(OciError::Unauthorized(format!("the registry {registry} {what} ({detail})")))
}

/// Pulls `reference` into the OCI layout directory `dir` (created empty by the caller).
pub async fn pull(reference: &str, dir: &Path, opts: &PullOptions, progress: &mut dyn Progress) -> Result<(), OciError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = Reference::try_from(reference)
        .map_err(|e| OciError::Registry(format!("{reference} is not an image reference (registry/repository:tag): {e}")))?;
    let registry = r.resolve_registry().to_owned();
    let mut plain: Vec<String> = opts.insecure_http.clone();
    if is_loopback(&registry) {
        plain.push(registry.clone());
    }
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        read_timeout: Some(opts.timeout),
        connect_timeout: Some(opts.timeout),
        platform_resolver: None,
        ..ClientConfig::default()
    };
    let client = Client::new(config);
    let auth = match &opts.credentials {
        Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        None => RegistryAuth::Anonymous,
    };
    // Authenticate first: the client would otherwise drop a refused token
    // request silently and report only the unauthorized manifest request.
    if let Err(e) = client.auth(&r, &auth, RegistryOperation::Pull).await {
        return Err(refused(e, &registry, opts.credentials.is_some()).unwrap_or_else(|e| registry_error(&format!("authentication with {registry}"))(e)));
    }
    let accept = [media::OCI_MANIFEST, media::DOCKER_MANIFEST, media::OCI_INDEX, media::DOCKER_LIST];
    let manifest_error = |e: OciDistributionError| refused(e, &registry, opts.credentials.is_some()).unwrap_or_else(|e| registry_error(&format!("manifest of {reference}"))(e));
    let (mut bytes, mut digest) = client.pull_manifest_raw(&r, &auth, &accept).await.map_err(manifest_error)?;
    let mut image = r.clone();
    for _ in 0..2 {
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if got != digest {
            return Err(OciError::Digest(format!("the registry's manifest {digest} has digest {got}")));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| OciError::Malformed(format!("manifest of {reference}: {e}")))?;
        if v.get("manifests").is_none() {
            break;
        }
        // An image index: the linux/amd64 image.
        let entry = v["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| OciError::Platform(format!("{reference} has no linux/amd64 image")))?
            .to_owned();
        image = r.clone_with_digest(entry);
        (bytes, digest) = client.pull_manifest_raw(&image, &auth, &accept).await.map_err(manifest_error)?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| OciError::Malformed(format!("manifest of {reference}: {e}")))?;
    let media_type = manifest.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| OciError::Io(format!("cannot create {}: {e}", blobs.display())))?;
    let write = |path: &Path, b: &[u8]| std::fs::write(path, b).map_err(|e| OciError::Io(format!("cannot write {}: {e}", path.display())));
    write(&blobs.join(sha256_hex(&digest)?), &bytes)?;
    let count = manifest.layers.len();
    let all: Vec<(Option<usize>, &Descriptor)> =
        std::iter::once((None, &manifest.config)).chain(manifest.layers.iter().enumerate().map(|(i, l)| (Some(i), l))).collect();
    for (index, desc) in all {
        if let Some(i) = index {
            progress.layer(i, count, desc.size);
        }
        let path = blobs.join(sha256_hex(&desc.digest)?);
        let file = tokio::fs::File::create(&path).await.map_err(|e| OciError::Io(format!("cannot create {}: {e}", path.display())))?;
        client
            .pull_blob(&image, desc.digest.as_str(), file)
            .await
            .map_err(registry_error(&format!("blob {} of {reference}", desc.digest)))?;
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": reference },
        }],
    });
    write(&dir.join("index.json"), &serde_json::to_vec(&index).unwrap_or_default())?;
    write(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_registries() {
        for (r, want) in [("localhost:5000", true), ("127.0.0.1:5000", true), ("127.1.2.3", true), ("[::1]:5000", true), ("docker.io", false), ("10.0.0.1:5000", false)] {
            assert_eq!(super::is_loopback(r), want, "{r}");
        }
    }
}
