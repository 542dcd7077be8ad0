//! Why a transfer failed, decided from typed errors — oci-client's error variants, the
//! OCI error codes in a registry's answer, HTTP statuses and reqwest's `is_connect()` /
//! `is_timeout()` — and never from the words of a message (a digest or a URL in one
//! contains `401` or `404` often enough).
//!
//! [`Failure`] is what went wrong with one request; [`ErrorKind`] is what callers branch
//! on; the command line turns it into an exit code.

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};

/// An error from deep inside a library, kept as the cause of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error("`{reference}` is not a registry reference (expected host/repository:tag or host/repository@sha256:...): {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A request to the registry failed; `failure` says why, with a hint.
    #[error("registry {registry}: {what}: {failure}")]
    Registry {
        /// Registry host.
        registry: String,
        /// What was attempted.
        what: String,
        /// Why it failed.
        failure: Failure,
        /// The transport's or client library's error, when it adds something.
        #[source]
        source: Option<BoxError>,
    },
    /// Credentials cannot be found or used.
    #[error("credentials for {host}: {reason}")]
    Credentials {
        /// Registry host (or the config file).
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// A CA file given with `--ca-file` cannot be read.
    #[error("cannot read the CA file {}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blob whose content does not match its digest.
    #[error("{what} {digest} from {registry} does not match its digest (got {actual}); nothing was committed")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Config, layer, manifest.
        what: &'static str,
        /// Expected digest.
        digest: String,
        /// Actual digest.
        actual: String,
    },
    /// The registry holds something that is not an envoci environment for this platform.
    #[error("`{reference}` is not an envoci environment: {what}")]
    NotEnvoci {
        /// The reference.
        reference: String,
        /// What it is.
        what: String,
    },
    /// A place blobs live that cannot do this at all (an archive is written whole, not
    /// blob by blob): see [`super::blobs`].
    #[error("{location} cannot {operation}: {reason}")]
    Unsupported {
        /// The blob store.
        location: String,
        /// What it cannot do.
        operation: super::blobs::Operation,
        /// Why not.
        reason: &'static str,
    },
    /// A blob larger than its reader allows; nothing more was read.
    #[error("blob {digest} in {location} holds more than the {limit} bytes allowed; not read")]
    TooLarge {
        /// The blob store.
        location: String,
        /// The blob.
        digest: String,
        /// The most the reader takes.
        limit: u64,
    },
    /// An OCI layout or archive cannot be read or written.
    #[error(transparent)]
    Layout(#[from] super::layout::Error),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The local artifact cannot be loaded.
    #[error(transparent)]
    Load(#[from] crate::artifact::LoadError),
    /// A registries.conf file cannot be used.
    #[error("registries configuration {}: {reason}", file.display())]
    MirrorConfig {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong, with the line where the parser knows it.
        reason: String,
    },
    /// The configuration blocks the reference.
    #[error("{reference} is blocked by the registries configuration (prefix `{prefix}` in {})", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    Blocked {
        /// The reference.
        reference: String,
        /// The blocking entry's prefix.
        prefix: String,
        /// The files read.
        files: Vec<std::path::PathBuf>,
    },
    /// `--offline`, and the store has no copy of the reference.
    #[error("{reference} is not in the store (never pulled here), and --offline allows no registry request")]
    NotInStore {
        /// The reference.
        reference: String,
    },
    /// An endpoint that could not be connected to earlier in the same pull.
    #[error("{endpoint}: skipped, connecting failed earlier in this pull: {reason}")]
    Skipped {
        /// The endpoint.
        endpoint: String,
        /// The kind of that failure.
        kind: ErrorKind,
        /// Its message.
        reason: String,
    },
    /// Every endpoint of a pull failed: the mirrors' failures are listed, the last
    /// endpoint's (the registry's own location) is the cause.
    #[error("{what}: mirrors failed first: {}", tried.join("; "))]
    Endpoints {
        /// What was attempted.
        what: String,
        /// `endpoint: why` for each endpoint before the last.
        tried: Vec<String>,
        /// The last endpoint's failure.
        #[source]
        last: Box<Error>,
    },
}

