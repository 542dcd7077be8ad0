//! `check`: is the store whole and is every space still what restore made it?
//!
//! The quick check reads metadata only: every tagged manifest, catalog and layer blob is
//! present with its size, every indexed CAS file is read-only with the layer mtime and
//! its size, every space matches its recorded state. `verify` rehashes every blob, every
//! CAS file and every space file.

use std::collections::HashSet;

use serde::Serialize;

use crate::catalog;
use crate::digest::Digest;
use crate::space;
use crate::store::{self, CasKey, CasState, Store};

/// One thing found wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// What kind of object: `tag`, `blob`, `file`, `index`, `space`.
    pub kind: &'static str,
    /// Which one (tag, digest, path).
    pub subject: String,
    /// What is wrong, and what to do.
    pub detail: String,
}

/// What `check` looked at and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Tags checked.
    pub tags: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// CAS files checked.
    pub files: u64,
    /// Spaces checked.
    pub spaces: u64,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// Manifests in the layout that are not envoci artifacts (left alone).
    pub foreign: Vec<String>,
    /// Spaces whose directory was deleted; their state was dropped.
    pub forgotten: Vec<String>,
}

/// Checks `store` and its spaces.
pub fn check(store: &Store, verify: bool) -> Result<Report, store::Error> {
    let mut report = Report::default();
    let problem = |kind, subject: String, detail: String| Problem {
        kind,
        subject,
        detail,
    };
    let mut problems = Vec::new();
    let mut cas: HashSet<(CasKey, u64)> = HashSet::new();
    let mut checked_blobs: HashSet<Digest> = HashSet::new();

    for tag in store.tags()? {
        report.tags += 1;
        let artifact = match catalog::load(store, &tag.name) {
            Ok(a) => a,
            Err(catalog::LoadError::NotEnvoci { .. }) => {
                report.foreign.push(tag.name.clone());
                continue;
            }
            Err(e) => {
                problems.push(problem("tag", tag.name.clone(), crate::error_chain(&e)));
                continue;
            }
        };
        checked_blobs.insert(artifact.digest);
        for (digest, descriptor) in artifact.layer_blobs() {
            if !checked_blobs.insert(digest) {
                continue;
            }
            match store.blob_size(&digest) {
                Err(_) => problems.push(problem(
                    "blob",
                    digest.oci(),
                    format!("layer of `{}` is missing", tag.name),
                )),
                Ok(size) if size != descriptor.size() => problems.push(problem(
                    "blob",
                    digest.oci(),
                    format!(
                        "layer of `{}` has {} bytes, expected {}",
                        tag.name,
                        size,
                        descriptor.size()
                    ),
                )),
                Ok(_) => {}
            }
            match store.layer_index(&digest) {
                Ok(Some(index)) => cas.extend(index.files()),
                Ok(None) => {}
                Err(e) => problems.push(problem(
                    "index",
                    digest.oci(),
                    format!(
                        "{}; it is rebuilt by the next restore",
                        crate::error_chain(&e)
                    ),
                )),
            }
        }
    }

    if verify {
        let (count, bad) = store.verify_blobs()?;
        report.blobs = count;
        problems.extend(bad.into_iter().map(|name| Problem {
            kind: "blob",
            subject: name,
            detail: "content does not match its digest".into(),
        }));
    } else {
        report.blobs = checked_blobs.len() as u64;
    }

    report.files = cas.len() as u64;
    let cas: Vec<(CasKey, u64)> = cas.into_iter().collect();
    let mut bad_files: Vec<Problem> = store
        .check_cas_files(&cas, verify)
        .into_iter()
        .filter_map(|(path, state)| {
            let detail = match state {
                CasState::Ok => return None,
                CasState::Missing => "missing from the file CAS; the next restore re-extracts it",
                CasState::Damaged => "changed in the file CAS (written through a hard link?); the next restore repairs it from its layer",
            };
            Some(Problem { kind: "file", subject: path.display().to_string(), detail: detail.into() })
        })
        .collect();
    bad_files.sort_by(|a, b| a.subject.cmp(&b.subject));
    problems.extend(bad_files);

    for state in store.space_states()? {
        report.spaces += 1;
        let subject = state.target.display().to_string();
        if !state.target.exists() {
            // Deleting a space directory is how a user drops it: forget its state.
            store.remove_space_state(&state.target)?;
            report.forgotten.push(subject);
            continue;
        }
        if state.dirty {
            problems.push(problem(
                "space",
                subject.clone(),
                "a restore was interrupted; run restore again to finish it".into(),
            ));
        }
        match space::drift(&state, verify) {
            Ok(d) if d.is_clean() => {}
            Ok(d) => {
                let mut parts = Vec::new();
                for (what, list) in [
                    ("modified", &d.modified),
                    ("missing", &d.missing),
                    ("extra", &d.extra),
                ] {
                    if !list.is_empty() {
                        let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
                        let more = if list.len() > 5 {
                            format!(" and {} more", list.len() - 5)
                        } else {
                            String::new()
                        };
                        parts.push(format!("{what}: {}{more}", shown.join(", ")));
                    }
                }
                problems.push(problem(
                    "space",
                    subject,
                    format!("not pristine ({}); restore repairs it", parts.join("; ")),
                ));
            }
            Err(e) => problems.push(problem("space", subject, crate::error_chain(&e))),
        }
    }
    report.problems = problems;
    Ok(report)
}
