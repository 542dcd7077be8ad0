//! The build prefix: where a build installs its packages, and how long its path is.
//!
//! A binary file holds its package's placeholder as a C string; installing rewrites it
//! to the prefix's path padded with NULs, so the path may be no longer than any binary
//! placeholder of the packages: conda-build's `--prefix-length` (255 bytes by default,
//! 80 in older packages) or, in very old ones, `/opt/anaconda1anaconda2anaconda3` (32).
//! [`Limit::of_packages`] finds the shortest one in the packages' `paths.json` (or the
//! `has_prefix` of packages without one); [`BuildPrefix::create`] makes a prefix exactly
//! that long, or [`PLACEHOLDER`]'s 255 bytes when nothing is shorter. As long as
//! possible, because a binary file no package declares keeps a placeholder of the
//! prefix's length, which is then the longest path it can be restored to.
//!
//! The prefix is `build-v1/<bp-tag>`, padded with `_` to the length, or cut when the
//! length is shorter: cut names may be shared by two blueprints, so whoever builds
//! under a name holds that name's lock, and removes what killed builds left under it.

use std::fs;
use std::path::{Path, PathBuf};

use rattler_conda_types::package::{FileMode, PathsJson};

use super::Error;
use crate::fsutil::{remove_any, FileLock};
use crate::relocate::PLACEHOLDER;
use crate::store::Store;

/// The shortest binary placeholder of the packages to install: what limits the length
/// of the build prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The package (`name-version-build`).
    pub package: String,
    /// A file of the package holding that placeholder.
    pub path: String,
    /// The placeholder's length in bytes.
    pub len: usize,
}

impl Limit {
    /// The shortest binary placeholder of `packages` (each named, with its extracted
    /// directory in the package cache); `None` when none has a binary placeholder.
    pub fn of_packages(packages: &[(String, PathBuf)]) -> Result<Option<Limit>, Error> {
        let mut shortest: Option<Limit> = None;
        for (package, dir) in packages {
            let paths =
                PathsJson::from_package_directory_with_deprecated_fallback(dir).map_err(|e| {
                    Error::Io(
                        format!("read the file list of {package} in {}", dir.display()),
                        e,
                    )
                })?;
            if let Some((path, len)) = shortest_binary(&paths) {
                if shortest.as_ref().is_none_or(|s| len < s.len) {
                    shortest = Some(Limit {
                        package: package.clone(),
                        path: path.to_string_lossy().into_owned(),
                        len,
                    });
                }
            }
        }
        Ok(shortest)
    }
}

/// The shortest binary placeholder of one package and a file holding it. An empty
/// placeholder is skipped: the installer has nothing to replace.
fn shortest_binary(paths: &PathsJson) -> Option<(&Path, usize)> {
    paths
        .paths
        .iter()
        .filter_map(|entry| {
            let p = entry.prefix_placeholder.as_ref()?;
            let binary = p.file_mode == FileMode::Binary && !p.placeholder.is_empty();
            binary.then_some((entry.relative_path.as_path(), p.placeholder.len()))
        })
        .min_by_key(|(_, len)| *len)
}

/// The build prefix's length for `limit`: as long as the shortest binary placeholder,
/// at most [`PLACEHOLDER`]'s 255 bytes.
pub fn prefix_len(limit: Option<&Limit>) -> usize {
    limit.map_or(PLACEHOLDER.len(), |l| l.len.min(PLACEHOLDER.len()))
}

/// `builds/<name>`, exactly `len` bytes long: the name is `bp_tag` cut or padded with
/// `_` (a tag never ends with `_`). Also returns the name's unpadded stem; `None` when
/// not even a one-byte name fits.
fn prefix_path(builds: &Path, bp_tag: &str, len: usize) -> Option<(PathBuf, String)> {
    let room = len
        .checked_sub(builds.as_os_str().len() + 1)
        .filter(|r| *r > 0)?;
    let stem = bp_tag.get(..room.min(bp_tag.len()))?;
    let name = format!("{stem}{}", "_".repeat(room - stem.len()));
    Some((builds.join(name), stem.to_string()))
}

/// The build prefix of one blueprint (see the module docs), removed on drop.
pub struct BuildPrefix {
    path: PathBuf,
    _lock: FileLock,
}

impl BuildPrefix {
    /// Makes the build prefix of `bp_tag` for packages whose shortest binary
    /// placeholder is `limit`, removing what a killed build left under its name.
    pub fn create(store: &Store, bp_tag: &str, limit: Option<&Limit>) -> Result<Self, Error> {
        let builds = store.build_dir()?;
        let len = prefix_len(limit);
        let Some((path, stem)) = prefix_path(&builds, bp_tag, len) else {
            return Err(too_short(&builds, len, limit));
        };
        let lock = store.lock_build_prefix(&stem)?;
        remove_stale(&builds, &stem)?;
        fs::create_dir_all(&path)
            .map_err(|e| Error::Io(format!("create {}", path.display()), e))?;
        Ok(BuildPrefix { path, _lock: lock })
    }

    /// The prefix's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn path_len(&self) -> usize {
        self.path.as_os_str().len()
    }
}

impl Drop for BuildPrefix {
    fn drop(&mut self) {
        let _ = remove_any(&self.path);
    }
}