/// What kind of failure a transfer error is: what a caller branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed reference or option.
    Invalid,
    /// No such repository, tag, digest or blob.
    NotFound,
    /// No credentials, wrong ones, or access refused.
    Unauthorized,
    /// Cannot connect: refused, unknown host, TLS handshake.
    Unreachable,
    /// The registry stayed silent past the timeout.
    TimedOut,
    /// Something answers, but not as an OCI registry does.
    NotRegistry,
    /// Content that does not match its digest or size.
    Integrity,
    /// The registry or blob store refuses the operation (read-only, too large, not
    /// something it can do).
    Refused,
    /// The registry failed (5xx) or answered against the protocol.
    Server,
    /// The artifact is not an envoci environment (for this platform).
    NotEnvoci,
    /// The local store or a local file failed.
    Local,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadReference { .. } | Error::CaFile { .. } => ErrorKind::Invalid,
            Error::Registry { failure, .. } => failure.kind(),
            Error::Credentials { .. } => ErrorKind::Unauthorized,
            Error::DigestMismatch { .. } => ErrorKind::Integrity,
            Error::NotEnvoci { .. } => ErrorKind::NotEnvoci,
            Error::Unsupported { .. } | Error::TooLarge { .. } => ErrorKind::Refused,
            Error::Layout(e) => local(e.kind()),
            Error::Store(e) => local(e.kind()),
            Error::Load(e) => local(e.kind()),
            Error::MirrorConfig { .. } => ErrorKind::Invalid,
            Error::Blocked { .. } => ErrorKind::Refused,
            Error::Endpoints { last, .. } => last.kind(),
            Error::Skipped { kind, .. } => *kind,
            Error::NotInStore { .. } => ErrorKind::NotFound,
        }
    }

    /// Whether the failure is the endpoint's (unreachable, refusing, missing the
    /// content, serving wrong bytes), so that another endpoint may do better; a
    /// failure of the local store or of the request itself is not.
    pub fn is_endpoint_failure(&self) -> bool {
        matches!(
            self,
            Error::Registry { .. }
                | Error::Credentials { .. }
                | Error::DigestMismatch { .. }
                | Error::NotEnvoci { .. }
                | Error::TooLarge { .. }
                | Error::Endpoints { .. }
                | Error::Skipped { .. }
        )
    }

    /// Whether trying again may help: the connection, a timeout, 429 or a 5xx.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Registry { failure, .. } if failure.is_transient())
    }
}

/// The transfer kind of a failure of the store or a layout.
fn local(kind: crate::ErrorKind) -> ErrorKind {
    match kind {
        crate::ErrorKind::Usage => ErrorKind::Invalid,
        crate::ErrorKind::NotFound => ErrorKind::NotFound,
        crate::ErrorKind::Auth => ErrorKind::Unauthorized,
        crate::ErrorKind::Network => ErrorKind::Unreachable,
        crate::ErrorKind::Integrity => ErrorKind::Integrity,
        crate::ErrorKind::Other => ErrorKind::Local,
    }
}

impl From<ErrorKind> for crate::ErrorKind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Invalid => crate::ErrorKind::Usage,
            ErrorKind::NotFound => crate::ErrorKind::NotFound,
            ErrorKind::Unauthorized => crate::ErrorKind::Auth,
            ErrorKind::Unreachable | ErrorKind::TimedOut => crate::ErrorKind::Network,
            ErrorKind::Integrity => crate::ErrorKind::Integrity,
            ErrorKind::NotRegistry
            | ErrorKind::Refused
            | ErrorKind::Server
            | ErrorKind::NotEnvoci
            | ErrorKind::Local => crate::ErrorKind::Other,
        }
    }
}

