//! Identity-token exchange (the Docker token protocol's OAuth2 form): a registry's
//! `WWW-Authenticate: Bearer realm=…,service=…` challenge is read from `/v2/`, and the
//! identity token `docker login` stored (a refresh token) is posted to the realm with
//! the scope one operation needs; the access token that comes back is used as a Bearer
//! token for that operation.

use oci_client::RegistryOperation;

use super::error::{classify_request, read_capped, Context, Failure};
use super::{Error, RemoteRef};

/// How to reach the registry for the exchange (the same choices the client makes).
pub struct Endpoint<'a> {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// An HTTP client with the registry's trust and timeouts.
    pub client: &'a reqwest::Client,
    /// Its timeout, for messages.
    pub timeout: std::time::Duration,
}

/// The most of a token service's answer that is read.
const TOKEN_ANSWER_CAP: usize = 1 << 16;

/// Exchanges `refresh_token` for an access token for `operation` on `reference`'s
/// repository.
pub async fn exchange(
    reference: &RemoteRef,
    endpoint: &Endpoint<'_>,
    refresh_token: &str,
    operation: RegistryOperation,
) -> Result<String, Error> {
    let host = reference.registry().to_string();
    let what = "exchanging the stored identity token";
    let fail = |reason: String| Error::Credentials {
        host: host.clone(),
        reason: format!("{what}: {reason}"),
    };
    let context = Context {
        plain_http: endpoint.scheme == "http",
        timeout: endpoint.timeout,
        ..Context::default()
    };
    let request_failed = |e: reqwest::Error| Error::Registry {
        registry: host.clone(),
        what: what.into(),
        failure: classify_request(&e, &context),
        source: Some(Box::new(e)),
    };
    let params = challenge(endpoint, &host).await.map_err(|e| match e {
        Challenge::Request(e) => request_failed(e),
        Challenge::Unusable(reason) => fail(reason),
    })?;
    let realm = params
        .iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| fail("the challenge names no realm".into()))?;
    check_realm(&realm, endpoint.scheme == "http").map_err(fail)?;
    let actions = match operation {
        RegistryOperation::Pull => "pull",
        RegistryOperation::Push => "pull,push",
    };
    let scope = format!("repository:{}:{actions}", reference.0.repository());
    let mut form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("client_id", "envoci".to_string()),
        ("refresh_token", refresh_token.to_string()),
        ("scope", scope),
    ];
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
        form.push(("service", service.clone()));
    }
    let response = endpoint
        .client
        .post(&realm)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_encode(&form))
        .send()
        .await
        .map_err(request_failed)?;
    let status = response.status();
    let body = read_capped(response, TOKEN_ANSWER_CAP).await;
    if !status.is_success() {
        return Err(Error::Registry {
            registry: host.clone(),
            what: what.into(),
            failure: Failure::Unauthorized {
                anonymous: false,
                detail: format!(
                    "the token service at {realm} refused the stored identity token with {status}; log in again"
                ),
            },
            source: None,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    value["access_token"]
        .as_str()
        .or_else(|| value["token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| fail("the answer holds no access_token".into()))
}

/// Whether credentials may go to the token service at `realm`: over HTTPS always (on
/// whatever host the registry's challenge names, as Docker Hub's and GitLab's do), over
/// plain HTTP only when the user chose plain HTTP for the registry itself.
pub fn check_realm(realm: &str, registry_plain_http: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(realm)
        .map_err(|e| format!("the token realm `{realm}` is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if registry_plain_http => Ok(()),
        "http" => Err(format!(
            "the registry speaks HTTPS but sends credentials to the token service at {realm} over plain HTTP; refusing to send them"
        )),
        other => Err(format!("the token realm `{realm}` uses `{other}`, not HTTPS")),
    }
}

/// The realm of a `Bearer` challenge header, if it is one and names one.
pub fn bearer_realm(header: &str) -> Option<String> {
    bearer_params(header)?
        .into_iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v)
}

/// Why a registry's challenge could not be read.
enum Challenge {
    /// The request failed.
    Request(reqwest::Error),
    /// The answer holds no usable Bearer challenge.
    Unusable(String),
}

/// The parameters of the Bearer challenge `GET /v2/` answers with.
async fn challenge(
    endpoint: &Endpoint<'_>,
    host: &str,
) -> Result<Vec<(String, String)>, Challenge> {
    let response = endpoint
        .client
        .get(format!("{}://{host}/v2/", endpoint.scheme))
        .send()
        .await
        .map_err(Challenge::Request)?;
    let header = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| Challenge::Unusable("the registry asks for no Bearer token".into()))?;
    bearer_params(header)
        .ok_or_else(|| Challenge::Unusable(format!("unexpected challenge `{header}`")))
}

/// The `key="value"` pairs of a `Bearer …` challenge.
fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        params.push((key.trim().to_string(), value.to_string()));
        rest = tail.trim_start_matches([',', ' ']);
    }
    Some(params)
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_encode(pairs: &[(&str, String)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn challenges_parse() {
        let p = super::bearer_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2].1, "repository:a/b:pull");
        assert!(super::bearer_params("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn credentials_go_to_plain_http_realms_only_for_plain_http_registries() {
        assert!(super::check_realm("https://auth.example/token", false).is_ok());
        assert!(super::check_realm("https://auth.example/token", true).is_ok());
        assert!(super::check_realm("http://127.0.0.1:5001/token", true).is_ok());
        let refused = super::check_realm("http://other.example/token", false).unwrap_err();
        assert!(refused.contains("plain HTTP"), "{refused}");
        assert!(super::check_realm("ftp://x/token", false).is_err());
        assert!(super::check_realm("not a url", false).is_err());
    }

    #[test]
    fn forms_encode() {
        let body = super::form_encode(&[("scope", "repository:a/b:pull,push".into())]);
        assert_eq!(body, "scope=repository%3Aa%2Fb%3Apull%2Cpush");
    }
}
