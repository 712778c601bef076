//! `svid-tls`: mutual TLS between zone workloads with their X.509-SVIDs, as
//! one static binary that runs in SPIRE zones (the zone network's end-to-end
//! identity test). It reads the files `spire-agent api fetch x509 -write DIR`
//! writes (`svid.0.pem`: the SVID and its intermediates, `svid.0.key`: its
//! PKCS#8 key, `bundle.0.pem`: the trust domain's roots) and prints
//! `SVID-TLS key=value` lines on stdout.
//!
//! ```text
//! svid-tls serve PORT DIR PEER_ID         accept connections on 0.0.0.0:PORT (forever): TLS 1.3 with
//!                                         DIR's SVID, a client certificate required, chained to DIR's
//!                                         bundle and naming PEER_ID; listening=PORT, then per connection
//!                                         accepted=<peer id> (and it answers `hello <peer id>`) or
//!                                         refused=<reason>
//! svid-tls connect ADDR:PORT DIR PEER_ID  connect (retrying for 60 s), TLS 1.3 with DIR's SVID as the
//!                                         client certificate; the server must chain to DIR's bundle and
//!                                         be PEER_ID; ok=<server id> said=<its line> (exit 0) or
//!                                         failed=<reason> (exit 1)
//! svid-tls forge ADDR:PORT CLAIM_ID       what a zone without an identity can try: a handshake with no
//!                                         client certificate, then one with a self-signed certificate
//!                                         claiming CLAIM_ID (the server unchecked);
//!                                         anonymous=<outcome>, forged=<outcome>, each `refused:<reason>`
//!                                         or `accepted:<the server's line>`
//! ```
//!
//! A SPIFFE ID is the one URI SAN of the peer's leaf certificate; no DNS name
//! is checked (SVIDs carry none). Addresses are numeric.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// Socket timeouts: a peer that stops answering fails the exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `connect` retries a refused TCP connection (the server zone may still be starting).
const CONNECT_RETRY: Duration = Duration::from_secs(60);

fn out(key: &str, value: impl std::fmt::Display) {
    println!("SVID-TLS {key}={value}");
    let _ = std::io::stdout().flush();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An SVID and its trust bundle, as `spire-agent api fetch x509 -write` left them.
struct Svid {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Svid {
    fn load(dir: &Path) -> anyhow::Result<Self> {
        let pem_certs = |name: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            let path = dir.join(name);
            let certs = CertificateDer::pem_file_iter(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not PEM certificates", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
            Ok(certs)
        };
        let chain = pem_certs("svid.0.pem")?;
        let key_path = dir.join("svid.0.key");
        let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| format!("cannot read the key {}", key_path.display()))?;
        let mut roots = RootCertStore::empty();
        for c in pem_certs("bundle.0.pem")? {
            roots.add(c).context("a bundle certificate is not a usable trust anchor")?;
        }
        Ok(Self { chain, key, roots: Arc::new(roots) })
    }
}

/// The SPIFFE ID of a leaf certificate: its one URI SAN.
fn spiffe_id(cert: &CertificateDer<'_>) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, c) = X509Certificate::from_der(cert.as_ref()).map_err(|e| format!("the certificate does not parse: {e}"))?;
    let san = c.subject_alternative_name().map_err(|e| format!("its subjectAltName does not parse: {e}"))?;
    let uris: Vec<&str> = san
        .map(|s| s.value.general_names.iter().filter_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None }).collect())
        .unwrap_or_default();
    match uris.as_slice() {
        [one] if one.starts_with("spiffe://") => Ok((*one).to_owned()),
        _ => Err(format!("the certificate has {} URI SANs ({uris:?}), not one SPIFFE ID", uris.len())),
    }
}

fn check_id(cert: &CertificateDer<'_>, want: &str) -> Result<(), rustls::Error> {
    match spiffe_id(cert) {
        Ok(id) if id == want => Ok(()),
        Ok(id) => Err(rustls::Error::General(format!("the peer is {id}, not {want}"))),
        Err(e) => Err(rustls::Error::General(e)),
    }
}

/// The client's check of the server: chained to the bundle (for server
/// authentication) and naming the expected SPIFFE ID.
#[derive(Debug)]
struct ServerIsSpiffeId {
    roots: Arc<RootCertStore>,
    want: String,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerIsSpiffeId {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algs.all)?;
        check_id(end_entity, &self.want)?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.algs)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The attacker's client: it accepts any server.
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The server's check of the client: rustls' WebPKI client verifier (chained
/// to the bundle, for client authentication, a certificate required), then
/// the expected SPIFFE ID.
#[derive(Debug)]
struct ClientIsSpiffeId {
    inner: Arc<dyn ClientCertVerifier>,
    want: String,
}

impl ClientCertVerifier for ClientIsSpiffeId {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        check_id(end_entity, &self.want)?;
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn tcp(stream: &TcpStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(())
}

/// One accepted connection: the handshake, then `hello <peer>`.
fn serve_one(config: Arc<rustls::ServerConfig>, mut stream: TcpStream) -> Result<String, String> {
    tcp(&stream).map_err(|e| e.to_string())?;
    let mut conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream).map_err(|e| e.to_string())?;
    }
    let peer = conn.peer_certificates().and_then(|c| c.first()).ok_or("the client sent no certificate")?;
    let id = spiffe_id(peer)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut stream);
    tls.write_all(format!("hello {id}\n").as_bytes()).map_err(|e| e.to_string())?;
    tls.conn.send_close_notify();
    tls.flush().map_err(|e| e.to_string())?;
    Ok(id)
}

