//! The registry client: oci-client plus what envoci needs around it — protocol choice
//! (plain HTTP for loopback or `--insecure`), credentials from where users keep them,
//! a probe of `GET /v2/` that tells "not a registry" and "unreachable" apart from
//! everything else and says how the registry wants to be authenticated, Bearer tokens
//! fetched and renewed by [`super::token`], and retries of transient failures. Every failure leaves here as a
//! typed [`Error`] (see [`super::error`]). Parallelism is not bounded here: pulls and
//! pushes run their blobs through one bounded stream (`--jobs`).

use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::credentials::Credential;
use super::error::{
    by_envelope, by_status, classify, classify_request, read_body, read_capped, summarize_body,
    BoxError, Context, Failure,
};
use super::token::{Challenge, Token, TokenService};
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
    pub timeout: Duration,
    /// The slowest average download a blob may take, in bytes per second: past
    /// `timeout` plus the blob's size at this speed, the attempt fails as timed out
    /// (a server trickling bytes never times out otherwise).
    pub min_speed: u64,
    /// Where references are fetched from and sent to (registries.conf, `--mirror`).
    pub mirrors: std::sync::Arc<super::mirrors::Mirrors>,
    /// Whether `ENVOCI_REGISTRY_USER`/`_PASSWORD` may be used: for the registry a
    /// reference names, not for its mirrors (whose credentials are only those stored
    /// for their own host).
    pub env_credentials: bool,
    /// Where download progress goes.
    pub progress: crate::progress::Reporter,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            jobs: 8,
            insecure: false,
            ca_file: None,
            credentials: None,
            retries: 3,
            timeout: Duration::from_secs(30),
            min_speed: 16 << 10,
            mirrors: Default::default(),
            env_credentials: true,
            progress: Default::default(),
        }
    }
}

/// A client for one registry, authenticated for one repository and operation.
pub struct Registry {
    /// The oci-client client.
    pub client: Client,
    /// The registry host, for messages.
    pub host: String,
    /// Retries of transient failures.
    pub retries: u32,
    /// The slowest average blob download tolerated, in bytes per second.
    pub min_speed: u64,
    /// Where download progress goes.
    pub progress: crate::progress::Reporter,
    /// How requests are made, for classifying their failures.
    pub context: Context,
    /// The HTTP client for the requests made here rather than by oci-client (the
    /// probe, tokens, documents read through a size cap), with the registry's trust.
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
    /// What the client was authenticated for (a renewed token is handed to it for these).
    reference: Reference,
    operation: RegistryOperation,
    /// How requests authenticate.
    access: Access,
    /// The token generation oci-client holds.
    client_generation: std::sync::atomic::AtomicU64,
}

/// How requests to a registry authenticate.
enum Access {
    /// They carry no credentials.
    Anonymous,
    /// HTTP Basic (the header's value).
    Basic(String),
    /// Bearer tokens from the registry's token service.
    Tokens(Box<TokenService>),
}

/// How a registry answered `GET /v2/`.
enum Probe {
    /// 200: no credentials wanted.
    Open,
    /// 401 with a Bearer challenge: tokens from its realm.
    Bearer(Challenge),
    /// 401 with another challenge (Basic).
    Challenged,
}

/// Logs one request envoci made itself (`--debug`): method, URL, status and time —
/// never a header, so never a credential.
pub fn log_request(method: &str, url: &str, status: Option<u16>, started: std::time::Instant) {
    let ms = started.elapsed().as_millis() as u64;
    match status {
        Some(status) => tracing::debug!(method, url, status, ms, "request"),
        None => tracing::debug!(method, url, ms, "request failed"),
    }
}

/// What envoci calls itself in requests (registries log it; mirrors and caches can
/// tell clients apart).
pub const USER_AGENT: &str = concat!("envoci/", env!("CARGO_PKG_VERSION"));

/// The most a manifest or index may hold: the distribution spec's limit, which
/// registries enforce on push. A bigger document is refused, not read into memory.
pub const DOCUMENT_CAP: usize = 4 << 20;

/// Delay before retry number `attempt` (0-based): 250 ms doubling, with ±25% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 250u64 << attempt.min(6);
    let jitter = crate::store::rand_u64() % (base / 2 + 1);
    Duration::from_millis(base - base / 4 + jitter)
}

/// Whether `host` (with its port) is a loopback address; loopback registries speak
/// plain HTTP (as `docker` and `skopeo` assume too).
pub fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// How to reach one registry: scheme, trusted CA, timeout.
struct Endpoint {
    host: String,
    plain_http: bool,
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
}

