//! The server-side SPIRE plugin, driven over go-plugin's protocol the way
//! spire-server drives it (handshake line, Init, Configure, the Attest
//! stream, Shutdown), with real evidence from the daemon and an embedded
//! swtpm on this machine's `/dev/kvm`: a verified zone gets its agent ID and
//! selectors; replayed evidence, a zone outside the policy, an untrusted AK
//! and malformed payloads are denied, each with the verifier's reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use spire_plugin::proto::config::config_client::ConfigClient;
use spire_plugin::proto::config::{ConfigureRequest, CoreConfiguration};
use spire_plugin::proto::goplugin::Empty;
use spire_plugin::proto::goplugin::grpc_controller_client::GrpcControllerClient;
use spire_plugin::proto::init::InitRequest;
use spire_plugin::proto::init::init_client::InitClient;
use spire_plugin::proto::server_nodeattestor::node_attestor_client::NodeAttestorClient;
use spire_plugin::proto::server_nodeattestor::{AgentAttributes, AttestRequest, attest_request, attest_response};
use tonic::transport::Channel;
use attestation_proto::guest::{Activation, HostKeys};
use attestation_proto::spire::{ChallengeResponse, ServerChallenge};
use prost::Message;

const PLUGIN: &str = env!("CARGO_BIN_EXE_zone-attestor-server-under-test");

struct Plugin {
    child: Child,
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

fn start(dir: &Path) -> Plugin {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stderr = Stdio::from(std::fs::File::create(dir.join("plugin.stderr")).unwrap());
    let p = zone_tests::plugin::start(Path::new(PLUGIN), dir, stderr, &rt).unwrap();
    let parts: Vec<&str> = p.handshake.split('|').collect();
    assert_eq!(parts.len(), 5, "handshake line {:?}", p.handshake);
    assert_eq!((parts[0], parts[1], parts[2], parts[4]), ("1", "1", "unix", "grpc"), "{:?}", p.handshake);
    Plugin { child: p.child, socket: p.socket, rt, channel: p.channel }
}

impl Plugin {
    fn configure(&self, hcl: &str) -> Result<(), tonic::Status> {
        let req = ConfigureRequest {
            core_configuration: Some(CoreConfiguration { trust_domain: "example.org".into() }),
            hcl_configuration: hcl.into(),
        };
        self.rt.block_on(ConfigClient::new(self.channel.clone()).configure(req)).map(|_| ())
    }

    /// Runs one attestation: `payload`, then `answer(challenge)`.
    fn attest(&self, payload: &[u8], answer: impl FnOnce(&ServerChallenge) -> Vec<u8>) -> Result<AgentAttributes, tonic::Status> {
        self.rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let msg = |r| AttestRequest { request: Some(r) };
            tx.send(msg(attest_request::Request::Payload(payload.to_vec()))).await.unwrap();
            let mut client = NodeAttestorClient::new(self.channel.clone());
            let mut replies = client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            let first = replies.message().await?.expect("a reply");
            let challenge = match first.response {
                Some(attest_response::Response::Challenge(c)) => ServerChallenge::decode(c.as_slice()).expect("a zone attestor challenge"),
                other => panic!("expected a challenge, got {other:?}"),
            };
            assert_eq!(challenge.nonce.len(), 32);
            tx.send(msg(attest_request::Request::ChallengeResponse(answer(&challenge)))).await.unwrap();
            match replies.message().await?.expect("a reply").response {
                Some(attest_response::Response::AgentAttributes(a)) => Ok(a),
                other => panic!("expected agent attributes, got {other:?}"),
            }
        })
    }
}

