//! Kinds of failure shared by every module — what a caller branches on and what the
//! command line turns into an exit code — decided from each module's typed errors.
//!
//! Each module keeps its own `thiserror` enum (with the path or digest and the source);
//! this file says which kind each variant is, and [`kind_of`] finds the kind of an
//! error wrapped in context, by walking its causes to the first error of ours.

use std::error::Error as StdError;

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

/// The kind of `error`: that of the first error in its chain that is one of ours
/// (context added on top says nothing about the kind), else [`ErrorKind::Other`].
pub fn kind_of(error: &(dyn StdError + 'static)) -> ErrorKind {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(kind) = own_kind(e) {
            return kind;
        }
        next = e.source();
    }
    ErrorKind::Other
}

fn own_kind(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if e.is::<UsageError>() {
        return Some(ErrorKind::Usage);
    }
    if let Some(e) = e.downcast_ref::<crate::transfer::Error>() {
        return Some(e.kind().into());
    }
    if let Some(e) = e.downcast_ref::<crate::transfer::layout::Error>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::store::Error>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::artifact::LoadError>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::space::Error>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::provide::Error>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::builder::Error>() {
        return Some(e.kind());
    }
    None
}

impl crate::store::Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use crate::store::Error;
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Corrupt { .. } | Error::BadJson { .. } | Error::BadLayer { .. } => {
                ErrorKind::Integrity
            }
            Error::Io { .. } => ErrorKind::Other,
        }
    }
}

impl crate::artifact::LoadError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use crate::artifact::LoadError;
        match self {
            LoadError::Store(e) => e.kind(),
            LoadError::Invalid { .. } => ErrorKind::Integrity,
            LoadError::NotEnvoci { .. } => ErrorKind::Other,
        }
    }
}

impl crate::transfer::layout::Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use crate::transfer::layout::Error;
        match self {
            Error::NoSuchTag { .. } | Error::MissingBlob { .. } => ErrorKind::NotFound,
            Error::NoTag { .. } | Error::Ambiguous { .. } => ErrorKind::Usage,
            Error::Mismatch { .. } | Error::UnsafeEntry { .. } | Error::Truncated { .. } => {
                ErrorKind::Integrity
            }
            Error::NotLayout { .. } | Error::BadIndex { .. } => ErrorKind::Other,
            Error::Store(e) => e.kind(),
        }
    }
}

impl crate::space::Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use crate::space::Error;
        match self {
            Error::Store(e) => e.kind(),
            Error::Load(e) => e.kind(),
            // A layer whose paths would leave the space: hostile or corrupt content.
            Error::Plan(e) if !matches!(e, crate::space::PlanError::TooLong { .. }) => {
                ErrorKind::Integrity
            }
            _ => ErrorKind::Other,
        }
    }
}

impl crate::builder::Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            crate::builder::Error::Platform(_) => ErrorKind::Usage,
            _ => ErrorKind::Other,
        }
    }
}

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

    #[test]
    fn the_kind_is_found_under_context() {
        let inner = crate::store::Error::NotFound("robot".into());
        let wrapped = anyhow::Error::new(inner).context("restoring robot");
        assert_eq!(kind_of(wrapped.as_ref()), ErrorKind::NotFound);
        let plain = anyhow::anyhow!("something else");
        assert_eq!(kind_of(plain.as_ref()), ErrorKind::Other);
    }
}
