//! `check`: is the store whole and is every space still what restore made it?
//!
//! The quick check reads metadata only: every tagged manifest, catalog and layer blob is
//! present with its size, every indexed CAS file is read-only with the layer mtime and
//! its size, every space matches its recorded state. `verify` rehashes every blob, every
//! CAS file and every space file.

use std::collections::HashSet;
use std::fs;

use rayon::prelude::*;
use serde::Serialize;

use crate::artifact;
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
        let artifact = match artifact::load(store, &tag.name) {
            Ok(a) => a,
            Err(artifact::LoadError::NotEnvoci { .. }) => {
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
            match fs::metadata(store.blob_path(&digest)) {
                Err(_) => problems.push(problem(
                    "blob",
                    digest.oci(),
                    format!("layer of `{}` is missing", tag.name),
                )),
                Ok(m) if m.len() != descriptor.size() => problems.push(problem(
                    "blob",
                    digest.oci(),
                    format!(
                        "layer of `{}` has {} bytes, expected {}",
                        tag.name,
                        m.len(),
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
        let dir = store.root().join("blobs/sha256");
        let names: Vec<String> = fs::read_dir(&dir)
            .map_err(store::Error::io("read", &dir))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        report.blobs = names.len() as u64;
        let bad: Vec<Problem> = names
            .par_iter()
            .filter_map(|name| {
                let ok = Digest::parse(name).ok().and_then(|d| {
                    fs::File::open(dir.join(name))
                        .ok()
                        .and_then(|f| Digest::of_reader(f).ok())
                        .map(|(a, _)| a == d)
                });
                (ok != Some(true)).then(|| Problem {
                    kind: "blob",
                    subject: name.clone(),
                    detail: "content does not match its digest".into(),
                })
            })
            .collect();
        problems.extend(bad);
    } else {
        report.blobs = checked_blobs.len() as u64;
    }

    report.files = cas.len() as u64;
    let cas: Vec<(CasKey, u64)> = cas.into_iter().collect();
    let mut bad_files: Vec<Problem> = cas
        .par_iter()
        .filter_map(|(key, size)| {
            let state = match store.cas_quick_check(key, *size) {
                CasState::Ok if verify => store.cas_verify(key),
                s => s,
            };
            let detail = match state {
                CasState::Ok => return None,
                CasState::Missing => "missing from the file CAS; the next restore re-extracts it",
                CasState::Damaged => "changed in the file CAS (written through a hard link?); the next restore repairs it from its layer",
            };
            Some(Problem { kind: "file", subject: store.cas_path(key).display().to_string(), detail: detail.into() })
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