/// The agent's answer: evidence about `zone` for `nonce` (from `zonectl evidence`), no activation.
fn evidence(d: &Daemon, zone: &str, nonce: &[u8]) -> Vec<u8> {
    let file = d.dir.path().join(format!("{zone}-{}.ev", hex::encode(&nonce[..4])));
    let out = d.zonectl(&["evidence", zone, "--nonce", &hex::encode(nonce), "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    ChallengeResponse { evidence: std::fs::read(file).unwrap(), activated_secret: Vec::new() }.encode_to_vec()
}

/// The agent's answer as the agent plugin makes it: evidence and the
/// activated secret, both from the daemon over `zone`'s host channel.
fn activated(d: &Daemon, zone: &str, c: &ServerChallenge) -> Vec<u8> {
    let activation = c.activation.clone().map(|a| Activation { id_object: a.id_object, encrypted_secret: a.encrypted_secret });
    let (evidence, activated_secret) = guest_evidence(d, zone, &c.nonce, activation).expect("the daemon answers");
    ChallengeResponse { evidence, activated_secret }.encode_to_vec()
}

fn payload_of(keys: &HostKeys) -> Vec<u8> {
    spire_plugin::agent::payload_with(Some(attestation_proto::spire::HostKeys {
        ak_public: keys.ak_public.clone(),
        ek_public: keys.ek_public.clone(),
        ek_certificate: keys.ek_certificate.clone(),
        ek_chain: keys.ek_chain.clone(),
    }))
}

fn denied(r: Result<AgentAttributes, tonic::Status>, want: &str) {
    let s = r.expect_err("attestation was accepted");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains(want), "{want:?} not in {:?}", s.message());
}

#[test]
fn the_server_plugin_admits_verified_zones_and_denies_everything_else_with_its_reason() {
    // Not started by SPIRE: a clear refusal.
    let out = Command::new(PLUGIN).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout but a handshake");
    assert!(text(&out.stderr).contains("plugin_cmd"), "{}", text(&out.stderr));

    let d = Daemon::new("").start();
    d.launch("web");
    d.launch("db");
    let log = d.json(&["eventlog"]);
    let ak = log["ak_sha256"].as_str().unwrap().to_owned();
    let trust_entry = log["trust_entry"].as_str().unwrap().to_owned();
    assert_eq!(trust_entry, format!("test-host={ak}"));
    let policy = d.dir.path().join("web.policy");
    let suggested = d.zonectl(&["policy", "suggest", "web"]);
    std::fs::write(&policy, &suggested.stdout).unwrap();

    let p = start(d.dir.path());
    // Its socket is in a private directory of a random name.
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = p.socket.parent().unwrap();
        assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
        assert!(dir.file_name().unwrap().to_string_lossy().len() > "zone-attestor-".len() + 16, "{}", dir.display());
        assert_eq!(std::fs::metadata(&p.socket).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let names = p.rt.block_on(InitClient::new(p.channel.clone()).init(InitRequest { host_service_names: vec![] })).unwrap().into_inner();
    assert!(names.plugin_service_names.contains(&"spire.plugin.server.nodeattestor.v1.NodeAttestor".to_owned()));
    assert!(names.plugin_service_names.contains(&"spire.service.common.config.v1.Config".to_owned()));
    let hello = spire_plugin::agent::payload();

    // Unconfigured, then badly configured.
    let s = p.attest(&hello, |_| unreachable!()).unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    let bad = p.configure("trusted_hosts = [\"test-host=nothex\"]").unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("64 hex digits"), "{bad:?}");
    let old = p.configure(&format!("trusted_ak_sha256 = [\"{ak}\"]")).unwrap_err();
    assert!(old.message().contains("trusted_hosts"), "{old:?}");
    let hcl = format!("\"trusted_hosts\" = [\"{trust_entry}\"]\n\"policy_path\" = \"{}\"", policy.display());
    p.configure(&hcl).unwrap();

    // A verified zone: its agent ID and selectors.
    let mut genuine = Vec::new();
    let attrs = p
        .attest(&hello, |c| {
            genuine = evidence(&d, "web", &c.nonce);
            genuine.clone()
        })
        .unwrap();
    assert_eq!(attrs.spiffe_id, "spiffe://example.org/spire/agent/zone/test-host/web");
    assert!(attrs.can_reattest);
    let kernel = attestation_proto::launch::sha256_hex(&std::fs::read(STUB).unwrap());
    for s in ["name:web".to_owned(), "host:test-host".to_owned(), format!("kernel:sha256:{kernel}"), "initrd:sha256:none".to_owned()] {
        assert!(attrs.selector_values.contains(&s), "{s} not in {:?}", attrs.selector_values);
    }
    assert!(attrs.selector_values.iter().any(|s| s.starts_with("cmdline:sha256:")));

    // Refusals, each with the verifier's reason.
    denied(p.attest(&hello, |_| genuine.clone()), "freshness");
    denied(p.attest(&hello, |c| evidence(&d, "db", &c.nonce)), "policy");
    denied(p.attest(b"not a payload", |_| unreachable!()), "malformed payload");
    denied(p.attest(&hello, |_| b"garbage".to_vec()), "format");
    // The host's AK trusted for another host only: it cannot speak for this one.
    let other_host = format!("trusted_hosts = [\"other-host={ak}\"]\npolicy_path = \"{}\"", policy.display());
    p.configure(&other_host).unwrap();
    denied(p.attest(&hello, |c| evidence(&d, "web", &c.nonce)), "rejected by check host:");
    let other_ak = format!("trusted_hosts = [\"test-host={}\"]\npolicy_path = \"{}\"", "ab".repeat(32), policy.display());
    p.configure(&other_ak).unwrap();
    denied(p.attest(&hello, |c| evidence(&d, "web", &c.nonce)), "ak-trusted");
    let log = std::fs::read_to_string(d.dir.path().join("plugin.stderr")).unwrap();
    let denial = log.lines().find(|l| l.contains("ak-trusted")).expect("the denial is logged");
    let j: serde_json::Value = serde_json::from_str(denial).expect("hclog JSON");
    assert_eq!(j["@level"], "warn");

    // SPIRE's unload: Shutdown, then the process exits and removes its socket.
    let mut p = p;
    p.rt.block_on(GrpcControllerClient::new(p.channel.clone()).shutdown(Empty {})).unwrap();
    let t = Instant::now();
    while p.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(5), "the plugin did not exit after Shutdown");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.socket.exists(), "the plugin left its socket behind");
    assert!(!p.socket.parent().unwrap().exists(), "the plugin left its socket directory behind");
}

