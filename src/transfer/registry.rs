//! The registry client: oci-client plus protocol choice (plain HTTP for loopback or
//! `--insecure`), credentials from the environment, and one semaphore bounding parallel
//! transfers.

use std::sync::Arc;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use tokio::sync::Semaphore;

use super::credentials::Credential;
use super::{Error, RemoteRef};

/// How to talk to registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Parallel blob transfers.
    pub jobs: usize,
    /// Use plain HTTP for every registry (loopback registries always use it).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust (a registry with its own CA); implies TLS
    /// even on loopback.
    pub ca_file: Option<std::path::PathBuf>,
    /// User and password to use instead of looking them up (`envoci login`).
    pub credentials: Option<(String, String)>,
    /// How often a request failing for a transient reason (connection, timeout, 429,
    /// 5xx) is tried again, with exponential backoff.
    pub retries: u32,
    /// How long a connection may stay silent (connecting, or between two reads) before
    /// the request counts as failed (transient: retried, and a download resumed).
    pub timeout: std::time::Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            jobs: 8,
            insecure: false,
            ca_file: None,
            credentials: None,
            retries: 3,
            timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// A client for one registry.
pub struct Registry {
    /// The oci-client client.
    pub client: Client,
    /// Credentials used for every request.
    pub auth: RegistryAuth,
    /// Bounds parallel blob transfers.
    pub limit: Arc<Semaphore>,
    /// The registry host, for messages.
    pub host: String,
    /// Retries of transient failures.
    pub retries: u32,
}

/// Whether a failure may go away by itself: the connection, a timeout, 429 or 5xx.
pub fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_body()
                || r.is_request()
                || r.status()
                    .is_some_and(|s| s.as_u16() == 429 || s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::IoError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => {
            let text = envelope.to_string().to_lowercase();
            text.contains("toomanyrequests") || text.contains("unavailable")
        }
        _ => false,
    }
}

/// Delay before retry number `attempt` (0-based): 250 ms doubling, with ±25% jitter.
pub fn backoff(attempt: u32) -> std::time::Duration {
    let base = 250u64 << attempt.min(6);
    let jitter = crate::store::rand_u64() % (base / 2 + 1);
    std::time::Duration::from_millis(base - base / 4 + jitter)
}

/// Loopback registries speak plain HTTP (as `docker` and `skopeo` assume too).
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

impl Registry {
    /// A client for the registry of `reference`, authenticated for `operation`.
    pub async fn connect(
        reference: &RemoteRef,
        options: &RegistryOptions,
        operation: RegistryOperation,
    ) -> Result<Registry, Error> {
        let host = reference.registry().to_string();
        // Plain HTTP for loopback (unless a CA file says it speaks TLS) or --insecure.
        let plain = options.insecure || (is_loopback(&host) && options.ca_file.is_none());
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![host.clone()])
        } else {
            ClientProtocol::Https
        };
        let mut extra_root_certificates = Vec::new();
        let mut ca_pem = None;
        if let Some(ca) = &options.ca_file {
            let data = std::fs::read(ca).map_err(|e| Error::Credentials {
                host: host.clone(),
                reason: format!("cannot read CA file {}: {e}", ca.display()),
            })?;
            ca_pem = Some(data.clone());
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            max_concurrent_upload: options.jobs.max(1),
            max_concurrent_download: options.jobs.max(1),
            extra_root_certificates,
            read_timeout: Some(options.timeout),
            connect_timeout: Some(options.timeout),
            ..Default::default()
        };
        let client = Client::new(config);
        // A credential helper is a program: run it off the async runtime.
        let auth = match &options.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => {
                let lookup = host.clone();
                let credential =
                    tokio::task::spawn_blocking(move || super::credentials::resolve(&lookup))
                        .await
                        .map_err(|e| Error::Credentials {
                            host: host.clone(),
                            reason: e.to_string(),
                        })??;
                match credential {
                    Credential::Auth(auth) => auth,
                    Credential::IdentityToken(token) => {
                        let endpoint = super::token::Endpoint {
                            scheme: if plain { "http" } else { "https" },
                            ca_pem: ca_pem.as_deref(),
                            timeout: options.timeout,
                        };
                        let access =
                            super::token::exchange(reference, &endpoint, &token, operation).await?;
                        RegistryAuth::Bearer(access)
                    }
                }
            }
        };
        let registry = Registry {
            client,
            auth,
            limit: Arc::new(Semaphore::new(options.jobs.max(1))),
            host,
            retries: options.retries,
        };
        // Authenticate before any blob call, so parallel calls share one token.
        registry
            .retry(|| {
                registry
                    .client
                    .auth(&reference.0, &registry.auth, operation)
            })
            .await
            .map_err(|e| registry.error("authentication", crate::error_chain(&e)))?;
        Ok(registry)
    }

    /// Checks credentials: connects and asks for a manifest that need not exist; only a
    /// refusal of access is an error.
    pub async fn check_login(probe: &RemoteRef, options: &RegistryOptions) -> Result<(), Error> {
        let registry = Registry::connect(probe, options, RegistryOperation::Pull).await?;
        match registry
            .client
            .pull_manifest_raw(
                &probe.0,
                &registry.auth,
                &["application/vnd.oci.image.manifest.v1+json"],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match registry.error("checking the login", e) {
                err @ Error::Unauthorized { .. } => Err(err),
                _ => Ok(()), // not found and the like: the credentials were accepted
            },
        }
    }

    /// Runs `op`, trying again after a transient failure (up to `retries` times, with
    /// exponential backoff and jitter). Returns the last error otherwise.
    pub async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if attempt < self.retries && is_transient(&e) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// An error from the registry, with what was being done; refusals of access become
    /// [`Error::Unauthorized`] with a hint.
    pub fn error(&self, what: impl Into<String>, e: impl std::fmt::Display) -> Error {
        let reason = e.to_string();
        let lower = reason.to_lowercase();
        if [
            "unauthorized",
            "not authorized",
            "authentication failure",
            "401",
            "denied",
        ]
        .iter()
        .any(|k| lower.contains(k))
        {
            return Error::Unauthorized {
                registry: self.host.clone(),
                anonymous: matches!(self.auth, RegistryAuth::Anonymous),
                reason,
            };
        }
        let hint = if lower.contains("code: 405") {
            " (the registry does not accept this here: is it read-only, or a pull-through mirror?)"
        } else if lower.contains("code: 413") {
            " (the registry refuses a request this large: its proxy or its upload limit)"
        } else {
            ""
        };
        Error::Registry {
            registry: self.host.clone(),
            what: what.into(),
            reason: format!("{}{hint}", reason.trim_end()),
        }
    }
}
