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
    fn attest(&self, payload: &[u8], answer: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<AgentAttributes, tonic::Status> {
        self.rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let msg = |r| AttestRequest { request: Some(r) };
            tx.send(msg(attest_request::Request::Payload(payload.to_vec()))).await.unwrap();
            let mut client = NodeAttestorClient::new(self.channel.clone());
            let mut replies = client.attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            let first = replies.message().await?.expect("a reply");
            let nonce = match first.response {
                Some(attest_response::Response::Challenge(n)) => n,
                other => panic!("expected a challenge, got {other:?}"),
            };
            assert_eq!(nonce.len(), 32);
            tx.send(msg(attest_request::Request::ChallengeResponse(answer(&nonce)))).await.unwrap();
            match replies.message().await?.expect("a reply").response {
                Some(attest_response::Response::AgentAttributes(a)) => Ok(a),
                other => panic!("expected agent attributes, got {other:?}"),
            }
        })
    }
}

fn evidence(d: &Daemon, zone: &str, nonce: &[u8]) -> Vec<u8> {
    let file = d.dir.path().join(format!("{zone}-{}.ev", hex::encode(&nonce[..4])));
    let out = d.zonectl(&["evidence", zone, "--nonce", &hex::encode(nonce), "--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::read(file).unwrap()
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
        .attest(&hello, |n| {
            genuine = evidence(&d, "web", n);
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
    denied(p.attest(&hello, |n| evidence(&d, "db", n)), "policy");
    denied(p.attest(b"not json", |_| unreachable!()), "malformed payload");
    denied(p.attest(&hello, |_| b"garbage".to_vec()), "format");
    // The host's AK trusted for another host only: it cannot speak for this one.
    let other_host = format!("trusted_hosts = [\"other-host={ak}\"]\npolicy_path = \"{}\"", policy.display());
    p.configure(&other_host).unwrap();
    denied(p.attest(&hello, |n| evidence(&d, "web", n)), "rejected by check host:");
    let other_ak = format!("trusted_hosts = [\"test-host={}\"]\npolicy_path = \"{}\"", "ab".repeat(32), policy.display());
    p.configure(&other_ak).unwrap();
    denied(p.attest(&hello, |n| evidence(&d, "web", n)), "ak-trusted");
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
