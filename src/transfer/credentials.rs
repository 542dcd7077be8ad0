//! Registry credentials, found where users already keep them: `ENVOCI_REGISTRY_USER` /
//! `ENVOCI_REGISTRY_PASSWORD`, then Docker's `config.json` (`$DOCKER_CONFIG` or
//! `~/.docker`): an `auths` entry or a credential helper (`credHelpers`, `credsStore`),
//! else anonymous. `envoci login` writes the same file format, so docker, skopeo,
//! oras and envoci share one login.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{json, Value};

use super::Error;
use crate::fsutil::write_atomic;

/// Docker's client configuration file.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("config.json"),
        _ => dirs::home_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".docker/config.json"),
    }
}

fn read_config() -> Result<Value, Error> {
    let path = docker_config_path();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Credentials {
            host: path.display().to_string(),
            reason: format!("not valid JSON: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(Error::Credentials {
            host: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// What the credential sources hold for a registry.
#[derive(Clone)]
pub enum Credential {
    /// Nothing: requests go without credentials.
    Anonymous,
    /// A user and password (HTTP Basic, to the registry or its token service).
    Basic(String, String),
    /// An identity (OAuth2 refresh) token, as `docker login` stores for some registries
    /// (ACR, for one): exchanged for access tokens by [`super::token::TokenService`].
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    /// Says which kind, never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic(user, _) => write!(f, "Basic({user}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The credentials to use for `host`; `ENVOCI_REGISTRY_USER`/`_PASSWORD` count only
/// when `env` (they name no host). Blocking (may run a credential helper).
pub fn resolve(host: &str, env: bool) -> Result<Credential, Error> {
    if let (true, Ok(user), Ok(password)) = (
        env,
        std::env::var("ENVOCI_REGISTRY_USER"),
        std::env::var("ENVOCI_REGISTRY_PASSWORD"),
    ) {
        if !user.is_empty() {
            return Ok(Credential::Basic(user, password));
        }
    }
    let config = read_config()?;
    for key in [
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ] {
        let Some(entry) = config["auths"].get(&key) else {
            continue;
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Credential::IdentityToken(token.into()));
        }
        if let Some(encoded) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::Credentials {
                    host: host.into(),
                    reason: format!(
                        "the `auth` entry in {} is not base64 of user:password",
                        docker_config_path().display()
                    ),
                })?;
            if let Some((user, password)) = decoded.split_once(':') {
                return Ok(Credential::Basic(user.into(), password.into()));
            }
        }
        if let (Some(user), Some(password)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Credential::Basic(user.into(), password.into()));
        }
    }
    let helper = config["credHelpers"]
        .get(host)
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str);
    if let Some(helper) = helper {
        return from_helper(helper, host);
    }
    Ok(Credential::Anonymous)
}

fn from_helper(helper: &str, host: &str) -> Result<Credential, Error> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| Error::Credentials {
        host: host.into(),
        reason: format!("{program}: {reason}"),
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if message.contains("not found") {
            return Ok(Credential::Anonymous);
        }
        return Err(fail(message));
    }
    let value: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    let user = value["Username"].as_str().unwrap_or_default();
    let secret = value["Secret"].as_str().unwrap_or_default();
    if user == "<token>" {
        return Ok(Credential::IdentityToken(secret.into()));
    }
    Ok(Credential::Basic(user.into(), secret.into()))
}

/// Stores a login for `host` in Docker's config file (mode 0600), keeping everything
/// else in it.
pub fn store_login(host: &str, user: &str, password: &str) -> Result<PathBuf, Error> {
    let mut config = read_config()?;
    if !config.is_object() {
        config = json!({});
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    config["auths"][host] = json!({ "auth": encoded });
    write_config(&config)
}

/// Removes the login for `host`. Returns false if there was none.
pub fn remove_login(host: &str) -> Result<bool, Error> {
    let mut config = read_config()?;
    let removed = config["auths"]
        .as_object_mut()
        .is_some_and(|auths| auths.remove(host).is_some());
    if removed {
        write_config(&config)?;
    }
    Ok(removed)
}

fn write_config(config: &Value) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    // A config.json that is a link (dotfiles kept elsewhere) stays one: the file it
    // points to is replaced.
    let link = docker_config_path();
    let path = std::fs::canonicalize(&link).unwrap_or(link);
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| Error::Credentials {
        host: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let fail = |e: std::io::Error| Error::Credentials {
        host: path.display().to_string(),
        reason: e.to_string(),
    };
    write_atomic(&path, &bytes).map_err(fail)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(path)
}