/// How the client was talking to the registry, for the hints a failure gives.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// Whether the request carried no credentials.
    pub anonymous: bool,
    /// Whether the registry is reached over plain HTTP.
    pub plain_http: bool,
    /// Whether it is a loopback address (plain HTTP unless `--ca-file`).
    pub loopback: bool,
    /// The silence allowed before a request fails.
    pub timeout: Duration,
}

/// Why one request failed, with what the user can do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The registry has no such repository, tag, digest or blob.
    NotFound {
        /// The registry's own words, capped.
        detail: String,
    },
    /// Credentials are missing or wrong (401).
    Unauthorized {
        /// Whether none were sent.
        anonymous: bool,
        /// The registry's own words, capped.
        detail: String,
    },
    /// Credentials were accepted but do not allow this (403, `DENIED`).
    Forbidden {
        /// The registry's own words, capped.
        detail: String,
    },
    /// No connection could be made.
    Unreachable {
        /// What failed: the TCP connection, the name, the TLS handshake.
        cause: Unreachable,
        /// Whether plain HTTP was used.
        plain_http: bool,
        /// Whether the host is a loopback address.
        loopback: bool,
    },
    /// The connection broke off in the middle of a request or an answer.
    Interrupted {
        /// What the transport said, capped.
        detail: String,
    },
    /// A download slower on average than the least speed tolerated.
    TooSlow {
        /// That speed, in bytes per second.
        min_speed: u64,
    },
    /// No answer within the timeout.
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// `GET /v2/` did not answer as the distribution spec says (200 or 401).
    NotRegistry {
        /// The status it answered with.
        status: u16,
        /// Its body's gist (the title of an HTML page, or the first line).
        detail: String,
        /// Whether plain HTTP was used (a 400 then often means "speak TLS").
        plain_http: bool,
        /// Whether the host is a loopback address.
        loopback: bool,
    },
    /// Content that does not match its digest or size.
    Integrity {
        /// What was wrong.
        detail: String,
    },
    /// The registry refuses this operation by policy: 405 (read-only, a mirror), 413
    /// (too large), or another 4xx.
    Refused {
        /// The status.
        status: u16,
        /// The registry's own words, capped.
        detail: String,
    },
    /// The registry failed (5xx, 429) or answered against the protocol.
    Server {
        /// The status, when there was one.
        status: Option<u16>,
        /// The registry's own words, capped.
        detail: String,
    },
}

/// What part of making a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// Nothing listens there (connection refused).
    Refused,
    /// The TLS handshake failed.
    Tls,
    /// Another connection failure (the name does not resolve, no route, reset).
    Other,
}

