//! `envoci serve`: a store as a read-only registry that envoci, skopeo and oras pull
//! from, that answers HEAD and Range as registries do, refuses writes and strange
//! paths, and stands in as a LAN mirror for a registry.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::envoci::{exit, Envoci};
use common::oci::skopeo;
use common::registry::TestRegistry;

/// A running `envoci serve` of a store, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(t: &Envoci) -> Server {
        let mut child = t
            .cmd(&["serve", "--addr", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stderr = child.stderr.take().unwrap();
        BufReader::new(stderr).read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("serve said where it listens: {line}"))
            .to_string();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: status, head (lower-cased), body.
fn http(addr: &str, method: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, answer[split + 4..].to_vec())
}

/// A store holding a local environment `x` (several layers); its manifest.
fn store_with_env() -> (Envoci, serde_json::Value) {
    let t = Envoci::new();
    t.with_env("x", &["reloc-bin", "links", "shared-dep"]);
    let manifest = t.json(&["inspect", "x"]);
    (t, manifest)
}

#[test]
fn envoci_skopeo_and_oras_pull_from_a_served_store() {
    let (t, inspected) = store_with_env();
    let digest = inspected["summary"]["digest"].as_str().unwrap().to_string();
    let server = Server::start(&t);
    let served = format!("{}/local:x", server.addr);

    let user = Envoci::new();
    let pulled = user.json(&["pull", &served]);
    assert_eq!(pulled["digest"], digest.as_str());
    let target = user.dir().join("env");
    user.ok(&["restore", &served, "--target", target.to_str().unwrap()]);
    user.ok(&["check", "--verify"]);

    let layout = user.dir().join("layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{served}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let site = Envoci::new();
    let imported = site.json(&["import", &format!("oci:{}", layout.display())]);
    assert!(imported.to_string().contains(&digest), "{imported}");

    let out_dir = user.dir().join("oras-out");
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={host:?}, insecure=True)\n\
         for f in c.pull(target={served:?}, outdir={out:?}): print(f)\n",
        host = server.addr,
        out = out_dir.to_str().unwrap(),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers = inspected["manifest"]["layers"].as_array().unwrap().len();
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), layers);
}

#[test]
fn a_served_store_answers_head_ranges_and_tags_and_refuses_writes_and_strange_paths() {
    let (t, inspected) = store_with_env();
    let server = Server::start(&t);
    let addr = &server.addr;
    let layer = &inspected["manifest"]["layers"][0];
    let (digest, size) = (
        layer["digest"].as_str().unwrap(),
        layer["size"].as_u64().unwrap(),
    );
    let blob_path = format!("/v2/local/blobs/{digest}");

    let (status, head, body) = http(addr, "HEAD", &blob_path, "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains(&format!("content-length: {size}")), "{head}");
    assert!(
        head.contains(&format!("docker-content-digest: {digest}")),
        "{head}"
    );
    assert!(body.is_empty());

    let (status, _, whole) = http(addr, "GET", &blob_path, "");
    assert_eq!((status, whole.len() as u64), (200, size));
    let (status, head, tail) = http(addr, "GET", &blob_path, "Range: bytes=5-\r\n");
    assert_eq!(status, 206, "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 5-{}/{size}", size - 1)),
        "{head}"
    );
    assert_eq!(tail, whole[5..]);
    let (status, head, _) = http(
        addr,
        "GET",
        &blob_path,
        &format!("Range: bytes={size}-\r\n"),
    );
    assert_eq!(status, 416, "{head}");

    let manifest_digest = inspected["summary"]["digest"].as_str().unwrap();
    for reference in ["x", manifest_digest] {
        let (status, head, body) =
            http(addr, "GET", &format!("/v2/local/manifests/{reference}"), "");
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("content-type: application/vnd.oci.image.manifest.v1+json"));
        assert_eq!(envoci::digest::Digest::of(&body).oci(), manifest_digest);
    }
    let (status, _, body) = http(addr, "GET", "/v2/local/tags/list", "");
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["x"]));

    for (method, path) in [
        ("PUT", "/v2/local/manifests/y"),
        ("POST", "/v2/local/blobs/uploads/"),
        ("DELETE", blob_path.as_str()),
        ("PATCH", "/v2/local/blobs/uploads/1"),
    ] {
        let (status, _, body) = http(addr, method, path, "Content-Length: 0\r\n");
        assert_eq!(status, 405, "{method} {path}");
        assert!(String::from_utf8_lossy(&body).contains("UNSUPPORTED"));
    }
    for path in [
        "/v2/../../etc/passwd",
        "/v2/local/blobs/sha256:../../../../etc/passwd",
        "/v2/local/blobs/..%2f..%2fetc%2fpasswd",
        "/v2/_catalog",
        "/v2/nothing/tags/list",
        "/v2/local/manifests/nothing",
        "/etc/passwd",
        "/",
    ] {
        let (status, _, _) = http(addr, "GET", path, "");
        assert_eq!(status, 404, "{path}");
    }

    let err = t.fail(&["push", "x", &format!("{addr}/local:y")]);
    assert!(err.contains("405") && err.contains("read-only"), "{err}");
}