impl Endpoint {
    fn new(host: &str, options: &RegistryOptions) -> Result<Endpoint, Error> {
        // Plain HTTP for loopback (unless a CA file says it speaks TLS) or --insecure.
        let plain_http = options.insecure || (is_loopback(host) && options.ca_file.is_none());
        let ca_pem = match &options.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| Error::CaFile {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Endpoint {
            host: host.to_string(),
            plain_http,
            ca_pem,
            timeout: options.timeout,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }

    fn client_config(&self, jobs: usize) -> ClientConfig {
        let protocol = if self.plain_http {
            ClientProtocol::HttpsExcept(vec![self.host.clone()])
        } else {
            ClientProtocol::Https
        };
        let extra_root_certificates = self
            .ca_pem
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect();
        ClientConfig {
            protocol,
            use_monolithic_push: true,
            max_concurrent_upload: jobs.max(1),
            max_concurrent_download: jobs.max(1),
            extra_root_certificates,
            read_timeout: Some(self.timeout),
            connect_timeout: Some(self.timeout),
            user_agent: USER_AGENT,
            ..Default::default()
        }
    }

    /// A plain HTTP client with the same trust and timeouts, for the probe and the
    /// token exchange.
    fn http_client(&self) -> Result<reqwest::Client, BoxError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(self.timeout)
            .read_timeout(self.timeout);
        if let Some(pem) = &self.ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(builder.build()?)
    }
}

impl Registry {
    /// A client for the registry of `reference`, authenticated for `operation`: the
    /// registry is probed first, so an address where no registry answers fails here,
    /// saying what answers instead; a registry that wants tokens gets the first one here.
    pub async fn connect(
        reference: &RemoteRef,
        options: &RegistryOptions,
        operation: RegistryOperation,
    ) -> Result<Registry, Error> {
        let host = reference.registry().to_string();
        let endpoint = Endpoint::new(&host, options)?;
        let http = endpoint.http_client().map_err(|e| Error::Registry {
            registry: host.clone(),
            what: "setting up the HTTP client".into(),
            failure: Failure::Server {
                status: None,
                detail: String::new(),
            },
            source: Some(e),
        })?;
        let credential = credentials(reference, options).await?;
        let mut registry = Registry {
            client: Client::new(endpoint.client_config(options.jobs)),
            context: Context {
                anonymous: matches!(credential, Credential::Anonymous),
                plain_http: endpoint.plain_http,
                loopback: is_loopback(reference.registry()),
                timeout: options.timeout,
            },
            host,
            retries: options.retries,
            min_speed: options.min_speed.max(1),
            progress: options.progress.clone(),
            http,
            scheme: endpoint.scheme(),
            reference: reference.0.clone(),
            operation,
            access: Access::Anonymous,
            client_generation: std::sync::atomic::AtomicU64::new(0),
        };
        let probe = registry.probe().await?;
        registry.access = registry.access(probe, credential).await?;
        Ok(registry)
    }

    /// How to authenticate, given how the registry answered the probe. Like docker, no
    /// credentials go to a registry that asks for none.
    async fn access(&self, probe: Probe, credential: Credential) -> Result<Access, Error> {
        match (probe, credential) {
            (Probe::Bearer(challenge), credential) => {
                let actions = match self.operation {
                    RegistryOperation::Pull => "pull",
                    RegistryOperation::Push => "pull,push",
                };
                let scope = format!("repository:{}:{actions}", self.reference.repository());
                let tokens = TokenService::start(
                    &self.host,
                    challenge,
                    credential,
                    scope,
                    self.http.clone(),
                    self.context,
                )
                .await?;
                Ok(Access::Tokens(Box::new(tokens)))
            }
            (Probe::Challenged, Credential::Basic(user, password)) => {
                let auth = RegistryAuth::Basic(user.clone(), password.clone());
                self.retry("authenticating", || {
                    self.client.auth(&self.reference, &auth, self.operation)
                })
                .await?;
                use base64::Engine as _;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Ok(Access::Basic(format!("Basic {encoded}")))
            }
            (Probe::Challenged, Credential::IdentityToken(_)) => Err(Error::Credentials {
                host: self.host.clone(),
                reason:
                    "an identity token is stored for it, but the registry asks for no Bearer token"
                        .into(),
            }),
            (Probe::Open, _) | (Probe::Challenged, Credential::Anonymous) => Ok(Access::Anonymous),
        }
    }