impl Failure {
    /// The kind of error this failure makes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::NotFound { .. } => ErrorKind::NotFound,
            Failure::Unauthorized { .. } | Failure::Forbidden { .. } => ErrorKind::Unauthorized,
            Failure::Unreachable { .. } | Failure::Interrupted { .. } => ErrorKind::Unreachable,
            Failure::TimedOut { .. } | Failure::TooSlow { .. } => ErrorKind::TimedOut,
            Failure::NotRegistry { .. } => ErrorKind::NotRegistry,
            Failure::Integrity { .. } => ErrorKind::Integrity,
            Failure::Refused { .. } => ErrorKind::Refused,
            Failure::Server { .. } => ErrorKind::Server,
        }
    }

    /// Whether trying again may help: a connection that broke off, a timeout, 408, 429
    /// or a 5xx. A connection that cannot be made (nothing listens, no such host, a TLS
    /// mismatch), a refusal or a missing object stays as it is: retrying would only
    /// delay the message.
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::TimedOut { .. } | Failure::TooSlow { .. } | Failure::Interrupted { .. } => {
                true
            }
            Failure::Server { status, .. } => {
                status.is_some_and(|s| s == 408 || s == 429 || s >= 500)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound { detail } => {
                write!(f, "not found: the registry has no such repository, tag or digest{}", gist(detail))
            }
            Failure::Unauthorized { anonymous: true, detail } => write!(
                f,
                "the registry refused access{}: no credentials were given (run `envoci login HOST`, or set ENVOCI_REGISTRY_USER and ENVOCI_REGISTRY_PASSWORD)",
                gist(detail)
            ),
            Failure::Unauthorized { anonymous: false, detail } => write!(
                f,
                "the registry refused access{}: check the user name and password (`envoci login HOST`)",
                gist(detail)
            ),
            Failure::Forbidden { detail } => write!(
                f,
                "the registry refused access{}: the credentials were accepted but do not allow this on this repository",
                gist(detail)
            ),
            Failure::Unreachable { cause, plain_http, loopback } => {
                let how = if *plain_http { "HTTP" } else { "HTTPS" };
                match cause {
                    Unreachable::Refused => write!(f, "cannot connect ({how}): connection refused; is the registry running at this address?"),
                    Unreachable::Tls if *loopback => write!(f, "the TLS handshake failed: a loopback registry with --ca-file is reached over HTTPS; drop --ca-file if it speaks plain HTTP, or check the certificate"),
                    Unreachable::Tls => write!(f, "the TLS handshake failed: if the registry speaks plain HTTP, pass --insecure; if it has its own CA, pass --ca-file"),
                    Unreachable::Other => write!(f, "cannot connect ({how}): check the host name and the network"),
                }
            }
            Failure::Interrupted { detail } => {
                write!(f, "the connection broke off{}", gist(detail))
            }
            Failure::TooSlow { min_speed } => write!(
                f,
                "timed out: the download ran below {} KiB/s on average (lower --min-speed for a slow link)",
                min_speed / 1024
            ),
            Failure::TimedOut { after } => write!(
                f,
                "timed out: no answer for {} s (raise --timeout for a slow registry or link)",
                after.as_secs()
            ),
            Failure::NotRegistry { status, detail, plain_http, loopback } => {
                write!(f, "not an OCI registry: GET /v2/ answered {status}{}", gist(detail))?;
                if *plain_http && *status == 400 {
                    let fix = if *loopback { "pass --ca-file with its CA" } else { "drop --insecure" };
                    write!(f, "; if it speaks HTTPS, {fix}")?;
                }
                Ok(())
            }
            Failure::Integrity { detail } => write!(f, "content does not match its digest or size{}", gist(detail)),
            Failure::Refused { status: 405, detail } => write!(
                f,
                "refused with status 405{}: the registry does not accept this here: is it read-only, or a pull-through mirror?",
                gist(detail)
            ),
            Failure::Refused { status: 413, detail } => write!(
                f,
                "refused with status 413{}: the registry refuses a request this large (its proxy or its upload limit)",
                gist(detail)
            ),
            Failure::Refused { status, detail } => write!(f, "refused with status {status}{}", gist(detail)),
            Failure::Server { status: Some(status), detail } => write!(f, "the registry failed with status {status}{}", gist(detail)),
            Failure::Server { status: None, detail } => write!(f, "the registry answered against the protocol{}", gist(detail)),
        }
    }
}

