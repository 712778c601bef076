//! Attestation benchmark, on this machine against the embedded swtpm:
//!
//! - evidence latency (p50/p99) of single requests through the ledger (log
//!   snapshot, Merkle batch of one, TPM quote, encoding), next to the same
//!   quote made by tpm2-tools' `tpm2_quote` (a process per quote, its own
//!   swtpm) — the way script-driven attestation agents quote;
//! - throughput of 100 concurrent requests, batched (one quote shared
//!   through a Merkle root) vs one quote per request, with the swtpm as is
//!   and with an artificial 100 ms per quote standing in for a hardware TPM;
//! - verifier throughput on one core for a fresh host and for hosts with
//!   1,000 and 100,000 events of history (evidence from the latest checkpoint);
//! - attestations per second through the SPIRE server plugin
//!   (`zone-attestor-server`, driven over go-plugin's protocol as
//!   spire-server drives it), each with fresh evidence for its nonce.
//!
//! Usage: `attest-bench [--runs N] [--concurrency N] [--slow-quote-ms MS] [--peer-runs N]`.
//! Prints a markdown table, then one JSON line with every figure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use attestation_proto::eventlog::{Event, TAG_ZONE_LAUNCH, TAG_ZONE_STOP};
use attestation_proto::launch::{Artifact, LaunchRecord, RECORD_VERSION, StopRecord, sha256_hex};
use attestation_proto::policy::Policy;
use attestation_proto::verify::{Trust, ak_digest, verify};
use host_attest::evidence::Expected;
use host_attest::{Ledger, TpmSettings};
use serde_json::json;

struct Args {
    runs: usize,
    concurrency: usize,
    slow_quote_ms: u64,
    peer_runs: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { runs: 200, concurrency: 100, slow_quote_ms: 100, peer_runs: 30 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> anyhow::Result<u64> {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            v.parse().with_context(|| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--runs" => a.runs = usize::try_from(num()?)?.max(1),
            "--concurrency" => a.concurrency = usize::try_from(num()?)?.max(1),
            "--slow-quote-ms" => a.slow_quote_ms = num()?,
            "--peer-runs" => a.peer_runs = usize::try_from(num()?)?,
            other => bail!("unknown argument {other}; usage: attest-bench [--runs N] [--concurrency N] [--slow-quote-ms MS] [--peer-runs N]"),
        }
    }
    Ok(a)
}

fn free_port_pair() -> anyhow::Result<u16> {
    zone_tests::free_port_pair().context("no free pair of loopback ports")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn sorted_ms(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn record(i: usize) -> LaunchRecord {
    let cmdline = format!("console=ttyS0 reboot=k panic=-1 quiet zone.bench={i}");
    LaunchRecord {
        version: RECORD_VERSION,
        host: "bench-host".into(),
        zone: format!("bench-{i}"),
        launch_id: format!("{i:032x}"),
        kernel: Artifact::measure("/opt/zone/kernel/vmlinux", b"kernel"),
        initrd: Some(Artifact::measure("/opt/zone/images/base.cpio", b"initrd")),
        cmdline_sha256: sha256_hex(cmdline.as_bytes()),
        cmdline,
        vcpus: 1,
        memory_mib: 64,
        devices: vec![format!("virtio-vsock:cid={}", i + 3)],
        launched_unix_ms: 0,
        rootfs: None,
    }
}

/// What the daemon would expect of launch `i`'s zone.
fn expected(i: usize) -> Expected {
    let r = record(i);
    Expected { zone: r.zone.clone(), record: r.encode() }
}

fn nonce(i: usize) -> Vec<u8> {
    let mut n = vec![0u8; 32];
    n[..8].copy_from_slice(&(i as u64).to_be_bytes());
    n[8..16].copy_from_slice(&(std::process::id() as u64).to_be_bytes());
    n
}

/// A ledger on the embedded swtpm in `dir` (the swtpm stays up between ledgers).
fn ledger(dir: &Path, port: u16, max_batch: usize, quote_ms: u64) -> anyhow::Result<Ledger> {
    let settings = TpmSettings {
        device: "/nonexistent/tpm".into(),
        pcr: 15,
        require_device: false,
        swtpm_port: port,
        max_batch,
        simulated_quote_latency_ms: quote_ms,
        ek_chain_path: None,
    };
    // The previous ledger's thread lets go of the TPM connection when its handle drops.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Ledger::start(&settings, dir) {
            Ok(l) => return Ok(l),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e).context("starting the ledger"),
        }
    }
}