/// SHA-256 of the SubjectPublicKeyInfo of a DER certificate, by openssl.
fn spki_sha256(cert_der: &[u8], dir: &Path) -> String {
    let cert = dir.join("ek-cert.der");
    std::fs::write(&cert, cert_der).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl x509 -inform DER -in {} -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum", cert.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    text(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// A CA certificate (DER) with the swtpm issuer's name but a key of its own.
fn forged_issuer(dir: &Path) -> Vec<u8> {
    let pem = std::fs::read(unrelated_ca(dir)).unwrap();
    attestation_proto::ek::certificates_of(&pem).unwrap().remove(0)
}

/// A CA certificate (PEM) no TPM's EK certificate chains to.
fn unrelated_ca(dir: &Path) -> PathBuf {
    let (key, cert) = (dir.join("other-ca.key"), dir.join("other-ca.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=swtpm-localca"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req");
    cert
}

/// The root certificate of the embedded swtpm's local CA (the "manufacturer"
/// of its EK certificate; the EK certificate is issued by its intermediate,
/// which the host sends with its keys).
fn swtpm_root_ca(d: &Daemon) -> Vec<u8> {
    std::fs::read(d.state().join("swtpm/localca/swtpm-localca-rootca-cert.pem")).unwrap()
}

#[test]
fn hosts_trusted_by_their_ek_certificate_attest_by_credential_activation_and_impostors_are_denied() {
    let d = Daemon::new("").start();
    d.launch("web");
    let other = Daemon::new("").start();
    other.launch("web");
    let keys = guest_keys(&d, "web");
    assert!(!keys.ek_certificate.is_empty(), "the embedded swtpm has an EK certificate");
    let other_keys = guest_keys(&other, "web");
    assert_ne!(keys.ek_public, other_keys.ek_public, "two TPMs");
    let policy = d.dir.path().join("web.policy");
    std::fs::write(&policy, &d.zonectl(&["policy", "suggest", "web"]).stdout).unwrap();
    // Both daemons' local CAs are "manufacturers" the server trusts: their
    // roots only; the intermediate that issued each EK certificate comes with
    // the host's keys.
    assert_eq!(keys.ek_chain.len(), 1, "the embedded swtpm sends its issuing certificate");
    let bundle = d.dir.path().join("both-roots.pem");
    std::fs::write(&bundle, [swtpm_root_ca(&d), swtpm_root_ca(&other)].concat()).unwrap();

    let p = start(d.dir.path());
    let ek_only = format!("endorsement_ca_path = \"{}\"\npolicy_path = \"{}\"", bundle.display(), policy.display());
    p.configure(&ek_only).unwrap();

    // A genuine activation, with no pinned AK: the host id comes from the EK.
    let ek_sha = spki_sha256(&keys.ek_certificate, d.dir.path());
    let mut genuine_answer = Vec::new();
    let attrs = p
        .attest(&payload_of(&keys), |c| {
            assert!(c.activation.is_some(), "EK trust challenges with a credential");
            genuine_answer = activated(&d, "web", c);
            genuine_answer.clone()
        })
        .unwrap();
    assert_eq!(attrs.spiffe_id, format!("spiffe://example.org/spire/agent/zone/ek-{ek_sha}/web"));
    for s in [format!("host:ek-{ek_sha}"), format!("ek:sha256:{ek_sha}"), "ek-issuer:cn:swtpm-localca".to_owned(), "name:web".to_owned()] {
        assert!(attrs.selector_values.contains(&s), "{s} not in {:?}", attrs.selector_values);
    }
    assert!(!attrs.selector_values.contains(&"host:test-host".to_owned()), "the host's own config named the host");

    // Denied, each with its check:
    // an EK certificate from a CA the server does not trust,
    let unrelated = format!("endorsement_ca_path = \"{}\"\npolicy_path = \"{}\"", unrelated_ca(d.dir.path()).display(), policy.display());
    p.configure(&unrelated).unwrap();
    denied(p.attest(&payload_of(&keys), |_| unreachable!()), "check ek-certificate: the EK certificate");
    p.configure(&ek_only).unwrap();
    // an EK certificate without the intermediate that links it to the trusted root,
    let no_chain = HostKeys { ek_chain: Vec::new(), ..keys.clone() };
    denied(p.attest(&payload_of(&no_chain), |_| unreachable!()), "not signed by a trusted EK CA or a chain certificate");
    // an intermediate the host made up (a CA of its own with the issuer's name) does not link it either,
    let forged_chain = HostKeys { ek_chain: vec![forged_issuer(d.dir.path())], ..keys.clone() };
    denied(p.attest(&payload_of(&forged_chain), |_| unreachable!()), "not signed by a trusted EK CA or a chain certificate");
    // an EK certificate (genuine, of another TPM) whose key is not this EK,
    let mismatched =
        HostKeys { ek_certificate: other_keys.ek_certificate.clone(), ek_chain: other_keys.ek_chain.clone(), ..keys.clone() };
    denied(p.attest(&payload_of(&mismatched), |_| unreachable!()), "key is not the TPM's EK");
    // an AK that does not live in the EK's TPM (another TPM's AK claimed under this EK):
    // the credential is for that AK's name, and this TPM does not release it,
    let foreign_ak = HostKeys { ak_public: other_keys.ak_public.clone(), ..keys.clone() };
    denied(
        p.attest(&payload_of(&foreign_ak), |c| {
            let a = c.activation.clone().map(|a| Activation { id_object: a.id_object, encrypted_secret: a.encrypted_secret });
            let refused = guest_evidence(&d, "web", &c.nonce, a).expect_err("the TPM released a credential made for another AK");
            assert!(refused.contains("did not release the credential"), "{refused}");
            ChallengeResponse { evidence: Vec::new(), activated_secret: vec![0; 32] }.encode_to_vec()
        }),
        "check activation",
    );
    // a replayed answer (the secret of an earlier activation),
    denied(p.attest(&payload_of(&keys), |_| genuine_answer.clone()), "check activation");
    // an activation answered with evidence for another nonce,
    denied(
        p.attest(&payload_of(&keys), |c| {
            let a = c.activation.clone().map(|a| Activation { id_object: a.id_object, encrypted_secret: a.encrypted_secret });
            let (evidence, activated_secret) = guest_evidence(&d, "web", &[0x42; 32], a).unwrap();
            ChallengeResponse { evidence, activated_secret }.encode_to_vec()
        }),
        "check freshness",
    );
    // and an EK not on the allow-list.
    let allow_other = format!("{ek_only}\ntrusted_ek_sha256 = [\"{}\"]", "ab".repeat(32));
    p.configure(&allow_other).unwrap();
    denied(p.attest(&payload_of(&keys), |_| unreachable!()), "not in trusted_ek_sha256");
    let allow_dir = d.dir.path().join("trusted-eks");
    std::fs::create_dir(&allow_dir).unwrap();
    let by_dir = format!("{ek_only}\ntrusted_ek_hash_path = \"{}\"", allow_dir.display());
    p.configure(&by_dir).unwrap();
    denied(p.attest(&payload_of(&keys), |_| unreachable!()), "has no file in trusted_ek_hash_path");
    std::fs::write(allow_dir.join(&ek_sha), b"").unwrap();
    p.attest(&payload_of(&keys), |c| activated(&d, "web", c)).expect("an EK added to the directory attests without reconfiguring");

    // Pinned AKs and EK trust together: a pinned host keeps its configured id.
    let log = d.json(&["eventlog"]);
    let both_ways = format!("{ek_only}\ntrusted_hosts = [\"{}\"]", log["trust_entry"].as_str().unwrap());
    p.configure(&both_ways).unwrap();
    let attrs = p.attest(&payload_of(&keys), |c| activated(&d, "web", c)).unwrap();
    assert_eq!(attrs.spiffe_id, "spiffe://example.org/spire/agent/zone/test-host/web");

    // The daemon bounds how many activations a zone may ask for.
    p.configure(&ek_only).unwrap();
    let mut last = Ok((Vec::new(), Vec::new()));
    for _ in 0..40 {
        last = guest_evidence(&d, "web", &[1; 32], Some(Activation { id_object: vec![0; 50], encrypted_secret: vec![0; 256] }));
        if last.as_ref().is_err_and(|e| e.contains("this minute")) {
            break;
        }
    }
    assert!(last.is_err_and(|e| e.contains("credential activations this minute")), "no limit on activations");
}
