//! The environment spec (`conda.yaml`, the environment.yml dialect) and its blueprint.
//!
//! A spec names `channels`, conda `dependencies` (match specs), an optional `pip:`
//! sub-list of requirement lines, and `variables`. Its **blueprint** is the sha256 of a
//! canonical form plus the target platform: whitespace, comments, key order and the
//! spelling of a match spec (`python>=3.11` vs `python >=3.11`) do not change it; a
//! changed constraint, channel, pip line or variable does. The `name` key is not part of
//! it (it changes nothing in the environment); it only suggests a tag.
//!
//! Channels stay as written (a relative path stays relative), so the same `conda.yaml`
//! checked out at two places has one blueprint — the key a CI cache needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rattler_conda_types::{MatchSpec, ParseStrictness};
use serde::Serialize;

use crate::digest::Digest;

/// Why a spec cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The spec file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or not of the expected shape.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The spec file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A key or entry has the wrong meaning (a bad match spec, no dependencies, ...).
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// 1-based line of the offending entry (0 when it cannot be found).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A parsed environment spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Where it was read from; relative channel paths and pip options resolve here.
    pub dir: PathBuf,
    /// The optional `name:`.
    pub name: Option<String>,
    /// Channels in priority order, as written.
    pub channels: Vec<String>,
    /// Conda dependencies, parsed.
    pub dependencies: Vec<MatchSpec>,
    /// `pip:` requirement lines (options such as `--find-links DIR` included), in order.
    pub pip: Vec<String>,
    /// `variables:` set in the environment on activation.
    pub variables: BTreeMap<String, String>,
    /// Keys the spec has that envoci does not know (warned about, then ignored).
    pub unknown_keys: Vec<String>,
}

/// The canonical form hashed into the blueprint and stored in the catalog.
#[derive(Clone, Debug, Serialize)]
pub struct Canonical {
    /// Channels as written, in order.
    pub channels: Vec<String>,
    /// Normalised match specs, sorted (their order means nothing to the solver).
    pub dependencies: Vec<String>,
    /// pip lines in order (order matters to pip's options).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    /// Variables, sorted by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

impl Spec {
    /// Reads and parses `path`.
    pub fn from_path(path: &Path) -> Result<Spec, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        Spec::parse(&text, path, dir)
    }

    /// Parses spec text; `path` names it in errors, `dir` is where it lives.
    pub fn parse(text: &str, path: &Path, dir: PathBuf) -> Result<Spec, Error> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            Error::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let at = Source { text, path };
        let map = match value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => return Err(at.invalid("", "the spec is empty")),
            _ => {
                return Err(at.invalid(
                    "",
                    "expected a mapping with `channels:` and `dependencies:`",
                ))
            }
        };
        let mut spec = Spec {
            dir,
            name: None,
            channels: Vec::new(),
            dependencies: Vec::new(),
            pip: Vec::new(),
            variables: BTreeMap::new(),
            unknown_keys: Vec::new(),
        };
        for (key, value) in map {
            let Some(key) = key.as_str().map(str::to_string) else {
                return Err(at.invalid("", format!("a key is not a string: {key:?}")));
            };
            match key.as_str() {
                "name" => {
                    let name = scalar(&value);
                    spec.name =
                        Some(name.ok_or_else(|| at.invalid("name:", "`name` must be a string"))?);
                }
                "channels" => {
                    spec.channels = string_list(&value).ok_or_else(|| {
                        at.invalid(
                            "channels:",
                            "`channels` must be a list of names, URLs or paths",
                        )
                    })?;
                }
                "dependencies" => {
                    (spec.dependencies, spec.pip) = dependencies(value, &at)?;
                }
                "variables" => spec.variables = variables(value, &at)?,
                _ => spec.unknown_keys.push(key),
            }
        }
        if spec.dependencies.is_empty() {
            return Err(at.invalid("dependencies:", "the spec has no conda dependencies"));
        }
        if spec.channels.is_empty() {
            return Err(at.invalid(
                "channels:",
                "the spec names no channels (add `channels: [...]`)",
            ));
        }
        Ok(spec)
    }

    /// The canonical form (what the blueprint hashes).
    pub fn canonical(&self) -> Canonical {
        let mut dependencies: Vec<String> =
            self.dependencies.iter().map(|d| d.to_string()).collect();
        dependencies.sort();
        dependencies.dedup();
        Canonical {
            channels: self.channels.clone(),
            dependencies,
            pip: self.pip.clone(),
            variables: self.variables.clone(),
        }
    }

    /// The blueprint for `platform`: lowercase hex sha256 of the canonical form plus the
    /// platform, as canonical JSON.
    pub fn blueprint(&self, platform: &str) -> String {
        let doc = serde_json::json!({ "platform": platform, "spec": self.canonical() });
        let bytes = crate::json::to_canonical_vec(&doc).unwrap_or_default();
        Digest::of(&bytes).hex()
    }
}

/// True when `reference` names a spec file rather than a store or registry reference.
pub fn looks_like_spec(reference: &str) -> bool {
    reference.ends_with(".yaml") || reference.ends_with(".yml")
}

fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(value: &serde_yaml::Value) -> Option<Vec<String>> {
    match value {
        serde_yaml::Value::Sequence(items) => items.iter().map(scalar).collect(),
        _ => None,
    }
}

