//! Bearer tokens (the Docker token protocol). A registry that answers `GET /v2/` with
//! `401` and `WWW-Authenticate: Bearer realm=…,service=…` wants every request to carry
//! a token from that realm, asked for with the user's password (Basic, `GET`), a stored
//! identity token (the OAuth2 refresh-token form, `POST`), or nothing (anonymous).
//!
//! Tokens are fetched here, not by oci-client, for three reasons: the token service's
//! answer is read through a cap (a hostile one could send gigabytes), credentials go
//! only where [`check_realm`] allows, and a token is renewed before it expires and
//! when the registry refuses it (oci-client keeps using a token it was given).

use std::time::Duration;

use tokio::time::Instant;

use super::credentials::Credential;
use super::error::{by_status, classify_request, read_body, summarize_body, Context, Failure};
use super::Error;

/// The most of a token service's answer that is read.
const TOKEN_ANSWER_CAP: usize = 1 << 16;

/// How long a token lives when the answer does not say (the protocol's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// Where a registry sends clients for tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The token service's URL.
    pub realm: String,
    /// The `service` to name in requests, when the registry gave one.
    pub service: Option<String>,
}

impl Challenge {
    /// The Bearer challenge of a `WWW-Authenticate` header, if it is one with a realm.
    pub fn parse(header: &str) -> Option<Challenge> {
        let params = bearer_params(header)?;
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge {
            realm: get("realm")?,
            service: get("service"),
        })
    }
}

/// One token and which issue it is: a task that saw it refused renews it only if no
/// other task has done so since.
#[derive(Clone, Debug)]
pub struct Token {
    /// The token, for `Authorization: Bearer …`.
    pub value: String,
    /// Counts renewals.
    pub generation: u64,
}

/// A token service for one repository and operation, holding the current token.
pub struct TokenService {
    host: String,
    challenge: Challenge,
    grant: Credential,
    scope: String,
    client: reqwest::Client,
    context: Context,
    current: tokio::sync::Mutex<Issued>,
}

struct Issued {
    token: Token,
    renew_at: Instant,
}

impl TokenService {
    /// Asks `challenge`'s realm for a first token for `scope` (`repository:NAME:pull`)
    /// on registry `host`, refusing a realm that credentials may not go to.
    pub async fn start(
        host: &str,
        challenge: Challenge,
        grant: Credential,
        scope: String,
        client: reqwest::Client,
        context: Context,
    ) -> Result<TokenService, Error> {
        if !matches!(grant, Credential::Anonymous) {
            check_realm(&challenge.realm, context.plain_http).map_err(|reason| {
                Error::Credentials {
                    host: host.to_string(),
                    reason,
                }
            })?;
        }
        let service = TokenService {
            host: host.to_string(),
            challenge,
            grant,
            scope,
            client,
            context,
            current: tokio::sync::Mutex::new(Issued {
                token: Token {
                    value: String::new(),
                    generation: 0,
                },
                renew_at: Instant::now(),
            }),
        };
        service.current().await?;
        Ok(service)
    }

    /// The token to use now, renewed first when most of its life is over.
    pub async fn current(&self) -> Result<Token, Error> {
        let mut current = self.current.lock().await;
        if Instant::now() >= current.renew_at {
            self.renew_locked(&mut current).await?;
        }
        Ok(current.token.clone())
    }

    /// A new token after the registry refused `refused`; the one another task got in
    /// the meantime, if one did.
    pub async fn renew(&self, refused: &Token) -> Result<Token, Error> {
        let mut current = self.current.lock().await;
        if current.token.generation == refused.generation {
            self.renew_locked(&mut current).await?;
        }
        Ok(current.token.clone())
    }

    async fn renew_locked(&self, current: &mut Issued) -> Result<(), Error> {
        let asked = Instant::now();
        let (value, lifetime) = self.fetch().await?;
        current.token = Token {
            value,
            generation: current.token.generation + 1,
        };
        // Renewed once nine tenths of its life are over, so a request never carries a
        // token that expires on the way.
        current.renew_at = asked + lifetime.mul_f64(0.9);
        Ok(())
    }

    /// One request to the token service, within the timeout as a whole.
    async fn fetch(&self) -> Result<(String, Duration), Error> {
        let timeout = self.context.timeout;
        match tokio::time::timeout(timeout, self.fetch_once()).await {
            Ok(result) => result,
            Err(_) => Err(self.error(Failure::TimedOut { after: timeout }, None)),
        }
    }