/// ` (detail)` when there is one.
fn gist(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// The most an error body contributes to a message.
const DETAIL_CAP: usize = 200;

/// The gist of an error body for a message: an HTML page's title, else its first
/// non-empty line, whitespace collapsed and capped at a few hundred bytes.
pub fn summarize_body(body: &str) -> String {
    let text = html_title(body).unwrap_or(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > DETAIL_CAP {
        let mut end = DETAIL_CAP;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The text of an HTML document's `<title>`, if the body is one.
fn html_title(body: &str) -> Option<&str> {
    let head = &body[..body.len().min(4096)];
    let lower = head.to_ascii_lowercase();
    if !(lower.trim_start().starts_with("<!doctype html")
        || lower.trim_start().starts_with("<html"))
    {
        return None;
    }
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    Some(&head[start..end])
}

/// At most `cap` bytes of a response body, as text (a body that breaks off gives what
/// arrived).
pub async fn read_capped(response: reqwest::Response, cap: usize) -> String {
    let (body, _) = read_body(response, cap).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// The body of a response, stopping once it holds `cap` bytes (a caller that must refuse
/// a longer body reads `cap + 1`), and the error that cut it short, if one did.
pub async fn read_body(
    mut response: reqwest::Response,
    cap: usize,
) -> (Vec<u8>, Option<reqwest::Error>) {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            Ok(None) => break,
            Err(e) => return (body, Some(e)),
        }
    }
    (body, None)
}

/// The failure an oci-client error stands for.
pub fn classify(error: &OciDistributionError, context: &Context) -> Failure {
    match error {
        OciDistributionError::RequestError(e) => classify_request(e, context),
        OciDistributionError::ServerError { code, message, .. } => {
            // Some answers (that of an upload's PUT) come through unparsed: an OCI error
            // envelope in a 4xx body says more than the status (`DIGEST_INVALID`).
            let envelope = serde_json::from_str::<OciEnvelope>(message)
                .ok()
                .filter(|_| (400..500).contains(code))
                .map(|envelope| by_envelope(&envelope, context))
                .filter(|failure| !matches!(failure, Failure::Refused { .. }));
            envelope.unwrap_or_else(|| by_status(*code, summarize_body(message), context))
        }
        OciDistributionError::RegistryError { envelope, .. } => by_envelope(envelope, context),
        OciDistributionError::UnauthorizedError { .. } => Failure::Unauthorized {
            anonymous: context.anonymous,
            detail: String::new(),
        },
        OciDistributionError::AuthenticationFailure(body) => Failure::Unauthorized {
            anonymous: context.anonymous,
            detail: summarize_body(body),
        },
        OciDistributionError::DigestError(e) => Failure::Integrity {
            detail: e.to_string(),
        },
        OciDistributionError::ImageManifestNotFoundError(detail) => Failure::NotFound {
            detail: summarize_body(detail),
        },
        OciDistributionError::IoError(e) => classify_io(e, context).unwrap_or(Failure::Server {
            status: None,
            detail: summarize_body(&e.to_string()),
        }),
        other => Failure::Server {
            status: None,
            detail: summarize_body(&other.to_string()),
        },
    }
}

/// The failure an HTTP client error stands for: a timeout, a connection that could
/// not be made (and why), or a status.
pub fn classify_request(error: &reqwest::Error, context: &Context) -> Failure {
    if error.is_timeout() {
        return Failure::TimedOut {
            after: context.timeout,
        };
    }
    if error.is_connect() {
        return unreachable(connect_cause(error), context);
    }
    if let Some(status) = error.status() {
        return by_status(status.as_u16(), String::new(), context);
    }
    if error.is_body() || error.is_request() || error.is_decode() {
        return Failure::Interrupted {
            detail: summarize_body(&crate::error_chain(error)),
        };
    }
    Failure::Server {
        status: None,
        detail: summarize_body(&crate::error_chain(error)),
    }
}

/// The failure behind an I/O error from a response stream: the HTTP client's error
/// or oci-client's digest check, when it is one of those.
pub fn classify_io(error: &std::io::Error, context: &Context) -> Option<Failure> {
    use std::io::ErrorKind as Io;
    if let Io::ConnectionReset | Io::ConnectionAborted | Io::UnexpectedEof | Io::BrokenPipe =
        error.kind()
    {
        return Some(Failure::Interrupted {
            detail: error.to_string(),
        });
    }
    let inner = error.get_ref()?;
    if let Some(e) = inner.downcast_ref::<reqwest::Error>() {
        return Some(classify_request(e, context));
    }
    if let Some(e) = inner.downcast_ref::<oci_client::errors::DigestError>() {
        return Some(Failure::Integrity {
            detail: e.to_string(),
        });
    }
    None
}

fn unreachable(cause: Unreachable, context: &Context) -> Failure {
    Failure::Unreachable {
        cause,
        plain_http: context.plain_http,
        loopback: context.loopback,
    }
}

/// Why a connection could not be made, from the error's causes: a TLS error (rustls's
/// own type) or a refused connection (the I/O error's kind). I/O errors nest (one
/// wrapping another), and their `source()` skips the wrapped one: look inside each.
fn connect_cause(error: &(dyn std::error::Error + 'static)) -> Unreachable {
    let mut cause = Unreachable::Other;
    let mut next = Some(error);
    while let Some(e) = next {
        let mut inner = Some(e);
        while let Some(i) = inner {
            if i.is::<rustls::Error>() {
                return Unreachable::Tls;
            }
            let Some(io) = i.downcast_ref::<std::io::Error>() else {
                break;
            };
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                cause = Unreachable::Refused;
            }
            inner = io
                .get_ref()
                .map(|r| r as &(dyn std::error::Error + 'static));
        }
        next = e.source();
    }
    cause
}

/// The failure an HTTP status stands for.
pub fn by_status(status: u16, detail: String, context: &Context) -> Failure {
    match status {
        401 => Failure::Unauthorized {
            anonymous: context.anonymous,
            detail,
        },
        403 => Failure::Forbidden { detail },
        404 => Failure::NotFound { detail },
        408 | 429 => Failure::Server {
            status: Some(status),
            detail,
        },
        400..=499 => Failure::Refused { status, detail },
        _ => Failure::Server {
            status: Some(status),
            detail,
        },
    }
}

/// The failure a registry's OCI error envelope (a 4xx answer) stands for, from the
/// first error code it holds.
pub fn by_envelope(envelope: &OciEnvelope, context: &Context) -> Failure {
    let Some(first) = envelope.errors.first() else {
        return Failure::Refused {
            status: 400,
            detail: String::new(),
        };
    };
    let detail = summarize_body(&first.message);
    match &first.code {
        OciErrorCode::BlobUnknown
        | OciErrorCode::ManifestUnknown
        | OciErrorCode::NameUnknown
        | OciErrorCode::NotFound
        | OciErrorCode::BlobUploadUnknown => Failure::NotFound { detail },
        OciErrorCode::Unauthorized => Failure::Unauthorized {
            anonymous: context.anonymous,
            detail,
        },
        OciErrorCode::Denied => Failure::Forbidden { detail },
        OciErrorCode::DigestInvalid | OciErrorCode::SizeInvalid => Failure::Integrity { detail },
        OciErrorCode::Toomanyrequests => Failure::Server {
            status: Some(429),
            detail,
        },
        OciErrorCode::Unsupported => Failure::Refused {
            status: 405,
            detail,
        },
        OciErrorCode::Other(code) if code == "UNAVAILABLE" => Failure::Server {
            status: Some(503),
            detail,
        },
        _ => Failure::Refused {
            status: 400,
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::OciError;

    fn context() -> Context {
        Context {
            anonymous: true,
            plain_http: true,
            loopback: false,
            timeout: Duration::from_secs(7),
        }
    }

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "the message".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            // URLs with digests full of status-like digits must not matter.
            url: "http://h/v2/r/manifests/sha256:401404".into(),
        }
    }

    fn server(code: u16, message: &str) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://h/v2/r/blobs/sha256:4014044040401".into(),
            message: message.into(),
        }
    }

    /// A registry's error body with one error of `code`.
    fn body(code: &str) -> String {
        format!(r#"{{"errors":[{{"code":"{code}","message":"m","detail":{{}}}}]}}"#)
    }

    #[test]
    fn errors_are_classified_by_type_code_and_status_never_by_text() {
        use ErrorKind::*;
        let table: Vec<(OciDistributionError, ErrorKind)> = vec![
            (envelope(OciErrorCode::ManifestUnknown), NotFound),
            (envelope(OciErrorCode::NameUnknown), NotFound),
            (envelope(OciErrorCode::BlobUnknown), NotFound),
            (envelope(OciErrorCode::Unauthorized), Unauthorized),
            (envelope(OciErrorCode::Denied), Unauthorized),
            (envelope(OciErrorCode::DigestInvalid), Integrity),
            (envelope(OciErrorCode::SizeInvalid), Integrity),
            (envelope(OciErrorCode::Unsupported), Refused),
            (envelope(OciErrorCode::Toomanyrequests), Server),
            (envelope(OciErrorCode::Other("UNAVAILABLE".into())), Server),
            (envelope(OciErrorCode::ManifestInvalid), Refused),
            (server(404, "no such thing"), NotFound),
            (server(401, ""), Unauthorized),
            (server(403, "denied"), Unauthorized),
            (server(405, ""), Refused),
            (server(413, "too large"), Refused),
            // An upload's answer comes unparsed: its envelope's code decides.
            (server(400, &body("DIGEST_INVALID")), Integrity),
            (server(400, &body("SIZE_INVALID")), Integrity),
            (server(404, &body("BLOB_UPLOAD_UNKNOWN")), NotFound),
            (server(400, &body("MANIFEST_INVALID")), Refused),
            (server(400, "DIGEST_INVALID"), Refused),
            // A server error whose URL holds "401" and "404" is still a server error.
            (server(500, "unauthorized 401 not found 404"), Server),
            (server(502, ""), Server),
            (
                OciDistributionError::UnauthorizedError { url: "u".into() },
                Unauthorized,
            ),
            (
                OciDistributionError::AuthenticationFailure("nope".into()),
                Unauthorized,
            ),
            (
                OciDistributionError::ImageManifestNotFoundError("x".into()),
                NotFound,
            ),
            (
                OciDistributionError::SpecViolationError("digest 404 missing".into()),
                Server,
            ),
        ];
        for (error, kind) in table {
            let failure = classify(&error, &context());
            assert_eq!(failure.kind(), kind, "{error} → {failure:?}");
        }
    }

    #[test]
    fn only_failures_that_may_pass_are_transient() {
        let c = context();
        assert!(classify(&server(503, ""), &c).is_transient());
        assert!(classify(&server(429, ""), &c).is_transient());
        assert!(classify(&envelope(OciErrorCode::Toomanyrequests), &c).is_transient());
        assert!(!classify(&server(404, ""), &c).is_transient());
        assert!(!classify(&server(405, ""), &c).is_transient());
        assert!(!classify(&envelope(OciErrorCode::Denied), &c).is_transient());
        let tls = Failure::Unreachable {
            cause: Unreachable::Tls,
            plain_http: false,
            loopback: false,
        };
        assert!(!tls.is_transient());
        let refused = Failure::Unreachable {
            cause: Unreachable::Refused,
            plain_http: true,
            loopback: true,
        };
        assert!(!refused.is_transient());
        assert!(Failure::Interrupted {
            detail: String::new()
        }
        .is_transient());
    }

    #[test]
    fn messages_carry_the_fix() {
        let text = |f: Failure| f.to_string();
        assert!(text(Failure::TimedOut {
            after: Duration::from_secs(7)
        })
        .contains("7 s (raise --timeout"));
        assert!(text(by_status(401, String::new(), &context())).contains("envoci login"));
        let tls = Failure::Unreachable {
            cause: Unreachable::Tls,
            plain_http: false,
            loopback: false,
        };
        assert!(text(tls).contains("--insecure"));
        let not_registry = Failure::NotRegistry {
            status: 400,
            detail: String::new(),
            plain_http: true,
            loopback: true,
        };
        assert!(text(not_registry).contains("--ca-file"));
        assert!(text(by_status(405, String::new(), &context())).contains("read-only"));
    }

    #[test]
    fn bodies_are_reduced_to_their_gist() {
        let page =
            "<!DOCTYPE HTML>\n<html><head><title>Error response</title></head>\n<body><h1>404</h1>"
                .to_string()
                + &"x".repeat(10_000);
        assert_eq!(summarize_body(&page), "Error response");
        assert_eq!(summarize_body("\n  first   line \nsecond"), "first line");
        let long = "é".repeat(1000);
        let gist = summarize_body(&long);
        assert!(gist.len() <= DETAIL_CAP + '…'.len_utf8(), "{}", gist.len());
        assert!(gist.ends_with('…'));
    }
}
