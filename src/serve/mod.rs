//! Serve: the store as a read-only OCI registry (`envoci serve`), so a CI cache host or
//! a robot's base station is a mirror for the machines near it. It answers the
//! distribution API's reads — `/v2/`, manifests and blobs by tag and digest, `HEAD`,
//! `Range`, tags lists — for the repositories [`names`] makes of the store's names,
//! and refuses every write (405). Paths are parsed strictly, so nothing but the
//! store's blobs can be named; at most `max_requests` requests are answered at once
//! (a blob's permit is held until its body is sent).

pub mod names;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;

use crate::digest::Digest;
use crate::store::Store;
use names::{Reference, Repositories, Route};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address cannot be listened on (in use, not local, not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Other
    }
}

/// Listens on `addr` (`HOST:PORT`; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Answers registry reads from `store` on `listener` until `shutdown` completes.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    max_requests: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let served = Arc::new(Served {
        store,
        permits: Arc::new(Semaphore::new(max_requests.max(1))),
    });
    let router = axum::Router::new().fallback(answer).with_state(served);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}

/// The address a listener is bound to, for messages.
pub fn local_addr(listener: &tokio::net::TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

struct Served {
    store: Store,
    permits: Arc<Semaphore>,
}

/// Every request: writes refused, reads routed.
async fn answer(
    axum::extract::State(served): axum::extract::State<Arc<Served>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is an envoci store served read-only",
        );
    }
    let Some(route) = Route::parse(uri.path()) else {
        return refusal(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such path");
    };
    let Ok(permit) = served.permits.clone().acquire_owned().await else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "shutting down",
        );
    };
    let head = method == Method::HEAD;
    let response = match route {
        Route::Base => Ok(base()),
        Route::Tags { name } => tags(&served.store, &name, uri.query()).await,
        Route::Manifest { name, reference } => {
            manifest(&served.store, &name, &reference, head).await
        }
        Route::Blob { name, digest } => {
            let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
            blob(&served.store, &name, &digest, range, head, permit).await
        }
    };
    response.unwrap_or_else(|e| e)
}

type Answer = Result<Response, Response>;

fn base() -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response();
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// The store's names as repositories, read off the blocking pool.
async fn repositories(store: &Store) -> Result<Repositories, Response> {
    let store = store.clone();
    let tags = tokio::task::spawn_blocking(move || store.tags()).await;
    match tags {
        Ok(Ok(tags)) => Ok(Repositories::of(tags)),
        _ => Err(internal("cannot read the store's names")),
    }
}

async fn tags(store: &Store, name: &str, query: Option<&str>) -> Answer {
    let repositories = repositories(store).await?;
    let repository = repositories.get(name).ok_or_else(name_unknown)?;
    let param = |key: &str| {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
    };
    let last = param("last");
    let n = param("n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let tags: Vec<&String> = repository
        .tags
        .keys()
        .filter(|t| last.is_none_or(|last| t.as_str() > last))
        .take(n)
        .collect();
    let body = serde_json::json!({ "name": name, "tags": tags }).to_string();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn manifest(store: &Store, name: &str, reference: &Reference, head: bool) -> Answer {
    let repositories = repositories(store).await?;
    let repository = repositories.get(name).ok_or_else(name_unknown)?;
    let descriptor = repository.manifest(reference).ok_or_else(|| {
        refusal(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "no such manifest",
        )
    })?;
    let digest = crate::store::from_oci_digest(descriptor.digest())
        .ok_or_else(|| internal("a name points at an unsupported digest"))?;
    let reader = store.clone();
    let bytes = tokio::task::spawn_blocking(move || reader.read_blob(&digest))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| internal("the manifest cannot be read from the store"))?;
    let media_type = descriptor.media_type().to_string();
    let length = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    insert(headers, header::CONTENT_TYPE, &media_type);
    insert(headers, header::CONTENT_LENGTH, &length.to_string());
    insert(headers, "Docker-Content-Digest", &digest.oci());
    Ok(response)
}

async fn blob(
    store: &Store,
    name: &str,
    digest: &Digest,
    range: Option<&str>,
    head: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Answer {
    let repositories = repositories(store).await?;
    repositories.get(name).ok_or_else(name_unknown)?;
    let unknown = || refusal(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "no such blob");
    if !store.has_blob(digest) {
        return Err(unknown());
    }
    let file = store.open_blob(digest).map_err(|_| unknown())?;
    let mut file = tokio::fs::File::from_std(file);
    let size = file
        .metadata()
        .await
        .map_err(|_| internal("cannot read a blob"))?
        .len();
    let (status, start, length) = match range.map(|r| parse_range(r, size)) {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, size),
        Some(Range::Bytes(start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(Range::Unsatisfiable) => {
            let mut response = refusal(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                "the range is outside the blob",
            );
            insert(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return Err(response);
        }
    };
    let body = if head {
        Body::empty()
    } else {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|_| internal("cannot read a blob"))?;
        // The permit goes with the body: a request counts until its bytes are sent.
        let chunks = tokio_util::io::ReaderStream::new(file.take(length)).map(move |chunk| {
            let _held = &permit;
            chunk
        });
        Body::from_stream(chunks)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    insert(headers, header::CONTENT_TYPE, "application/octet-stream");
    insert(headers, header::CONTENT_LENGTH, &length.to_string());
    insert(headers, header::ACCEPT_RANGES, "bytes");
    insert(headers, "Docker-Content-Digest", &digest.oci());
    if status == StatusCode::PARTIAL_CONTENT {
        let last = start + length - 1;
        insert(
            headers,
            header::CONTENT_RANGE,
            &format!("bytes {start}-{last}/{size}"),
        );
    }
    Ok(response)
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Bytes `start..=end`.
    Bytes(u64, u64),
    /// A range starting past the end.
    Unsatisfiable,
    /// Not a single byte range: the whole blob is sent (as the HTTP spec allows).
    Ignored,
}

fn parse_range(header: &str, size: u64) -> Range {
    let Some((start, end)) = header
        .strip_prefix("bytes=")
        .filter(|r| !r.contains(','))
        .and_then(|r| r.split_once('-'))
    else {
        return Range::Ignored;
    };
    let Ok(start) = start.trim().parse::<u64>() else {
        return Range::Ignored; // suffix ranges (`-N`) are not used by registry clients
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    let end = match end.trim() {
        "" => size - 1,
        end => match end.parse::<u64>() {
            Ok(end) if end >= start => end.min(size - 1),
            _ => return Range::Ignored,
        },
    };
    Range::Bytes(start, end)
}

fn insert(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// An OCI error answer.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn name_unknown() -> Response {
    refusal(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such repository")
}

fn internal(message: &str) -> Response {
    refusal(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", message)
}

#[cfg(test)]
mod tests {
    use super::{parse_range, Range};

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("bytes=0-", 10), Range::Bytes(0, 9));
        assert_eq!(parse_range("bytes=4-6", 10), Range::Bytes(4, 6));
        assert_eq!(parse_range("bytes=4-99", 10), Range::Bytes(4, 9));
        assert_eq!(parse_range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=6-4", 10), Range::Ignored);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Range::Ignored);
        assert_eq!(parse_range("bytes=-3", 10), Range::Ignored);
        assert_eq!(parse_range("items=0-1", 10), Range::Ignored);
    }
}