    async fn fetch_once(&self) -> Result<(String, Duration), Error> {
        let request = match &self.grant {
            Credential::IdentityToken(refresh_token) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", "envoci".to_string()),
                    ("refresh_token", refresh_token.clone()),
                    ("scope", self.scope.clone()),
                ];
                if let Some(service) = &self.challenge.service {
                    form.push(("service", service.clone()));
                }
                self.client
                    .post(&self.challenge.realm)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form_encode(&form))
            }
            Credential::Basic(..) | Credential::Anonymous => {
                let mut query = vec![("scope", self.scope.clone())];
                if let Some(service) = &self.challenge.service {
                    query.push(("service", service.clone()));
                }
                let url = format!("{}?{}", self.challenge.realm, form_encode(&query));
                let request = self.client.get(url);
                match &self.grant {
                    Credential::Basic(user, password) => request.basic_auth(user, Some(password)),
                    _ => request,
                }
            }
        };
        let method = if matches!(self.grant, Credential::IdentityToken(_)) {
            "POST"
        } else {
            "GET"
        };
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(|e| {
            super::registry::log_request(method, &self.challenge.realm, None, started);
            let failure = classify_request(&e, &self.context);
            self.error(failure, Some(Box::new(e)))
        })?;
        let status = response.status();
        super::registry::log_request(
            method,
            &self.challenge.realm,
            Some(status.as_u16()),
            started,
        );
        let (body, cut) = read_body(response, TOKEN_ANSWER_CAP + 1).await;
        if let Some(e) = cut {
            let failure = classify_request(&e, &self.context);
            return Err(self.error(failure, Some(Box::new(e))));
        }
        if !status.is_success() {
            return Err(self.refused(status.as_u16(), &body));
        }
        if body.len() > TOKEN_ANSWER_CAP {
            let detail = format!(
                "its answer is larger than {TOKEN_ANSWER_CAP} bytes; a token is a few kilobytes"
            );
            let failure = Failure::Server {
                status: None,
                detail,
            };
            return Err(self.error(failure, None));
        }
        parse_answer(&body).map_err(|detail| {
            let failure = Failure::Server {
                status: None,
                detail,
            };
            self.error(failure, None)
        })
    }

    /// The error for a token service that answered `status`: refused credentials are
    /// an authentication failure, anything else the service's own.
    fn refused(&self, status: u16, body: &[u8]) -> Error {
        let realm = &self.challenge.realm;
        let detail = match &self.grant {
            Credential::IdentityToken(_) => format!(
                "the token service at {realm} refused the stored identity token with {status}; log in again"
            ),
            _ => format!(
                "the token service at {realm} answered {status}: {}",
                summarize_body(&String::from_utf8_lossy(body))
            ),
        };
        let failure = match status {
            401 | 403 => Failure::Unauthorized {
                anonymous: matches!(self.grant, Credential::Anonymous),
                detail,
            },
            _ => by_status(status, detail, &self.context),
        };
        self.error(failure, None)
    }

    fn error(&self, failure: Failure, source: Option<super::error::BoxError>) -> Error {
        Error::Registry {
            registry: self.host.clone(),
            what: format!(
                "asking the token service at {} for a token",
                self.challenge.realm
            ),
            failure,
            source,
        }
    }
}

/// The token and its lifetime from a token service's JSON answer (`token`, or the
/// OAuth2 `access_token`; `expires_in` seconds).
fn parse_answer(body: &[u8]) -> Result<(String, Duration), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("its answer is not a token: {e}"))?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("its answer holds no token")?;
    if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err("its token holds characters a header cannot carry".into());
    }
    let lifetime = answer
        .expires_in
        .filter(|&s| s > 0)
        .map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(s.min(24 * 3600)));
    Ok((token, lifetime))
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
        let c =
            super::Challenge::parse(r#"Bearer realm="https://a.example/t",service="r""#).unwrap();
        assert_eq!(c.realm, "https://a.example/t");
        assert_eq!(c.service.as_deref(), Some("r"));
        assert!(super::Challenge::parse(r#"Bearer service="r""#).is_none());
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
    fn token_answers_parse_with_their_lifetime() {
        let (token, life) = super::parse_answer(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((token.as_str(), life.as_secs()), ("abc", 300));
        let (token, life) = super::parse_answer(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!((token.as_str(), life), ("xyz", super::DEFAULT_LIFETIME));
        assert!(super::parse_answer(br#"{"token":""}"#).is_err());
        assert!(super::parse_answer(b"{\"token\":\"a\\r\\nX: y\"}").is_err());
        assert!(super::parse_answer(b"<html>").is_err());
    }

    #[test]
    fn forms_encode() {
        let body = super::form_encode(&[("scope", "repository:a/b:pull,push".into())]);
        assert_eq!(body, "scope=repository%3Aa%2Fb%3Apull%2Cpush");
    }
}
