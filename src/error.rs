//! Kinds of failure shared by every module — what a caller branches on and what the
//! command line turns into an exit code — decided from each module's typed errors.
//!
//! Each module keeps its own `thiserror` enum (with the path or digest and the source)
//! and says, next to it, which kind each variant is (`kind()`); the command line finds
//! the kind of an error wrapped in context by walking its causes to the first of ours.

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// A malformed command line, reference or option.
    Usage,
    /// No such environment, tag, repository, digest or file.
    NotFound,
    /// Credentials missing, wrong, or not allowed to do this.
    Auth,
    /// The registry is unreachable or timed out.
    Network,
    /// Content that does not match its digest or size, or cannot be what it says.
    Integrity,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The process exit code for this kind (documented in the README and `--help`).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::Usage => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Auth => 4,
            ErrorKind::Network => 5,
            ErrorKind::Integrity => 6,
        }
    }

    /// The kind's name in `--json` errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Auth => "auth",
            ErrorKind::Network => "network",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Other => "other",
        }
    }
}

/// A command line, reference or option that cannot mean anything (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let kinds = [
            ErrorKind::Usage,
            ErrorKind::NotFound,
            ErrorKind::Auth,
            ErrorKind::Network,
            ErrorKind::Integrity,
            ErrorKind::Other,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
    }
}
