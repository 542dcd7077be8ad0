//! OCI image layouts outside the store: a directory (`oci:DIR[:TAG]`) or a tar of one
//! (`oci-archive:FILE[:TAG]`) — how environments cross an air gap, and the form skopeo,
//! oras and crane read and write.
//!
//! Reading ([`Layout`], [`import()`]) trusts nothing in the files: every blob copied into
//! the store is checked against its name while it streams (unless the caller trusts
//! the source), an archive may only hold plain files and directories (no `..`, no
//! absolute names, no links), and a truncated archive is noticed before anything is
//! committed. Blobs are staged in the store's scratch area and committed only once all
//! of them are in; tags come last. Writing ([`export()`]) streams blobs as they are —
//! already compressed, so never recompressed — to a temporary name that is renamed
//! into place, so nobody sees half an archive; a directory's `index.json` is replaced
//! last.

//!
//! `read.rs` opens a layout of either form without trusting it ([`Layout`]), `import.rs`
//! copies its artifacts into the store ([`import()`]), `export.rs` writes store
//! artifacts as a layout ([`export()`]).

mod export;
mod import;
mod read;

use std::path::Path;

use crate::store;

pub use export::{export, Export};
pub use import::{import, peek, ImportOptions, Imported, Select};
pub use read::{Layout, Span};

/// Annotation of an incremental bundle's `index.json`: the base it leaves out
/// (`name@sha256:...`), named when an import lacks the base's blobs.
pub const ANNOTATION_SINCE: &str = "io.envoci.since";

/// The `oci-layout` file every layout starts with.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The most a layout's `index.json` or a manifest in it may hold (as registries cap
/// manifests): a bigger one is refused, not read into memory.
const DOCUMENT_CAP: u64 = 4 << 20;

/// Why reading or writing a layout failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or file is not an OCI image layout.
    #[error("{location} is not an OCI image layout: {reason}")]
    NotLayout {
        /// The layout's path.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// `index.json` does not parse or names nothing usable.
    #[error("{location}: index.json is not valid: {reason}")]
    BadIndex {
        /// The layout's path.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The tag asked for is not in the layout.
    #[error("{location} has no `{tag}` (tags present: {present})")]
    NoSuchTag {
        /// The layout's path.
        location: String,
        /// The tag.
        tag: String,
        /// The tags it has.
        present: String,
    },
    /// No tag given for an artifact to write, and it has none of its own.
    #[error("{location}: `{local}` has no tag to take along; name one as `…:TAG`")]
    NoTag {
        /// The layout's location.
        location: String,
        /// The artifact (a digest, or a name that is no valid tag).
        local: String,
    },
    /// No tag given, and the layout holds several artifacts.
    #[error("{location} holds several environments ({present}): name one as `…:TAG`")]
    Ambiguous {
        /// The layout's path.
        location: String,
        /// The tags it has.
        present: String,
    },
    /// A blob a manifest needs is neither in the layout nor in the store.
    #[error("{location} lacks blob {digest} and the store does not have it either{}", match base {
        Some(base) => format!(": this is an incremental bundle made on top of `{base}`; import or pull that first"),
        None => String::new(),
    })]
    MissingBlob {
        /// The layout's path.
        location: String,
        /// The blob.
        digest: String,
        /// The base an incremental bundle was made against.
        base: Option<String>,
    },
    /// A blob whose content does not match its name.
    #[error("blob {digest} in {location} does not match its name (its content is {actual}, {size} bytes); nothing was imported")]
    Mismatch {
        /// The layout's path.
        location: String,
        /// The blob's name.
        digest: String,
        /// What the content hashes to.
        actual: String,
        /// How many bytes it has.
        size: u64,
    },
    /// An archive entry that could write outside the layout, or a kind of entry a
    /// layout never has.
    #[error("{location}: refusing entry `{entry}`: {reason}; nothing was imported")]
    UnsafeEntry {
        /// The archive.
        location: String,
        /// The entry's name.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The archive ends before its entries do.
    #[error("{location} is truncated or damaged: {reason}; nothing was imported")]
    Truncated {
        /// The archive.
        location: String,
        /// What was found.
        reason: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::NoSuchTag { .. } | Error::MissingBlob { .. } => crate::ErrorKind::NotFound,
            Error::NoTag { .. } | Error::Ambiguous { .. } => crate::ErrorKind::Usage,
            Error::Mismatch { .. } | Error::UnsafeEntry { .. } | Error::Truncated { .. } => {
                crate::ErrorKind::Integrity
            }
            Error::NotLayout { .. } | Error::BadIndex { .. } => crate::ErrorKind::Other,
            Error::Store(e) => e.kind(),
        }
    }
}

/// The form of a layout to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A directory (merged with what is there).
    Dir,
    /// A tar archive (replaced whole).
    Archive,
}

impl Form {
    /// An archive when the path names a `.tar` file or an existing file; else a
    /// directory.
    pub fn guess(path: &Path) -> Form {
        if path.extension().is_some_and(|e| e == "tar") || path.is_file() {
            Form::Archive
        } else {
            Form::Dir
        }
    }
}