/// Verifications per second on this thread, for `secs` seconds.
fn verifier_rate(evidence: &[u8], nonce: &[u8], trust: &Trust, policy: &Policy, secs: f64) -> anyhow::Result<(f64, usize)> {
    let v = verify(evidence, nonce, trust, policy).map_err(|e| anyhow::anyhow!("genuine evidence rejected: {e}"))?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        verify(evidence, nonce, trust, policy).map_err(|e| anyhow::anyhow!("{e}"))?;
        n += 1;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), v.events))
}

/// 100 concurrent requests: (requests per second, quotes made).
fn concurrent(rt: &tokio::runtime::Runtime, l: &Ledger, n: usize, ids: &[String], trust: &Trust) -> anyhow::Result<(f64, usize, f64)> {
    let start = Instant::now();
    let results: Vec<(Vec<u8>, Vec<u8>)> = rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (l, id, exp, nonce) = (l.clone(), ids[i % ids.len()].clone(), expected(i % ids.len()), nonce(10_000 + i));
                tokio::spawn(async move { l.evidence(&id, exp, &nonce).await.map(|e| (e, nonce)) })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        anyhow::Ok(out)
    })?;
    let wall = start.elapsed().as_secs_f64();
    let mut quotes = std::collections::HashSet::new();
    for (i, (ev, nonce)) in results.iter().enumerate() {
        let decoded = attestation_proto::evidence::decode(ev).map_err(|e| anyhow::anyhow!(e))?;
        quotes.insert(decoded.quote_attest);
        let policy = Policy::admitting(&record(i % ids.len()));
        verify(ev, nonce, trust, &policy).map_err(|e| anyhow::anyhow!("request {i}: {e}"))?;
    }
    Ok((n as f64 / wall, quotes.len(), wall))
}

/// Attestations in flight at once against the SPIRE server plugin (a SPIRE
/// server admitting a fleet of agents at once).
const PLUGIN_CONCURRENCY: usize = 32;
/// Persistent handle of the tpm2-tools peer's AK.
const PEER_AK: &str = "0x81010002";

