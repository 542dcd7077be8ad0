//! A real CNCF distribution registry (`docker-registry` from Debian) on a free loopback
//! port with a temporary storage directory, stopped on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA certificate (the registry's self-signed one) when it speaks TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// The token server, for a registry with `auth: token`.
    pub token: Option<super::token::TokenServer>,
    _dir: tempfile::TempDir,
}

/// How a test registry is set up.
enum Mode<'a> {
    Open,
    ReadOnly,
    /// htpasswd basic auth over TLS.
    Basic(&'a str, &'a str),
    /// Bearer tokens from a token server of the tests' own.
    Token(&'a str, &'a str),
    /// The same over TLS, while the token server speaks plain HTTP (a challenge that
    /// would have credentials sent in clear text).
    TokenTls(&'a str, &'a str),
    /// A pull-through cache of the registry at this address (`proxy:` mode).
    Proxy(&'a str),
}

impl TestRegistry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub fn start() -> TestRegistry {
        Self::launch(Mode::Open)
    }

    /// Starts a registry in read-only maintenance mode (pulls work, pushes get 405).
    pub fn start_read_only() -> TestRegistry {
        Self::launch(Mode::ReadOnly)
    }

    /// Starts a registry that wants Bearer tokens (`auth: token`), from a token server
    /// that knows one user.
    pub fn start_token(user: &str, password: &str) -> TestRegistry {
        Self::launch(Mode::Token(user, password))
    }

    /// Starts a pull-through cache (distribution's `proxy:` mode) of `upstream`
    /// (`127.0.0.1:PORT`).
    pub fn start_proxy(upstream: &str) -> TestRegistry {
        Self::launch(Mode::Proxy(upstream))
    }

    /// Starts a TLS registry that wants Bearer tokens from a plain-HTTP token server.
    pub fn start_token_tls(user: &str, password: &str) -> TestRegistry {
        Self::launch(Mode::TokenTls(user, password))
    }

    /// Starts a registry with htpasswd basic auth (one user) over TLS with a
    /// certificate generated for 127.0.0.1.
    pub fn start_secure(user: &str, password: &str) -> TestRegistry {
        Self::launch(Mode::Basic(user, password))
    }

    fn launch(mode: Mode<'_>) -> TestRegistry {
        let bin = which("docker-registry").expect(
            "docker-registry is not installed (apt-get install docker-registry; .ci/run does)",
        );
        let dir = tempfile::Builder::new()
            .prefix("envoci-registry-")
            .tempdir()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut token = None;
        if let Mode::Token(user, password) | Mode::TokenTls(user, password) = mode {
            let server = super::token::TokenServer::start(dir.path(), user, password);
            config.push_str(&format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                server.addr,
                super::token::SERVICE,
                super::token::ISSUER,
                server.cert.display()
            ));
            token = Some(server);
        }
        if let Mode::Proxy(upstream) = mode {
            config.push_str(&format!("proxy:\n  remoteurl: http://{upstream}\n"));
        }
        if matches!(mode, Mode::ReadOnly) {
            config = config.replace(
                "  delete:\n    enabled: true\n",
                "  maintenance:\n    readonly:\n      enabled: true\n",
            );
        }
        let mut ca_file = None;
        if let Mode::TokenTls(..) = mode {
            let (ca, cert, key) = tls_files(dir.path());
            // Under `http:`, before the `auth:` section the token mode added.
            let addr_line = format!("  addr: {addr}\n");
            let tls = format!(
                "{addr_line}  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            config = config.replace(&addr_line, &tls);
            ca_file = Some(ca);
        }
        if let Mode::Basic(user, password) = mode {
            let (ca, cert, key) = tls_files(dir.path());
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: envoci-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
            ca_file = Some(ca);
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let tls = ca_file.is_some();
        let registry = TestRegistry {
            child,
            addr,
            ca_file,
            token,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ready = if tls {
                TcpStream::connect(&registry.addr).is_ok()
            } else {
                registry.get_status("/v2/").is_some()
            };
            if ready {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer on {}", registry.addr);
    }

    /// A reference in this registry: `127.0.0.1:PORT/REPO:TAG`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// The requests the registry answered so far, as `METHOD PATH USER-AGENT` (from
    /// its access log, in order).
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read(self._dir.path().join("access.log")).unwrap_or_default();
        String::from_utf8_lossy(&log)
            .lines()
            .filter_map(|line| {
                // Combined log format: … "GET /v2/ HTTP/1.1" 200 2 "referer" "agent"
                let mut quoted = line.split('"').skip(1).step_by(2);
                let request = quoted.next()?;
                let agent = quoted.nth(1).unwrap_or("");
                let mut parts = request.split(' ');
                let (method, path) = (parts.next()?, parts.next()?);
                path.starts_with("/v2/")
                    .then(|| format!("{method} {path} {agent}"))
            })
            .collect()
    }

    /// The file holding blob `hex` in the registry's storage (distribution's
    /// filesystem driver), to damage it behind the registry's back.
    pub fn blob_data(&self, hex: &str) -> std::path::PathBuf {
        self.blob_root().join(&hex[..2]).join(hex).join("data")
    }

    /// The registry's own blob store (committed blobs; uploads live elsewhere).
    pub fn blob_root(&self) -> std::path::PathBuf {
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
    }

    /// The HTTP status of a GET, or None if the registry is not answering.
    pub fn get_status(&self, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A CA and a server certificate for 127.0.0.1 it signs (rustls refuses a CA
/// certificate used as the server's own), made with the real `openssl` in `d`:
/// (CA, certificate, key).
fn tls_files(d: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=envoci test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is needed to make the test registry's certificate");
        assert!(status.success(), "openssl {args:?} failed");
    }
    (ca, cert, key)
}
