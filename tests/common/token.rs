//! A Docker token server of the tests' own, for a real CNCF distribution configured with
//! `auth: token`: it checks Basic credentials and answers with an RS256 JWT (signed by
//! the real `openssl` CLI, certificate in the `x5c` header) granting the scopes asked
//! for. Anonymous requests get a token with no access, as real token servers do.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;

/// The `service` the registry and the tokens name.
pub const SERVICE: &str = "envoci-test";
/// The tokens' issuer.
pub const ISSUER: &str = "envoci-test-issuer";
/// The identity (refresh) token the server accepts in its OAuth2 form (`POST`).
pub const IDENTITY_TOKEN: &str = "envoci-test-identity-token";

/// A running token server.
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The certificate the registry trusts (`rootcertbundle`).
    pub cert: PathBuf,
    issued: Arc<AtomicUsize>,
    lifetime: Arc<AtomicU64>,
}

impl TokenServer {
    /// Makes a signing key and certificate in `dir` and serves tokens for `user`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let (key, cert) = (dir.join("token.key"), dir.join("token.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=envoci token issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl signs the test tokens");
        assert!(status.success());
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = Arc::new(AtomicUsize::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let lifetime = Arc::new(AtomicU64::new(300));
        let (count, user, life) = (issued.clone(), user.to_string(), lifetime.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let life = life.load(Ordering::SeqCst);
                let _ = serve(stream, &expected, &user, &der_b64, &key, &count, life);
            }
        });
        TokenServer {
            addr,
            cert,
            issued,
            lifetime,
        }
    }

    /// Makes the answers say tokens live `seconds` (`expires_in`); the tokens
    /// themselves stay valid for five minutes, so only a client that honours
    /// `expires_in` asks again.
    pub fn set_lifetime(&self, seconds: u64) {
        self.lifetime.store(seconds, Ordering::SeqCst);
    }

    /// Tokens granting some access issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

fn serve(
    mut stream: TcpStream,
    expected: &str,
    user: &str,
    x5c: &str,
    key: &Path,
    issued: &AtomicUsize,
    lifetime: u64,
) -> std::io::Result<()> {
    let head = super::proxy::read_head(&mut stream)?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let authorization = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_string())
    });
    let respond = |stream: &mut TcpStream, status: &str, body: &str| {
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let refused = r#"{"details":"bad credentials"}"#;
    let access = if head.starts_with("POST ") {
        // OAuth2: grant_type=refresh_token&refresh_token=…&scope=… in the body.
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body)?;
        let form = String::from_utf8_lossy(&body).into_owned();
        let field = |name: &str| {
            form.split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .map(decode)
        };
        if field("grant_type").as_deref() != Some("refresh_token")
            || field("refresh_token").as_deref() != Some(IDENTITY_TOKEN)
        {
            return respond(&mut stream, "401 Unauthorized", refused);
        }
        scopes(&format!(
            "/token?scope={}",
            field("scope").unwrap_or_default()
        ))
    } else {
        match authorization.as_deref() {
            None => Vec::new(), // anonymous: a token that grants nothing
            Some(a) if a == expected => scopes(target),
            Some(_) => return respond(&mut stream, "401 Unauthorized", refused),
        }
    };
    if !access.is_empty() {
        issued.fetch_add(1, Ordering::SeqCst);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": if authorization.is_some() { user } else { "" },
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now - 10,
        "jti": format!("{now}-{}", issued.load(Ordering::SeqCst)),
        "access": access,
    });
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl
        .stdin
        .take()
        .expect("piped")
        .write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", b64(&signature));
    let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": lifetime });
    respond(&mut stream, "200 OK", &body.to_string())
}

/// Percent-decoding of a form or query value.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `access` claim for every `scope=repository:NAME:ACTIONS` of the request.
fn scopes(target: &str) -> Vec<serde_json::Value> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .flat_map(|scope| {
            let scope = decode(scope);
            scope
                .split(' ')
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({
                        "type": kind,
                        "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