fn serve(port: u16, dir: &Path, peer: &str) -> anyhow::Result<i32> {
    let svid = Svid::load(dir)?;
    let inner = WebPkiClientVerifier::builder_with_provider(svid.roots.clone(), provider()).build().context("the client verifier")?;
    let verifier = Arc::new(ClientIsSpiffeId { inner, want: peer.to_owned() });
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(svid.chain, svid.key)
        .context("the SVID and its key do not go together")?;
    let config = Arc::new(config);
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("cannot listen on port {port}"))?;
    out("listening", port);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        match serve_one(config.clone(), stream) {
            Ok(id) => out("accepted", id),
            Err(e) => out("refused", e),
        }
    }
    Ok(0)
}

/// A TCP connection to `addr`, retried while refused for `retry`.
fn dial(addr: &str, retry: Duration) -> anyhow::Result<TcpStream> {
    let target: std::net::SocketAddr = addr.parse().with_context(|| format!("{addr} is not ADDRESS:PORT (numeric)"))?;
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&target, IO_TIMEOUT) {
            Ok(s) => {
                tcp(&s)?;
                return Ok(s);
            }
            Err(e) if start.elapsed() < retry => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {addr} for {} s", retry.as_secs())),
        }
    }
}

/// One exchange as a client: the handshake, then the server's line (which a
/// server that refuses the client's certificate answers with an alert).
fn exchange(config: rustls::ClientConfig, addr: &str, retry: Duration) -> Result<(Option<String>, String), String> {
    let mut stream = dial(addr, retry).map_err(|e| format!("{e:#}"))?;
    // SVIDs carry no DNS name; the verifier checks the SPIFFE ID instead.
    let name = ServerName::try_from("svid.invalid").map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut stream);
    let mut line = String::new();
    BufReader::new(&mut tls).read_line(&mut line).map_err(|e| e.to_string())?;
    if line.is_empty() {
        // Drain, to surface an alert that came with the close.
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        return Err("the server closed the connection without a word".into());
    }
    let server = conn.peer_certificates().and_then(|c| c.first()).map(spiffe_id).transpose()?;
    Ok((server, line.trim_end().to_owned()))
}

fn connect(addr: &str, dir: &Path, peer: &str) -> anyhow::Result<i32> {
    let svid = Svid::load(dir)?;
    let verifier = Arc::new(ServerIsSpiffeId {
        roots: svid.roots.clone(),
        want: peer.to_owned(),
        algs: provider().signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(svid.chain, svid.key)
        .context("the SVID and its key do not go together")?;
    match exchange(config, addr, CONNECT_RETRY) {
        Ok((server, said)) => {
            out("ok", server.unwrap_or_default());
            out("said", said);
            Ok(0)
        }
        Err(e) => {
            out("failed", e);
            Ok(1)
        }
    }
}

/// A self-signed certificate claiming `id`, and its key.
fn forged(id: &str) -> anyhow::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(id)?)];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth, rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    Ok((cert.der().clone(), key))
}

fn outcome(r: Result<(Option<String>, String), String>) -> String {
    match r {
        Ok((_, said)) => format!("accepted:{said}"),
        Err(e) => format!("refused:{e}"),
    }
}

fn forge(addr: &str, claim: &str) -> anyhow::Result<i32> {
    let any = || {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map(|b| b.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider().signature_verification_algorithms))))
    };
    out("anonymous", outcome(exchange(any()?.with_no_client_auth(), addr, CONNECT_RETRY)));
    let (cert, key) = forged(claim)?;
    out("forged", outcome(exchange(any()?.with_client_auth_cert(vec![cert], key)?, addr, CONNECT_RETRY)));
    Ok(0)
}

fn usage() -> anyhow::Result<i32> {
    eprintln!("usage: svid-tls serve PORT DIR PEER_ID | connect ADDR:PORT DIR PEER_ID | forge ADDR:PORT CLAIM_ID");
    Ok(2)
}

fn run() -> anyhow::Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["serve", port, dir, peer] => serve(port.parse().context("PORT is not a port number")?, Path::new(dir), peer),
        ["connect", addr, dir, peer] => connect(addr, Path::new(dir), peer),
        ["forge", addr, claim] => forge(addr, claim),
        _ => usage(),
    }
}

fn main() {
    let code = run().unwrap_or_else(|e| {
        out("error", format!("{e:#}"));
        eprintln!("svid-tls: {e:#}");
        1
    });
    std::process::exit(code);
}
