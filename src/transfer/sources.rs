//! The endpoints one pull fetches from — mirrors in order, then the registry's own
//! location ([`super::mirrors`]) — each connected on first use. Every request goes to
//! the first endpoint that serves it: an endpoint that cannot be connected to is
//! skipped for the rest of the pull; one that fails a request (not found, refused, too
//! slow, wrong bytes) is skipped for that request only, and the next one is asked. A
//! blob's partial download is content-addressed, so the next endpoint continues it.

use std::sync::{Arc, Mutex};

use oci_client::RegistryOperation;

use super::mirrors::{Endpoint, Purpose};
use super::{Error, ErrorKind, Registry, RegistryOptions, RemoteRef};

/// The endpoints of one pull.
pub struct Sources {
    sources: Vec<Source>,
}

struct Source {
    endpoint: Endpoint,
    options: RegistryOptions,
    state: tokio::sync::Mutex<State>,
    served: Mutex<EndpointReport>,
}

enum State {
    NotTried,
    Connected(Arc<Registry>),
    /// Connecting failed: its kind and message, for the requests that follow.
    Dead(ErrorKind, String),
}

/// What one endpoint served in a pull.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct EndpointReport {
    /// `host/repository` at the endpoint.
    pub endpoint: String,
    /// A mirror, not the registry's own location.
    pub mirror: bool,
    /// Whether it served the manifest.
    pub manifest: bool,
    /// Blobs it served.
    pub blobs: u64,
    /// Bytes downloaded from it.
    pub bytes: u64,
    /// The blobs it served.
    pub digests: Vec<String>,
}

impl Sources {
    /// The endpoints to pull `remote` from, as `options.mirrors` says. A mirror gets
    /// at most one retry of a transient failure (the next endpoint is the better
    /// retry) and only the credentials stored for its own host.
    pub fn new(remote: &RemoteRef, options: &RegistryOptions) -> Result<Sources, Error> {
        let endpoints = options.mirrors.endpoints(remote, Purpose::Pull)?;
        let sources = endpoints
            .into_iter()
            .map(|endpoint| {
                let mut options = options.clone();
                options.insecure |= endpoint.insecure;
                if endpoint.mirror {
                    options.retries = options.retries.min(1);
                    options.env_credentials = false;
                }
                let served = EndpointReport {
                    endpoint: endpoint.name(),
                    mirror: endpoint.mirror,
                    ..EndpointReport::default()
                };
                Source {
                    endpoint,
                    options,
                    state: tokio::sync::Mutex::new(State::NotTried),
                    served: Mutex::new(served),
                }
            })
            .collect();
        Ok(Sources { sources })
    }

    /// How many endpoints there are (at least one: the location).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there are none (never: the location is always there).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The reference at endpoint `i`.
    pub fn remote(&self, i: usize) -> &RemoteRef {
        &self.sources[i].endpoint.remote
    }

    /// Endpoint `i`, connected (probe and credentials) on first use.
    pub async fn registry(&self, i: usize) -> Result<Arc<Registry>, Error> {
        let source = &self.sources[i];
        let mut state = source.state.lock().await;
        match &*state {
            State::Connected(registry) => return Ok(registry.clone()),
            State::Dead(kind, reason) => {
                return Err(Error::Skipped {
                    endpoint: source.endpoint.name(),
                    kind: *kind,
                    reason: reason.clone(),
                })
            }
            State::NotTried => {}
        }
        let remote = &source.endpoint.remote;
        match Registry::connect(remote, &source.options, RegistryOperation::Pull).await {
            Ok(registry) => {
                let registry = Arc::new(registry);
                *state = State::Connected(registry.clone());
                Ok(registry)
            }
            Err(e) => {
                *state = State::Dead(e.kind(), e.to_string());
                Err(e)
            }
        }
    }

    /// Records that endpoint `i` served the manifest.
    pub fn served_manifest(&self, i: usize) {
        if let Ok(mut served) = self.sources[i].served.lock() {
            served.manifest = true;
        }
    }

    /// Records that endpoint `i` served blob `digest` (`bytes` downloaded now).
    pub fn served_blob(&self, i: usize, digest: &crate::digest::Digest, bytes: u64) {
        if let Ok(mut served) = self.sources[i].served.lock() {
            served.blobs += 1;
            served.bytes += bytes;
            served.digests.push(digest.oci());
        }
    }

    /// What each endpoint that served something served, in endpoint order.
    pub fn report(&self) -> Vec<EndpointReport> {
        self.sources
            .iter()
            .filter_map(|s| s.served.lock().ok().map(|r| r.clone()))
            .filter(|r| r.manifest || r.blobs > 0)
            .collect()
    }

    /// Runs `request` against each endpoint in turn (connecting it first) until one
    /// serves it: its index and answer. A failure that is not the endpoint's ends the
    /// request at once; when all fail, the error names each ([`Tries::exhausted`]).
    pub async fn first<T>(
        &self,
        what: impl Into<String>,
        mut request: impl AsyncFnMut(&Arc<Registry>, &RemoteRef) -> Result<T, Error>,
    ) -> Result<(usize, T), Error> {
        let mut tries = self.tries(what);
        for i in 0..self.len() {
            let result = match self.registry(i).await {
                Ok(registry) => request(&registry, self.remote(i)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(answer) => return Ok((i, answer)),
                Err(e) => {
                    tracing::warn!(endpoint = %self.remote(i), error = %e, "endpoint failed");
                    tries.failed(i, e)?
                }
            }
        }
        Err(tries.exhausted())
    }

    /// The record of one request's failures across the endpoints.
    fn tries(&self, what: impl Into<String>) -> Tries<'_> {
        Tries {
            sources: self,
            what: what.into(),
            failed: Vec::new(),
        }
    }
}

/// One request's failures, endpoint by endpoint.
pub struct Tries<'s> {
    sources: &'s Sources,
    what: String,
    failed: Vec<(usize, Error)>,
}

impl Tries<'_> {
    /// Records endpoint `i`'s failure; one that is not the endpoint's (the local
    /// store's, say) ends the request at once.
    pub fn failed(&mut self, i: usize, error: Error) -> Result<(), Error> {
        if !error.is_endpoint_failure() {
            return Err(error);
        }
        self.failed.push((i, error));
        Ok(())
    }

    /// The error once every endpoint failed: the only one's as it is, else the last
    /// one's with the others listed before it.
    pub fn exhausted(mut self) -> Error {
        let Some((_, last)) = self.failed.pop() else {
            return Error::Skipped {
                endpoint: self.what,
                kind: ErrorKind::Unreachable,
                reason: "no endpoint to ask".into(),
            };
        };
        if self.failed.is_empty() {
            return last;
        }
        let tried = self
            .failed
            .into_iter()
            .map(|(i, e)| format!("{}: {}", self.sources.sources[i].endpoint.name(), chain(&e)))
            .collect();
        Error::Endpoints {
            what: self.what,
            tried,
            last: Box::new(last),
        }
    }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
