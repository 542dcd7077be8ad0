//! What a user sees when the registry is not there, not a registry, speaks the other
//! protocol, or stays silent: one message naming the host and the cause, and the
//! documented exit code. Every server here is real and on loopback.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::envoci::{exit, Envoci};
use common::registry::TestRegistry;

/// A process serving on a loopback port, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// `python3 -m http.server`: a plain web server, not a registry.
    fn web() -> Server {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        Self::ready(child, port)
    }

    /// A socket that accepts connections and never says a word.
    fn silent() -> Server {
        let port = free_port();
        let script = format!(
            "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen(64)\nconns=[]\nwhile True:\n    c,_=s.accept(); conns.append(c)\n"
        );
        Self::python(&script, port)
    }

    /// A server of the test's own that answers `GET /v2/` as a registry does and every
    /// manifest request with `size` bytes of JSON-looking junk.
    fn huge_manifests(size: usize) -> Server {
        let port = free_port();
        let script = format!(
            r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers(); return
        body = b"{{" + b" " * ({size} - 2) + b"}}"
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#
        );
        Self::python(&script, port)
    }

    /// A token service of the test's own whose answers are `size` bytes of a token
    /// that never ends, behind a registry front (`GET /v2/` answers 401 with a Bearer
    /// challenge naming it). How many bytes it managed to send is written to `sent`.
    fn endless_tokens(size: usize, sent: &std::path::Path) -> Server {
        let port = free_port();
        let script = format!(
            r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="http://127.0.0.1:{port}/token",service="hostile"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str({size}))
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(b'{{"token":"')
            while sent < {size}:
                self.wfile.write(b"a" * 65536)
                sent += 65536
        except OSError:
            pass
        with open({sent:?}, "w") as f:
            f.write(str(sent))
http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#
        );
        Self::python(&script, port)
    }

    /// Runs a server script of the test's own, listening on `port`.
    fn python(script: &str, port: u16) -> Server {
        let child = Command::new("python3")
            .args(["-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        Self::ready(child, port)
    }

    fn ready(child: Child, port: u16) -> Server {
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "server on {addr} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_closed_port_is_unreachable_not_an_authentication_failure() {
    let t = Envoci::new();
    let addr = format!("127.0.0.1:{}", free_port()); // bound and released: nothing listens
    let err = t.fail_as(exit::NETWORK, &["pull", &format!("{addr}/envs/x:y")]);
    assert!(
        err.contains(&addr) && err.contains("connection refused") && err.contains("running"),
        "{err}"
    );
    assert!(!err.contains("authentication"), "{err}");
}

#[test]
fn a_plain_web_server_is_not_a_registry_on_pull_nor_on_push() {
    let web = Server::web();
    let t = Envoci::new();
    let reference = format!("{}/envs/x:y", web.addr);
    let err = t.fail_as(exit::OTHER, &["pull", &reference]);
    assert!(
        err.contains(&web.addr) && err.contains("not an OCI registry") && err.contains("404"),
        "{err}"
    );
    assert!(
        !err.contains("not found: the registry has no such"),
        "{err}"
    );

    let prefix = t.dir().join("env");
    common::install_env(&prefix, &["reloc-text"]);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let err = t.fail_as(exit::OTHER, &["push", "x", &reference]);
    assert!(err.contains("not an OCI registry"), "{err}");
    let lower = err.to_lowercase();
    assert!(
        !lower.contains("<html") && !lower.contains("<!doctype") && err.len() < 600,
        "the page is summarised, not dumped: {err}"
    );
}

#[test]
fn plain_http_to_a_tls_registry_says_to_use_its_ca() {
    let registry = TestRegistry::start_secure("robot", "s3cret");
    let t = Envoci::new();
    // Loopback without --ca-file means plain HTTP.
    let err = t.fail_as(exit::OTHER, &["pull", &registry.reference("envs/x:y")]);
    assert!(
        err.contains("not an OCI registry") && err.contains("400") && err.contains("--ca-file"),
        "{err}"
    );
}

#[test]
fn tls_to_a_plain_http_registry_is_a_failed_handshake() {
    let secure = TestRegistry::start_secure("robot", "s3cret");
    let plain = TestRegistry::start();
    let ca = secure.ca_file.clone().unwrap();
    let t = Envoci::new();
    let err = t.fail_as(
        exit::NETWORK,
        &[
            "pull",
            &plain.reference("envs/x:y"),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(&plain.addr) && err.contains("TLS handshake failed"),
        "{err}"
    );
}

#[test]
fn a_silent_server_times_out_and_says_after_how_long() {
    let silent = Server::silent();
    let t = Envoci::new();
    let err = t.fail_as(
        exit::NETWORK,
        &[
            "pull",
            &format!("{}/envs/x:y", silent.addr),
            "--timeout",
            "1",
            "--retries",
            "0",
        ],
    );
    assert!(
        err.contains(&silent.addr) && err.contains("timed out") && err.contains("1 s"),
        "{err}"
    );
    assert!(err.contains("--timeout"), "the fix is named: {err}");
}

#[test]
fn json_errors_carry_their_kind_and_exit_code() {
    let registry = TestRegistry::start();
    let t = Envoci::new();
    let out = t.run(&["--json", "pull", &registry.reference("envs/nothing:here")]);
    assert_eq!(out.status.code(), Some(exit::NOT_FOUND));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(err["kind"], "not-found", "{err}");
    assert_eq!(err["exitCode"], exit::NOT_FOUND, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("envs/nothing"),
        "{err}"
    );
}

#[test]
fn restore_from_a_spec_does_not_build_when_the_registry_is_unreachable() {
    let t = Envoci::new();
    let spec = t.dir().join("conda.yaml");
    std::fs::write(
        &spec,
        format!(
            "channels: [{}]\ndependencies: [reloc-text]\n",
            common::channel().dir.display()
        ),
    )
    .unwrap();
    let target = t.dir().join("env");
    // An unreachable --from is an error, not a reason to build.
    let closed = format!("127.0.0.1:{}/envs/ci", free_port());
    let err = t.fail_as(
        exit::NETWORK,
        &[
            "restore",
            spec.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--from",
            &closed,
        ],
    );
    assert!(err.contains("connection refused"), "{err}");
    assert!(t.has_no_environments(), "nothing was built");
}

#[test]
fn a_manifest_beyond_the_spec_limit_is_refused_unread() {
    let server = Server::huge_manifests(100 << 20);
    let t = Envoci::new();
    let err = t.fail_as(
        exit::OTHER,
        &[
            "pull",
            &format!("{}/envs/x:y", server.addr),
            "--retries",
            "0",
        ],
    );
    assert!(
        err.contains(&server.addr) && err.contains("larger than 4194304 bytes"),
        "{err}"
    );
    assert!(t.has_no_environments());
}

#[test]
fn a_token_service_answer_beyond_its_cap_is_refused_unread() {
    let t = Envoci::new();
    let sent = t.dir().join("token-bytes-sent");
    let server = Server::endless_tokens(1 << 30, &sent);
    let err = t.fail_as(
        exit::OTHER,
        &[
            "pull",
            &format!("{}/envs/x:y", server.addr),
            "--retries",
            "0",
        ],
    );
    assert!(
        err.contains("token service") && err.contains("larger than 65536 bytes"),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let sent: u64 = loop {
        if let Ok(text) = std::fs::read_to_string(&sent) {
            break text.parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the token service noticed no hang-up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        sent < 64 << 20,
        "envoci stopped reading early: {sent} of {} bytes were sent",
        1u64 << 30
    );
    assert!(t.has_no_environments());
}
