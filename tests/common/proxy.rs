//! A fault-injecting TCP proxy between client and registry: one request per connection
//! (it rewrites `Connection: close`), and for the first blob download it can cut the
//! connection after some body bytes, flip one byte, stall, trickle, wait, send more bytes
//! than the blob has, or refuse the request's token. Loopback only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to the first blob download.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Close the connection after this many body bytes.
    CutAfter(usize),
    /// XOR the body byte at this offset with 0xff.
    FlipAt(usize),
    /// Send this many body bytes, then nothing more (the connection stays open).
    StallAfter(usize),
    /// Send this many body bytes, then one byte every 50 ms (never silent for long,
    /// never done).
    TrickleAfter(usize),
    /// Send the blob followed by this many more bytes, with a `Content-Length` that
    /// counts them (a registry lying about the blob's size).
    Pad(usize),
    /// Answer `401 UNAUTHORIZED` without asking the registry (as a registry does for a
    /// token that expired or was revoked).
    Refuse,
    /// Wait this long before forwarding the request (a slow registry).
    Delay(Duration),
}

/// A running proxy.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the registry.
    pub addr: String,
    upstream: String,
    used: Arc<AtomicBool>,
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Proxies to `upstream`, applying `fault` once to a blob GET for `blob_digest`.
    pub fn start(upstream: &str, fault: Fault, blob_digest: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let used = Arc::new(AtomicBool::new(false));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let upstream_addr = upstream.to_string();
        let (upstream, digest, flag, seen) = (
            upstream.to_string(),
            blob_digest.to_string(),
            used.clone(),
            authorizations.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, digest, flag, seen) =
                    (upstream.clone(), digest.clone(), flag.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, fault, &digest, &flag, &seen);
                });
            }
        });
        Proxy {
            addr,
            upstream: upstream_addr,
            used,
            authorizations,
        }
    }

    /// Proxies to `upstream` without faults (it still records what it sees).
    pub fn plain(upstream: &str) -> Proxy {
        Self::start(
            upstream,
            Fault::Delay(Duration::ZERO),
            "no blob has this digest",
        )
    }

    /// The `Authorization` headers of the requests so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.authorizations.lock().unwrap().clone()
    }

    /// `reference` (`UPSTREAM/repo:tag`) through this proxy.
    pub fn via(&self, reference: &str) -> String {
        reference.replace(&self.upstream, &self.addr)
    }

    /// Whether the fault was applied.
    pub fn fired(&self) -> bool {
        self.used.load(Ordering::SeqCst)
    }
}

/// Reads an HTTP request or response head (through the blank line).
pub fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(head)
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    fault: Fault,
    digest: &str,
    used: &AtomicBool,
    authorizations: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| !l.to_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    lines.push("Connection: close".into());
    for line in &lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorizations
                    .lock()
                    .unwrap()
                    .push(value.trim().to_string());
            }
        }
    }
    let request = format!("{}\r\n\r\n", lines.join("\r\n"));
    let length: usize = lines
        .iter()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let targeted = lines[0].starts_with("GET ") && lines[0].contains(&format!("/blobs/{digest}"));
    let fault = if targeted && !used.swap(true, Ordering::SeqCst) {
        Some(fault)
    } else {
        None
    };
    if let Some(Fault::Refuse) = fault {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}"#;
        return write!(
            client,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    if let Some(Fault::Delay(delay)) = fault {
        std::thread::sleep(delay);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(request.as_bytes())?;
    if length > 0 {
        let mut body = vec![0u8; length];
        client.read_exact(&mut body)?;
        server.write_all(&body)?;
    }
    let response_head = read_head(&mut server)?;
    if let Some(Fault::Pad(extra)) = fault {
        client.write_all(&padded_head(&response_head, extra))?;
        std::io::copy(&mut server, &mut client)?;
        return client.write_all(&vec![b'x'; extra]);
    }
    client.write_all(&response_head)?;
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        match fault {
            Some(Fault::CutAfter(limit)) if sent + n >= limit => {
                client.write_all(&chunk[..limit - sent])?;
                client.flush()?;
                return client.shutdown(std::net::Shutdown::Both);
            }
            Some(Fault::FlipAt(at)) if (sent..sent + n).contains(&at) => chunk[at - sent] ^= 0xff,
            Some(Fault::StallAfter(limit)) if sent + n >= limit => {
                client.write_all(&chunk[..limit - sent])?;
                client.flush()?;
                // Hold the connection open, silent, until the client gives up.
                let mut probe = [0u8; 1];
                let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
                let _ = client.read(&mut probe);
                return Ok(());
            }
            Some(Fault::TrickleAfter(limit)) if sent + n >= limit => {
                client.write_all(&chunk[..limit - sent])?;
                for byte in &chunk[limit - sent..] {
                    std::thread::sleep(Duration::from_millis(50));
                    if client.write_all(std::slice::from_ref(byte)).is_err() {
                        return Ok(()); // the client gave up
                    }
                }
                return Ok(());
            }
            _ => {}
        }
        client.write_all(chunk)?;
        sent += n;
    }
    Ok(())
}

/// `head` with its `Content-Length` grown by `extra`.
fn padded_head(head: &[u8], extra: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
                let length: usize = value.trim().parse().unwrap_or(0);
                format!("Content-Length: {}", length + extra)
            }
            _ => l.to_string(),
        })
        .collect();
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}
