//! A registry token service (Docker's token authentication protocol, the one
//! Docker Hub and `docker-registry`'s `auth: token` speak) for the pull
//! tests: `GET /token?service=…&scope=repository:NAME:ACTIONS` with HTTP
//! basic credentials answers a JWT (ES256, its certificate in `x5c`) that
//! grants the scopes asked for; wrong or missing credentials get 401. The
//! registry checks the JWT against the certificate it is configured with.
//! The signing key and certificate are made with `openssl`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;

/// The JWT issuer and the registry's service name.
pub const ISSUER: &str = "zone-test-token-issuer";
/// The service name the registry announces in its challenge.
pub const SERVICE: &str = "zone-test-registry";

/// A running token service.
#[derive(Debug)]
pub struct TokenService {
    /// Where it listens.
    pub port: u16,
    /// Its certificate (PEM), for the registry's `rootcertbundle`.
    pub cert: PathBuf,
    /// Tokens issued.
    pub issued: Arc<AtomicUsize>,
    /// Requests refused (no or wrong credentials).
    pub refused: Arc<AtomicUsize>,
}

impl TokenService {
    /// Starts the service in `dir` for one user.
    pub fn start(dir: &Path, user: &str, password: &str) -> Self {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj"])
            .arg(format!("/CN={ISSUER}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (scripts/setup.sh installs it)");
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        let signing = p256::ecdsa::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let pem = std::fs::read_to_string(&cert).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (i, r) = (issued.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = serve(conn, &basic, &signing, &der, &i, &r);
            }
        });
        Self { port, cert, issued, refused }
    }

    /// The realm URL for the registry's configuration.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

fn serve(
    conn: TcpStream,
    basic: &str,
    key: &p256::ecdsa::SigningKey,
    der: &[u8],
    issued: &AtomicUsize,
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == basic {
                authorized = true;
            }
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(|s| s.replace("%3A", ":").replace("%3a", ":").replace("%2C", ",").replace("%2c", ",").replace("%2F", "/").replace("%2f", "/"))
        .collect();
    let (status, body) = if authorized {
        issued.fetch_add(1, Ordering::SeqCst);
        let token = jwt(key, der, &scopes);
        ("200 OK", serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string())
    } else {
        refused.fetch_add(1, Ordering::SeqCst);
        ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_owned())
    };
    let mut conn = conn;
    write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// A JWT granting `scopes` (`repository:NAME:ACTIONS`).
fn jwt(key: &p256::ecdsa::SigningKey, der: &[u8], scopes: &[String]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
        })
        .collect();
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(der)] });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "zone-test", "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}