/// The 1-based line where `needle` first appears (0 if nowhere, 1 for an empty needle).
fn line_of(text: &str, needle: &str) -> usize {
    if needle.is_empty() {
        return 1;
    }
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

/// The spec's text and file, for errors that name the line of what is wrong.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    /// An error at the first line holding `needle`.
    fn invalid(&self, needle: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, needle),
            message: message.into(),
        }
    }
}

/// The `dependencies:` list: conda match specs (each naming one package), and the
/// lines of a `pip:` sub-list.
fn dependencies(
    value: serde_yaml::Value,
    at: &Source<'_>,
) -> Result<(Vec<MatchSpec>, Vec<String>), Error> {
    let serde_yaml::Value::Sequence(items) = value else {
        return Err(at.invalid("dependencies:", "`dependencies` must be a list"));
    };
    let mut conda = Vec::new();
    let mut pip = Vec::new();
    for item in items {
        if let serde_yaml::Value::Mapping(m) = &item {
            let lines = m.get("pip").filter(|_| m.len() == 1).ok_or_else(|| {
                at.invalid(
                    "dependencies:",
                    "a mapping in `dependencies` may only be `pip: [...]`",
                )
            })?;
            pip.extend(
                string_list(lines).ok_or_else(|| {
                    at.invalid("pip:", "`pip` must be a list of requirement lines")
                })?,
            );
            continue;
        }
        let raw = scalar(&item).ok_or_else(|| {
            at.invalid(
                "dependencies:",
                format!("a dependency is not a string: {item:?}"),
            )
        })?;
        let parsed = MatchSpec::from_str(&raw, ParseStrictness::Lenient)
            .map_err(|e| at.invalid(&raw, format!("invalid dependency `{raw}`: {e}")))?;
        if !matches!(
            parsed.name,
            rattler_conda_types::PackageNameMatcher::Exact(_)
        ) {
            return Err(at.invalid(
                &raw,
                format!("dependency `{raw}` must name one package (no globs)"),
            ));
        }
        conda.push(parsed);
    }
    Ok((conda, pip))
}

/// The `variables:` mapping of names to plain values.
fn variables(value: serde_yaml::Value, at: &Source<'_>) -> Result<BTreeMap<String, String>, Error> {
    let serde_yaml::Value::Mapping(m) = value else {
        return Err(at.invalid(
            "variables:",
            "`variables` must be a mapping of names to values",
        ));
    };
    let mut variables = BTreeMap::new();
    for (k, v) in m {
        let (Some(k), Some(v)) = (scalar(&k), scalar(&v)) else {
            return Err(at.invalid("variables:", "`variables` must map names to plain values"));
        };
        variables.insert(k, v);
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, Error> {
        Spec::parse(text, Path::new("conda.yaml"), PathBuf::from("/x"))
    }

    const BASE: &str = "name: demo\nchannels:\n  - ./channel\ndependencies:\n  - python >=3.11\n  - greet\n  - pip:\n    - --no-index\n    - tiny==1.0\nvariables:\n  MODE: fast\n";

    #[test]
    fn blueprint_ignores_comments_order_whitespace_and_spelling() {
        let a = parse(BASE).unwrap();
        let b = parse("# a comment\nvariables: {MODE: fast}\ndependencies: [greet, 'python>=3.11', {pip: [--no-index, tiny==1.0]}]\nchannels: [./channel]   # same\nname: other\n").unwrap();
        assert_eq!(a.blueprint("linux-64"), b.blueprint("linux-64"));
        assert_eq!(a.blueprint("linux-64").len(), 64);
    }

    #[test]
    fn blueprint_changes_with_meaning() {
        let base = parse(BASE).unwrap().blueprint("linux-64");
        for changed in [
            BASE.replace(">=3.11", ">=3.12"),
            BASE.replace("./channel", "./other"),
            BASE.replace("tiny==1.0", "tiny==1.1"),
            BASE.replace("fast", "slow"),
        ] {
            assert_ne!(
                parse(&changed).unwrap().blueprint("linux-64"),
                base,
                "{changed}"
            );
        }
        assert_ne!(parse(BASE).unwrap().blueprint("osx-arm64"), base);
    }

    #[test]
    fn invalid_yaml_names_line_and_column() {
        let err = parse("channels: [a\ndependencies:\n  - x: [\n").unwrap_err();
        let Error::Syntax { line, column, .. } = &err else {
            panic!("{err}")
        };
        assert!(*line >= 1 && *column >= 1, "{err}");
        assert!(err.to_string().starts_with("conda.yaml:"), "{err}");
    }

    #[test]
    fn bad_match_spec_points_at_its_line() {
        let err = parse("channels: [c]\ndependencies:\n  - ok\n  - 'bad >=<= 1'\n").unwrap_err();
        let Error::Invalid { line, message, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, 4, "{err}");
        assert!(message.contains("bad >=<= 1"), "{err}");
    }

    #[test]
    fn unknown_keys_are_kept_for_a_warning() {
        let spec = parse("channels: [c]\ndependencies: [x]\nprefix: /opt/x\n").unwrap();
        assert_eq!(spec.unknown_keys, ["prefix"]);
    }

    #[test]
    fn missing_dependencies_or_channels_are_errors() {
        assert!(parse("channels: [c]\n").is_err());
        assert!(parse("dependencies: [x]\n").is_err());
        assert!(parse("").is_err());
        assert!(parse("- a\n").is_err());
    }
}