/// tpm2-tools quoting the same PCR on its own swtpm: a process per quote.
fn peer_tpm2_quote(runs: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let port = free_port_pair()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .spawn()
        .context("cannot start swtpm for the tpm2-tools peer (apt-get install swtpm)")?;
    let result = (|| {
        let tcti = format!("swtpm:host=127.0.0.1,port={port}");
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new(args[0]).args(&args[1..]).env("TPM2TOOLS_TCTI", &tcti).current_dir(dir.path()).output()
                .with_context(|| format!("cannot run {} (apt-get install tpm2-tools)", args[0]))?;
            if !out.status.success() {
                bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        run(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"])?;
        run(&["tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u", "ak.pub"])?;
        // No resource manager on a bare swtpm: free the object slots, and
        // keep the AK persistent so a quote loads nothing.
        run(&["tpm2_flushcontext", "-t"])?;
        run(&["tpm2_evictcontrol", "-C", "o", "-c", "ak.ctx", PEER_AK])?;
        run(&["tpm2_flushcontext", "-t"])?;
        let mut ms = Vec::new();
        for i in 0..runs + 1 {
            let q = hex::encode(nonce(20_000 + i));
            let t = Instant::now();
            run(&["tpm2_quote", "-c", PEER_AK, "-l", "sha256:15", "-q", &q, "-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs", "-g", "sha256"])?;
            if i > 0 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(ms)
    })();
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    result
}

fn stop_embedded_swtpm(dir: &Path) {
    let pid_file: PathBuf = dir.join("swtpm/swtpm.pid");
    if let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) on the pid of the swtpm this benchmark started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let port = free_port_pair()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = run(&args, dir.path(), port, &rt);
    stop_embedded_swtpm(dir.path());
    result
}

fn run(args: &Args, dir: &Path, port: u16, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let l = ledger(dir, port, 256, 0)?;
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = record(i);
        l.record_launch(15, &r)?;
        ids.push(r.launch_id);
    }
    let snap = l.snapshot()?;
    let ak = ak_digest(&snap.ak_public);
    let trust = Trust::default().with("bench-host", ak);
    let policy0 = Policy::admitting(&record(0));

    // Single-request latency.
    let mut lat = Vec::new();
    for i in 0..args.runs + 5 {
        let n = nonce(i);
        let t = Instant::now();
        let ev = rt.block_on(l.evidence(&ids[0], expected(0), &n))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if i >= 5 {
            lat.push(ms);
        }
        if i == 0 {
            verify(&ev, &n, &trust, &policy0).map_err(|e| anyhow::anyhow!("genuine evidence rejected: {e}"))?;
        }
    }
    let lat = sorted_ms(lat);
    let n10 = nonce(999);
    let ev10 = rt.block_on(l.evidence(&ids[0], expected(0), &n10))?;
    let (verify10, events10) = verifier_rate(&ev10, &n10, &trust, &policy0, 2.0)?;
    drop(l);

    // Concurrency: batched vs one quote per request, swtpm speed and a slow TPM.
    let mut conc = Vec::new();
    for (quote_ms, max_batch) in [(0, 256), (0, 1), (args.slow_quote_ms, 256), (args.slow_quote_ms, 1)] {
        let l = ledger(dir, port, max_batch, quote_ms)?;
        let (rate, quotes, wall) = concurrent(rt, &l, args.concurrency, &ids, &trust)?;
        conc.push(json!({"quote_delay_ms": quote_ms, "max_batch": max_batch, "requests_per_s": rate, "quotes": quotes, "wall_s": wall}));
        drop(l);
    }

    // A log of 1,000 events.
    let l = ledger(dir, port, 256, 0)?;
    let have = l.snapshot()?.events;
    for i in usize::try_from(have)?..1000 {
        l.record_launch(15, &record(i))?;
    }
    let n1000 = nonce(1999);
    let ev1000 = rt.block_on(l.evidence(&ids[0], expected(0), &n1000))?;
    let (verify1000, events1000) = verifier_rate(&ev1000, &n1000, &trust, &policy0, 2.0)?;

    // A host with 100,000 events of history (launched and stopped zones):
    // the evidence starts at the latest checkpoint.
    let total = l.snapshot()?.events;
    let mut i = 1000usize;
    let mut history = total;
    while history < 100_000 {
        let mut events = Vec::with_capacity(2000);
        for _ in 0..1000 {
            let r = record(i);
            events.push(Event::zone(15, TAG_ZONE_LAUNCH, &r.launch_id, &r.encode()));
            let stop = StopRecord { version: RECORD_VERSION, zone: r.zone.clone(), launch_id: r.launch_id.clone(), reason: "stopped".into(), stopped_unix_ms: 1 };
            events.push(Event::zone(15, TAG_ZONE_STOP, &r.launch_id, &stop.encode()));
            i += 1;
        }
        l.record_bulk(events)?;
        history = l.snapshot()?.events;
    }
    let n_hist = nonce(2999);
    let ev_hist = rt.block_on(l.evidence(&ids[0], expected(0), &n_hist))?;
    let (verify_hist, events_hist) = verifier_rate(&ev_hist, &n_hist, &trust, &policy0, 2.0)?;
    drop(l);

    let peer = if args.peer_runs > 0 { Some(sorted_ms(peer_tpm2_quote(args.peer_runs)?)) } else { None };

    // The SPIRE server plugin: sequential and PLUGIN_CONCURRENCY concurrent attestations.
    let l = ledger(dir, port, 256, 0)?;
    let plugin = spire::Plugin::start(dir, rt)?;
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, Policy::admitting(&record(0)).to_toml())?;
    plugin.configure(rt, &format!("trusted_hosts = [\"bench-host={}\"]", hex::encode(ak)), &policy_file)?;
    let plugin_seq = plugin.rate(rt, &l, &ids[0], 1, 3.0)?;
    let plugin_conc = plugin.rate(rt, &l, &ids[0], PLUGIN_CONCURRENCY, 3.0)?;
    // EK trust: the embedded swtpm's local CA as the manufacturer, an activation per attestation.
    let ca = dir.join("swtpm/localca");
    let mut bundle = std::fs::read(ca.join("swtpm-localca-rootca-cert.pem"))?;
    bundle.extend(std::fs::read(ca.join("issuercert.pem"))?);
    let bundle_path = dir.join("ek-ca.pem");
    std::fs::write(&bundle_path, bundle)?;
    plugin.configure(rt, &format!("endorsement_ca_path = \"{}\"", bundle_path.display()), &policy_file)?;
    let plugin_ek_seq = plugin.rate(rt, &l, &ids[0], 1, 3.0)?;
    let plugin_ek_conc = plugin.rate(rt, &l, &ids[0], PLUGIN_CONCURRENCY, 3.0)?;
    drop(plugin);
    drop(l);

    println!("| measurement | figure |");
    println!("|---|---|");
    println!("| evidence latency, 1 request at a time (ledger → swtpm quote → encoded evidence), {} runs | p50 {:.1} ms, p99 {:.1} ms |", lat.len(), percentile(&lat, 50.0), percentile(&lat, 99.0));
    if let Some(p) = &peer {
        println!("| peer: `tpm2_quote` on its own swtpm (process per quote), {} runs | p50 {:.1} ms, p99 {:.1} ms |", p.len(), percentile(p, 50.0), percentile(p, 99.0));
    }
    for c in &conc {
        println!(
            "| {} concurrent requests, quote +{} ms, {} | {:.0} requests/s ({} quotes, {:.2} s) |",
            args.concurrency,
            c["quote_delay_ms"],
            if c["max_batch"] == 1 { "one quote per request".to_owned() } else { "batched".to_owned() },
            c["requests_per_s"].as_f64().unwrap_or(f64::NAN),
            c["quotes"],
            c["wall_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("| verifier, fresh host (evidence with {events10} events, {} bytes), 1 core | {verify10:.0} verifications/s |", ev10.len());
    println!("| verifier, host with 1,000 events of history (evidence with {events1000} events after its checkpoint, {} bytes), 1 core | {verify1000:.0} verifications/s |", ev1000.len());
    println!("| verifier, host with {history} events of history (evidence with {events_hist} events after its checkpoint, {} bytes), 1 core | {verify_hist:.0} verifications/s |", ev_hist.len());
    let p = |r: spire::Rate| format!("{:.0} attestations/s (plugin CPU {:.0} µs each)", r.per_s, r.plugin_cpu_us);
    println!("| SPIRE server plugin: payload → nonce → fresh evidence → verified agent ID, 1 at a time | {} |", p(plugin_seq));
    println!("| SPIRE server plugin, {PLUGIN_CONCURRENCY} concurrent attestations (evidence batched) | {} |", p(plugin_conc));
    println!("| SPIRE server plugin with EK trust (EK certificate check, MakeCredential, TPM activation), 1 at a time | {} |", p(plugin_ek_seq));
    println!("| SPIRE server plugin with EK trust, {PLUGIN_CONCURRENCY} concurrent attestations | {} |", p(plugin_ek_conc));
    let summary = json!({
        "latency_ms": {"p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0), "runs": lat.len()},
        "peer_tpm2_quote_ms": peer.as_ref().map(|p| json!({"p50": percentile(p, 50.0), "p99": percentile(p, 99.0), "runs": p.len()})),
        "concurrent": conc,
        "spire_plugin": {
            "concurrency": PLUGIN_CONCURRENCY,
            "per_s": {"sequential": plugin_seq.per_s, "concurrent": plugin_conc.per_s, "ek_sequential": plugin_ek_seq.per_s, "ek_concurrent": plugin_ek_conc.per_s},
            "plugin_cpu_us": {"sequential": plugin_seq.plugin_cpu_us, "concurrent": plugin_conc.plugin_cpu_us, "ek_sequential": plugin_ek_seq.plugin_cpu_us, "ek_concurrent": plugin_ek_conc.plugin_cpu_us},
        },
        "verifier": [
            {"history": 10, "events": events10, "per_s": verify10, "evidence_bytes": ev10.len()},
            {"history": 1000, "events": events1000, "per_s": verify1000, "evidence_bytes": ev1000.len()},
            {"history": history, "events": events_hist, "per_s": verify_hist, "evidence_bytes": ev_hist.len()},
        ],
    });
    println!("{summary}");
    Ok(())
}

/// The SPIRE server plugin driven as spire-server drives it.
mod spire {
    use std::path::Path;
    use std::process::{Child, Stdio};
    use std::time::Instant;

    use anyhow::{Context, bail};
    use host_attest::Ledger;
    use spire_plugin::proto::config::config_client::ConfigClient;
    use spire_plugin::proto::config::{ConfigureRequest, CoreConfiguration};
    use spire_plugin::proto::server_nodeattestor::node_attestor_client::NodeAttestorClient;
    use spire_plugin::proto::server_nodeattestor::{AttestRequest, attest_request, attest_response};
    use tonic::transport::Channel;

    use attestation_proto::spire::{ChallengeResponse, HostKeys, ServerChallenge};
    use prost::Message;

    /// Attestation rate and the plugin's CPU cost per attestation.
    #[derive(Debug, Clone, Copy)]
    pub struct Rate {
        /// Attestations per second, end to end (evidence included).
        pub per_s: f64,
        /// The plugin process's CPU microseconds per attestation.
        pub plugin_cpu_us: f64,
    }

    /// A running plugin process and a connection to it.
    pub struct Plugin {
        child: Child,
        channel: Channel,
    }

    impl Drop for Plugin {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Plugin {
        /// Starts the static plugin binary next to this program's build.
        pub fn start(dir: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<Self> {
            let bin = std::env::var_os("ZONE_ATTESTOR_SERVER")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "target/x86_64-unknown-linux-gnu/release/zone-attestor-server".into());
            let p = zone_tests::plugin::start(&bin, dir, Stdio::null(), rt)
                .with_context(|| format!("{} (scripts/build.sh builds it; or set ZONE_ATTESTOR_SERVER)", bin.display()))?;
            Ok(Self { child: p.child, channel: p.channel })
        }

        /// Configures the plugin with `trust` (HCL lines) and the policy file.
        pub fn configure(&self, rt: &tokio::runtime::Runtime, trust: &str, policy: &Path) -> anyhow::Result<()> {
            let req = ConfigureRequest {
                core_configuration: Some(CoreConfiguration { trust_domain: "example.org".into() }),
                hcl_configuration: format!("{trust}\npolicy_path = \"{}\"", policy.display()),
            };
            rt.block_on(ConfigClient::new(self.channel.clone()).configure(req))?;
            Ok(())
        }

        async fn attest_once(channel: Channel, ledger: Ledger, launch_id: String) -> anyhow::Result<()> {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let msg = |r| AttestRequest { request: Some(r) };
            let k = ledger.keys();
            let keys = HostKeys {
                ak_public: k.ak_public.clone(),
                ek_public: k.ek_public.clone(),
                ek_certificate: k.ek_certificate.clone().unwrap_or_default(),
                ek_chain: k.ek_chain.clone(),
            };
            tx.send(msg(attest_request::Request::Payload(spire_plugin::agent::payload_with(Some(keys))))).await?;
            let mut replies = NodeAttestorClient::new(channel).attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            let Some(attest_response::Response::Challenge(c)) = replies.message().await?.and_then(|r| r.response) else {
                bail!("no challenge");
            };
            let c = ServerChallenge::decode(c.as_slice())?;
            // As the daemon does for a zone: the activation, then the evidence.
            let activated_secret = match &c.activation {
                Some(a) => ledger.activate(&a.id_object, &a.encrypted_secret).await?,
                None => Vec::new(),
            };
            let evidence = ledger.evidence(&launch_id, super::expected(0), &c.nonce).await?;
            let answer = ChallengeResponse { evidence, activated_secret }.encode_to_vec();
            tx.send(msg(attest_request::Request::ChallengeResponse(answer))).await?;
            // As spire-server does: close our half, then read the reply to its end
            // (a stream dropped early is reset, and h2 limits resets per connection).
            drop(tx);
            let admitted = replies.message().await?.and_then(|r| r.response);
            while replies.message().await?.is_some() {}
            match admitted {
                Some(attest_response::Response::AgentAttributes(_)) => Ok(()),
                other => bail!("attestation not admitted: {other:?}"),
            }
        }

        /// Attestations per second with `concurrency` in flight for `secs`
        /// seconds (each finished one is followed at once by the next, as
        /// a busy server sees them, not in batches that wait for their
        /// slowest), and the plugin process's CPU time per attestation.
        pub fn rate(&self, rt: &tokio::runtime::Runtime, ledger: &Ledger, launch_id: &str, concurrency: usize, secs: f64) -> anyhow::Result<Rate> {
            let cpu_before = self.cpu_seconds()?;
            let start = Instant::now();
            let deadline = start + std::time::Duration::from_secs_f64(secs);
            let done = rt.block_on(async {
                let tasks: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let (channel, ledger, launch_id) = (self.channel.clone(), ledger.clone(), launch_id.to_owned());
                        tokio::spawn(async move {
                            let mut n = 0usize;
                            while Instant::now() < deadline {
                                Self::attest_once(channel.clone(), ledger.clone(), launch_id.clone()).await?;
                                n += 1;
                            }
                            anyhow::Ok(n)
                        })
                    })
                    .collect();
                let mut done = 0usize;
                for t in tasks {
                    done += t.await??;
                }
                anyhow::Ok(done)
            })?;
            let wall = start.elapsed().as_secs_f64();
            let cpu = self.cpu_seconds()? - cpu_before;
            Ok(Rate { per_s: done as f64 / wall, plugin_cpu_us: cpu * 1e6 / done as f64 })
        }

        /// User + system CPU seconds the plugin process has used.
        fn cpu_seconds(&self) -> anyhow::Result<f64> {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
            // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11).context("no utime")?.parse::<f64>()? + f.get(12).context("no stime")?.parse::<f64>()?;
            // SAFETY: sysconf has no memory-safety preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            Ok(ticks / hz)
        }
    }
}