    /// `GET /v2/`: a registry answers 200, or 401 when it wants credentials; anything
    /// else is not one. Retried like every request.
    async fn probe(&self) -> Result<Probe, Error> {
        let url = format!("{}://{}/v2/", self.scheme, self.host);
        let response = self
            .attempts("connecting", self.retries, |_token| {
                self.send("GET", &url, self.http.get(&url))
            })
            .await?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(Probe::Open);
        }
        if status == 401 {
            let challenge = response
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .find_map(Challenge::parse);
            return Ok(challenge.map_or(Probe::Challenged, Probe::Bearer));
        }
        let body = read_capped(response, 4096).await;
        let failure = Failure::NotRegistry {
            status,
            detail: summarize_body(&body),
            plain_http: self.context.plain_http,
            loopback: self.context.loopback,
        };
        Err(self.error("connecting", failure, None))
    }

    /// Sends one request envoci makes itself (not oci-client), logged; a transport
    /// failure comes back classified.
    async fn send(
        &self,
        method: &str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, (Failure, Option<BoxError>)> {
        let started = std::time::Instant::now();
        match request.send().await {
            Ok(response) => {
                log_request(method, url, Some(response.status().as_u16()), started);
                Ok(response)
            }
            Err(e) => {
                log_request(method, url, None, started);
                let failure = classify_request(&e, &self.context);
                Err((failure, Some(Box::new(e) as BoxError)))
            }
        }
    }

    /// The token to send now, when the registry wants tokens; oci-client is handed it
    /// when it is new.
    async fn token(&self) -> Result<Option<Token>, Error> {
        let Access::Tokens(tokens) = &self.access else {
            return Ok(None);
        };
        let token = tokens.current().await?;
        self.hand_to_client(&token).await?;
        Ok(Some(token))
    }

    /// A new token after the registry refused `refused`.
    async fn renew(&self, refused: &Token) -> Result<(), Error> {
        let Access::Tokens(tokens) = &self.access else {
            return Ok(());
        };
        let token = tokens.renew(refused).await?;
        self.hand_to_client(&token).await
    }

    /// Makes oci-client use `token` for this repository and operation (no request).
    async fn hand_to_client(&self, token: &Token) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.client_generation.load(Ordering::Acquire) == token.generation {
            return Ok(());
        }
        let auth = RegistryAuth::Bearer(token.value.clone());
        self.client
            .auth(&self.reference, &auth, self.operation)
            .await
            .map_err(|e| self.fail("authenticating", e))?;
        self.client_generation
            .fetch_max(token.generation, Ordering::AcqRel);
        Ok(())
    }

    /// The `Authorization` header for the requests made here, if any.
    fn authorization(&self, token: Option<&Token>) -> Option<String> {
        match (&self.access, token) {
            (_, Some(token)) => Some(format!("Bearer {}", token.value)),
            (Access::Basic(header), None) => Some(header.clone()),
            _ => None,
        }
    }