/// The error for a store whose path leaves no room for a prefix of `len` bytes.
fn too_short(builds: &Path, len: usize, limit: Option<&Limit>) -> Error {
    let store = crate::fsutil::parent_of(builds).to_path_buf();
    // Below the store: `/build-v1`, a slash and a one-byte name.
    let below = builds.as_os_str().len() - store.as_os_str().len() + 2;
    let store_limit = len.saturating_sub(below);
    match limit.filter(|l| l.len < PLACEHOLDER.len()) {
        Some(l) => Error::PlaceholderTooShort {
            package: l.package.clone(),
            path: l.path.clone(),
            placeholder: l.len,
            store,
            needed: builds.as_os_str().len() + 2,
            store_limit,
        },
        None => Error::StoreTooDeep {
            path: store,
            limit: store_limit,
        },
    }
}

/// Removes the build prefixes named `stem` and padding: no build is using them, since
/// it would hold the lock the caller holds.
fn remove_stale(builds: &Path, stem: &str) -> Result<(), Error> {
    let Ok(entries) = fs::read_dir(builds) else {
        return Ok(()); // no build ever ran in this store
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.trim_end_matches('_') == stem)
        {
            let path = entry.path();
            remove_any(&path).map_err(|e| Error::Io(format!("remove {}", path.display()), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rattler_conda_types::package::{PathType, PathsEntry, PrefixPlaceholder};

    fn entry(path: &str, placeholder: Option<(FileMode, &str)>) -> PathsEntry {
        PathsEntry {
            relative_path: path.into(),
            no_link: false,
            path_type: PathType::HardLink,
            prefix_placeholder: placeholder.map(|(file_mode, p)| PrefixPlaceholder {
                file_mode,
                placeholder: p.into(),
                experimental_offsets: None,
            }),
            sha256: None,
            size_in_bytes: None,
        }
    }

    #[test]
    fn only_binary_placeholders_limit_the_prefix() {
        let anaconda = "/opt/anaconda1anaconda2anaconda3";
        let long = "/x".repeat(100);
        // Entries, then the shortest binary placeholder's file and length.
        type Case<'a> = (&'a [PathsEntry], Option<(&'a str, usize)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[entry("a", None)], None),
            (&[entry("a", Some((FileMode::Text, anaconda)))], None),
            (&[entry("a", Some((FileMode::Binary, "")))], None),
            (
                &[
                    entry("text", Some((FileMode::Text, anaconda))),
                    entry("long", Some((FileMode::Binary, &long))),
                    entry("short", Some((FileMode::Binary, anaconda))),
                ],
                Some(("short", 32)),
            ),
        ];
        for (entries, want) in cases {
            let paths = PathsJson {
                paths: entries.to_vec(),
                paths_version: 1,
            };
            let got = shortest_binary(&paths).map(|(p, n)| (p.to_str().unwrap(), n));
            assert_eq!(got, *want, "{entries:?}");
        }
    }

    #[test]
    fn the_prefix_is_as_long_as_the_shortest_placeholder_up_to_255() {
        let limit = |len| Limit {
            package: "p-1-0".into(),
            path: "bin/p".into(),
            len,
        };
        assert_eq!(prefix_len(None), 255);
        assert_eq!(prefix_len(Some(&limit(80))), 80);
        assert_eq!(prefix_len(Some(&limit(32))), 32);
        assert_eq!(prefix_len(Some(&limit(400))), 255);
    }

    #[test]
    fn prefix_paths_are_cut_or_padded_to_the_length() {
        let builds = Path::new("/s/build-v1"); // 11 bytes
        let tag = "bp-0123abcd-linux-64"; // 20 bytes
        let cases: &[(usize, Option<(&str, &str)>)] = &[
            (40, Some(("/s/build-v1/bp-0123abcd-linux-64________", tag))),
            (32, Some(("/s/build-v1/bp-0123abcd-linux-64", tag))),
            (20, Some(("/s/build-v1/bp-0123a", "bp-0123a"))),
            (13, Some(("/s/build-v1/b", "b"))),
            (12, None),
            (3, None),
        ];
        for (len, want) in cases {
            let got = prefix_path(builds, tag, *len);
            let want = want.map(|(p, s)| (PathBuf::from(p), s.to_string()));
            assert_eq!(got, want, "length {len}");
            if let Some((path, _)) = got {
                assert_eq!(path.as_os_str().len(), *len);
            }
        }
    }

    #[test]
    fn a_store_too_long_for_the_placeholder_names_the_package_and_the_lengths() {
        let builds = Path::new("/a/rather/long/store/build-v1"); // 29 bytes
        let limit = Limit {
            package: "old-1.0-0".into(),
            path: "bin/old".into(),
            len: 30,
        };
        let err = too_short(builds, 30, Some(&limit));
        let text = err.to_string();
        for needle in [
            "old-1.0-0",
            "bin/old",
            "30-byte",
            "/a/rather/long/store",
            "31",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert!(matches!(
            err,
            Error::PlaceholderTooShort {
                store_limit: 19,
                ..
            }
        ));
        let err = too_short(builds, 255, None);
        assert!(
            matches!(err, Error::StoreTooDeep { limit: 244, .. }),
            "{err}"
        );
    }
}