#[test]
fn serve_on_a_port_in_use_says_so() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let t = Envoci::new();
    let err = t.fail_as(exit::OTHER, &["serve", "--addr", &addr]);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn a_served_store_is_a_lan_mirror_for_the_registry_it_pulled_from() {
    let upstream = TestRegistry::start();
    let (builder, _) = store_with_env();
    let remote = upstream.reference("envs/m:v1");
    builder.ok(&["push", "x", &remote]);
    let base_station = Envoci::new();
    base_station.ok(&["pull", &remote]);
    let server = Server::start(&base_station);
    let before = upstream.requests().len();

    let robot = Envoci::new();
    let report = robot.json(&["pull", &remote, "--mirror", &server.addr]);
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{report}");
    assert_eq!(endpoints[0]["endpoint"], format!("{}/envs/m", server.addr));
    assert_eq!(endpoints[0]["manifest"], true);
    assert_eq!(
        upstream.requests().len(),
        before,
        "the robot never asked the registry"
    );
    robot.ok(&["check", "--verify"]);

    let second = Envoci::new();
    let target = second.dir().join("env");
    let restored = second.json(&[
        "restore",
        &remote,
        "--target",
        target.to_str().unwrap(),
        "--mirror",
        &server.addr,
    ]);
    let pulled = &restored["pulled"]["endpoints"][0];
    assert_eq!(
        pulled["endpoint"],
        format!("{}/envs/m", server.addr),
        "{restored}"
    );
    assert_eq!(upstream.requests().len(), before, "nor did the second");
}

#[test]
fn no_more_requests_than_allowed_are_answered_at_once() {
    // One incompressible 32 MiB file: more than the socket buffers hold, so a client
    // that reads only the head keeps the blob's body (and its permit) in flight.
    let t = Envoci::new();
    let dir = t.dir().join("big-env");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..32 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(dir.join("lib/big.bin"), noise).unwrap();
    t.ok(&["snapshot", dir.to_str().unwrap(), "--tag", "big"]);
    let digest = t.json(&["inspect", "big"])["manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut child = t
        .cmd(&["serve", "--addr", "127.0.0.1:0", "--max-requests", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server {
        addr: line
            .split("http://")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string(),
        child,
    };
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    write!(
        slow,
        "GET /v2/local/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).unwrap();
    assert_eq!(&first[9..12], b"200");

    let mut waiting = TcpStream::connect(&server.addr).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    write!(
        waiting,
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut byte = [0u8; 1];
    let held = waiting.read(&mut byte);
    assert!(
        held.is_err(),
        "the second request waits while the blob is in flight"
    );

    drop(slow);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    waiting.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