    /// The manifest or index `reference` names, read through [`DOCUMENT_CAP`] (retried
    /// like every request; "not found" is an error of kind `NotFound`).
    pub async fn manifest(
        &self,
        reference: &RemoteRef,
        accept: &[&str],
    ) -> Result<bytes::Bytes, Error> {
        let name = reference
            .0
            .digest()
            .or(reference.0.tag())
            .unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{name}",
            self.scheme,
            self.host,
            reference.0.repository()
        );
        let what = format!("pulling the manifest of {reference}");
        self.attempts(&what, self.retries, |token| {
            self.manifest_once(&url, accept, token)
        })
        .await
    }

    /// One manifest request: the body of a 200 up to the cap; any other answer
    /// classified by its status and, for a 4xx, the OCI error code in its body.
    async fn manifest_once(
        &self,
        url: &str,
        accept: &[&str],
        token: Option<Token>,
    ) -> Result<bytes::Bytes, (Failure, Option<BoxError>)> {
        let mut request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, accept.join(", "));
        if let Some(authorization) = self.authorization(token.as_ref()) {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = self.send("GET", url, request).await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = read_capped(response, 4096).await;
            let failure = match serde_json::from_str(&body) {
                Ok(envelope) if (400..500).contains(&status) && status != 401 => {
                    by_envelope(&envelope, &self.context)
                }
                _ => by_status(status, summarize_body(&body), &self.context),
            };
            return Err((failure, None));
        }
        let bytes = match read_body(response, DOCUMENT_CAP + 1).await {
            (bytes, None) => bytes::Bytes::from(bytes),
            (_, Some(e)) => {
                let failure = classify_request(&e, &self.context);
                return Err((failure, Some(Box::new(e) as BoxError)));
            }
        };
        if bytes.len() > DOCUMENT_CAP {
            let detail = format!(
                "the document is larger than {DOCUMENT_CAP} bytes, the most the distribution spec allows"
            );
            return Err((
                Failure::Server {
                    status: None,
                    detail,
                },
                None,
            ));
        }
        Ok(bytes)
    }

    /// How long downloading `bytes` may take at the slowest speed tolerated: the
    /// timeout plus their time at `min_speed`.
    pub fn download_budget(&self, bytes: u64) -> Duration {
        self.context.timeout + Duration::from_secs_f64(bytes as f64 / self.min_speed as f64)
    }

    /// Checks credentials: connects and asks for a manifest that need not exist; only a
    /// refusal of access is an error.
    pub async fn check_login(probe: &RemoteRef, options: &RegistryOptions) -> Result<(), Error> {
        let registry = Registry::connect(probe, options, RegistryOperation::Pull).await?;
        match registry
            .manifest(probe, &[crate::artifact::MANIFEST_MEDIA_TYPE])
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == super::ErrorKind::Unauthorized => Err(err),
            Err(_) => Ok(()), // not found and the like: the credentials were accepted
        }
    }

    /// Runs `op` (an oci-client call) as [`Registry::attempts`] does, with up to
    /// `retries` tries after transient failures; a failure is named as `what`.
    pub async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.oci(what, self.retries, op).await
    }

    /// Runs `op` (an oci-client call) once, but for a token the registry refuses,
    /// which is renewed and the call made again.
    pub async fn once<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.oci(what, 0, op).await
    }

    /// An oci-client call through [`Registry::attempts`], its error classified.
    async fn oci<T, F, Fut>(&self, what: &str, retries: u32, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.attempts(what, retries, |_token| {
            let call = op();
            async move { call.await.map_err(|e| self.failure_of(e)) }
        })
        .await
    }

    /// Runs `op` with the current token (renewed first when it is about to expire):
    /// a refusal of that token renews it and tries again once, a transient failure
    /// waits (exponential backoff with jitter) and tries again up to `retries` times.
    async fn attempts<T, F, Fut>(&self, what: &str, retries: u32, mut op: F) -> Result<T, Error>
    where
        F: FnMut(Option<Token>) -> Fut,
        Fut: std::future::Future<Output = Result<T, (Failure, Option<BoxError>)>>,
    {
        let (mut attempt, mut renewed) = (0, false);
        loop {
            let token = self.token().await?;
            match op(token.clone()).await {
                Ok(value) => return Ok(value),
                Err((Failure::Unauthorized { .. }, _)) if !renewed && token.is_some() => {
                    tracing::info!(registry = %self.host, what, "the registry refused the token; renewing it");
                    if let Some(token) = &token {
                        self.renew(token).await?;
                    }
                    renewed = true;
                }
                Err((failure, _)) if attempt < retries && failure.is_transient() => {
                    let wait = backoff(attempt);
                    tracing::info!(registry = %self.host, what, %failure, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err((failure, source)) => return Err(self.error(what, failure, source)),
            }
        }
    }

    /// The failure an oci-client error stands for, with the error as its cause unless
    /// it would only repeat a response body.
    fn failure_of(&self, e: OciDistributionError) -> (Failure, Option<BoxError>) {
        let failure = classify(&e, &self.context);
        let source: Option<BoxError> = match e {
            OciDistributionError::ServerError { .. }
            | OciDistributionError::RegistryError { .. }
            | OciDistributionError::AuthenticationFailure(_) => None,
            other => Some(Box::new(other)),
        };
        (failure, source)
    }

    /// The error for an oci-client failure while doing `what`.
    pub fn fail(&self, what: impl Into<String>, e: OciDistributionError) -> Error {
        let (failure, source) = self.failure_of(e);
        self.error(what, failure, source)
    }

    /// The error for a document from the registry that is not what the protocol says.
    pub fn malformed(&self, what: impl Into<String>, e: &dyn std::fmt::Display) -> Error {
        let failure = Failure::Server {
            status: None,
            detail: summarize_body(&e.to_string()),
        };
        self.error(what, failure, None)
    }

    /// An error of this registry while doing `what`.
    pub fn error(
        &self,
        what: impl Into<String>,
        failure: Failure,
        source: Option<BoxError>,
    ) -> Error {
        Error::Registry {
            registry: self.host.clone(),
            what: what.into(),
            failure,
            source,
        }
    }
}

/// The credentials for `reference`: given ones, else looked up (a credential helper is
/// a program: run off the async runtime).
async fn credentials(
    reference: &RemoteRef,
    options: &RegistryOptions,
) -> Result<Credential, Error> {
    if let Some((user, password)) = &options.credentials {
        return Ok(Credential::Basic(user.clone(), password.clone()));
    }
    let host = reference.registry().to_string();
    let (lookup, env) = (host.clone(), options.env_credentials);
    tokio::task::spawn_blocking(move || super::credentials::resolve(&lookup, env))
        .await
        .map_err(|e| Error::Credentials {
            host,
            reason: e.to_string(),
        })?
}
