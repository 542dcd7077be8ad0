//! The environment spec (`conda.yaml`, the environment.yml dialect) and its blueprint.
//!
//! A spec names `channels`, conda `dependencies` (match specs), an optional `pip:`
//! sub-list of requirement lines, and `variables`. Its **blueprint** is the sha256 of a
//! canonical form plus the target platform: whitespace, comments, key order and the
//! spelling of a match spec (`python>=3.11` vs `python >=3.11`) do not change it; a
//! changed constraint, channel, pip line or variable does. The `name` key is not part of
//! it (it changes nothing in the environment); the built environment is tagged with it.
//!
//! Every error names the file, line and column of the mistake ([`parse`] says how), and
//! carries the spec's unknown keys, since a misspelled key (`channel:`) is often the
//! cause of the failure reported.
//!
//! Channels stay as written (a relative path stays relative), so the same `conda.yaml`
//! checked out at two places has one blueprint — the key a CI cache needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod parse;

use rattler_conda_types::MatchSpec;
use serde::Serialize;

use crate::digest::Digest;
pub use parse::Location;
use parse::{Dependency, Target};

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
    /// The file is not valid YAML.
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
    /// A key or entry has the wrong shape or meaning (a bad match spec, no channels, ...).
    #[error("{}:{}:{}: {message}{}", path.display(), at.line, at.column, warnings(path, unknown))]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// Where the problem is (for a missing key: where it belongs).
        at: Location,
        /// What is wrong.
        message: String,
        /// The unknown keys of the spec (often the cause: `channel:` for `channels:`).
        unknown: Vec<UnknownKey>,
    },
}

/// A top-level key envoci does not know (warned about, then ignored).
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownKey {
    /// The key as written.
    pub key: String,
    /// Where it is.
    pub at: Location,
    /// What it was probably meant to be (`did you mean `channels`?`).
    pub hint: Option<String>,
}

impl UnknownKey {
    /// `conda.yaml:2:1: unknown key `channel` ignored; did you mean `channels`?`
    pub fn describe(&self, path: &Path) -> String {
        let hint = self
            .hint
            .as_ref()
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        format!(
            "{}:{}:{}: unknown key `{}` ignored{hint}",
            path.display(),
            self.at.line,
            self.at.column,
            self.key
        )
    }
}

/// The unknown keys as warning lines under an error.
fn warnings(path: &Path, unknown: &[UnknownKey]) -> String {
    unknown
        .iter()
        .map(|k| format!("\n  warning: {}", k.describe(path)))
        .collect()
}

/// A parsed environment spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Where it was read from; relative channel paths and pip options resolve here.
    pub dir: PathBuf,
    /// The optional `name:` (a valid tag: the built environment is tagged with it).
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
    pub unknown_keys: Vec<UnknownKey>,
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
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| Error::Syntax {
            path: path.to_path_buf(),
            line: Location::of(&e).map_or(1, |l| l.line),
            column: Location::of(&e).map_or(1, |l| l.column),
            message: parse::message_of(&e),
        })?;
        let at = Source {
            text,
            path,
            unknown: unknown_keys(&value, text),
        };
        if value.is_null() {
            return Err(at.invalid(Location::START, "the spec is empty"));
        }
        let raw: parse::Raw = serde_yaml::from_str(text).map_err(|e| {
            at.invalid(
                Location::of(&e).unwrap_or(Location::START),
                parse::message_of(&e),
            )
        })?;
        let (dependencies, pip) = at.dependencies(raw.dependencies)?;
        let channels = raw.channels.unwrap_or_default();
        if channels.is_empty() {
            return Err(at.missing(
                "channels",
                "the spec names no channels (add `channels: [...]`)",
            ));
        }
        Ok(Spec {
            dir,
            name: raw.name,
            channels,
            dependencies,
            pip,
            variables: raw.variables,
            unknown_keys: at.unknown,
        })
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
        self.blueprint_pinned(platform, &[])
    }

    /// The blueprint of a build from a lock whose pinned pip set is `pip` (one line per
    /// distribution, as the build installs it): the same as [`Spec::blueprint`] when it
    /// is empty, else the pins are hashed too.
    pub fn blueprint_pinned(&self, platform: &str, pip: &[String]) -> String {
        let mut doc = serde_json::json!({ "platform": platform, "spec": self.canonical() });
        if !pip.is_empty() {
            doc["pip_pins"] = serde_json::json!(pip);
        }
        let bytes = crate::json::to_canonical_vec(&doc).unwrap_or_default();
        Digest::of(&bytes).hex()
    }
}

/// True when `reference` names a spec file rather than a store or registry reference.
pub fn looks_like_spec(reference: &str) -> bool {
    reference.ends_with(".yaml") || reference.ends_with(".yml")
}

/// The top-level keys of `value` that envoci does not know, with their places.
fn unknown_keys(value: &serde_yaml::Value, text: &str) -> Vec<UnknownKey> {
    let serde_yaml::Value::Mapping(map) = value else {
        return Vec::new();
    };
    map.keys()
        .filter_map(|k| k.as_str())
        .filter(|k| !parse::KNOWN_KEYS.contains(k))
        .map(|key| UnknownKey {
            key: key.to_string(),
            at: parse::locate(text, Target::Key(key)).unwrap_or(Location::START),
            hint: parse::suggestion(key),
        })
        .collect()
}

/// The spec's text and file, for errors that name the place of what is wrong.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
    unknown: Vec<UnknownKey>,
}

impl Source<'_> {
    /// An error at `at`.
    fn invalid(&self, at: Location, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.to_path_buf(),
            at,
            message: message.into(),
            unknown: self.unknown.clone(),
        }
    }

    /// An error for the missing or empty `key`: at the unknown key that was probably
    /// meant to be it, else at the key itself (empty), else at the first key.
    fn missing(&self, key: &str, message: &str) -> Error {
        let meant = format!("did you mean `{key}`?");
        let at = self
            .unknown
            .iter()
            .find(|k| k.hint.as_deref() == Some(meant.as_str()))
            .map(|k| k.at)
            .or_else(|| parse::locate(self.text, Target::Key(key)))
            .or_else(|| parse::locate(self.text, Target::FirstKey))
            .unwrap_or(Location::START);
        self.invalid(at, message)
    }

    /// The conda match specs and pip lines of `dependencies:`, which must name at least
    /// one conda package.
    fn dependencies(
        &self,
        entries: Option<Vec<Dependency>>,
    ) -> Result<(Vec<MatchSpec>, Vec<String>), Error> {
        let mut conda = Vec::new();
        let mut pip = Vec::new();
        for entry in entries.unwrap_or_default() {
            match entry {
                Dependency::Conda(spec) => conda.push(*spec),
                Dependency::Pip(lines) => pip.extend(lines),
                Dependency::Joined(joined) => return Err(self.joined(&joined)),
            }
        }
        if conda.is_empty() {
            return Err(self.missing("dependencies", "the spec has no conda dependencies"));
        }
        Ok((conda, pip))
    }

    /// The error for two list items YAML joined into `joined`: at the line of the
    /// second `-`, the first deeper-indented `- ` line after the scalar's start.
    fn joined(&self, joined: &str) -> Error {
        let start = parse::locate(self.text, Target::Scalar(joined)).unwrap_or(Location::START);
        let second = self
            .text
            .lines()
            .enumerate()
            .skip(start.line)
            .find_map(|(i, line)| {
                let body = line.trim_start();
                body.starts_with('-').then(|| Location {
                    line: i + 1,
                    column: line.len() - body.len() + 1,
                })
            })
            .unwrap_or(start);
        self.invalid(
            second,
            format!(
                "this `-` is indented deeper than the item above it (line {}), so YAML read \
                 both as one dependency, `{joined}`; indent every `-` of a list alike",
                start.line
            ),
        )
    }
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
    fn pinned_pip_changes_the_blueprint_only_when_there_are_pins() {
        let spec = parse(BASE).unwrap();
        assert_eq!(
            spec.blueprint_pinned("linux-64", &[]),
            spec.blueprint("linux-64")
        );
        let one = spec.blueprint_pinned("linux-64", &["tiny==1.0 --hash=sha256:00".into()]);
        let other = spec.blueprint_pinned("linux-64", &["tiny==1.0 --hash=sha256:01".into()]);
        assert_ne!(one, spec.blueprint("linux-64"));
        assert_ne!(one, other);
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

    /// The place and message of an `Invalid` error (panics on any other).
    fn invalid(text: &str) -> (Location, String, Error) {
        let err = parse(text).unwrap_err();
        match &err {
            Error::Invalid { at, message, .. } => (*at, message.clone(), err),
            _ => panic!("not an Invalid error: {err}"),
        }
    }

    fn at(line: usize, column: usize) -> Location {
        Location { line, column }
    }

    #[test]
    fn bad_match_spec_points_at_its_line() {
        let (place, message, err) =
            invalid("channels: [c]\ndependencies:\n  - ok\n  - 'bad >=<= 1'\n");
        assert_eq!(place, at(4, 5), "{err}");
        assert!(message.contains("bad >=<= 1"), "{err}");
        assert!(err.to_string().starts_with("conda.yaml:4:5: "), "{err}");
    }

    #[test]
    fn a_dependency_indented_deeper_points_at_its_dash() {
        let (place, message, err) =
            invalid("channels: [c]\ndependencies:\n  - python\n   - greet\n  - pip\n");
        assert_eq!(place, at(4, 4), "{err}");
        assert!(message.contains("`python - greet`"), "{err}");
        assert!(message.contains("line 3"), "{err}");
    }

    #[test]
    fn a_misspelled_channels_key_is_the_place_and_the_hint() {
        let (place, message, err) =
            invalid("name: demo\nchannel:\n  - c\ndependencies: [python]\n");
        assert_eq!(place, at(2, 1), "{err}");
        assert!(message.contains("no channels"), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(
                "warning: conda.yaml:2:1: unknown key `channel` ignored; did you mean `channels`?"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_missing_channels_key_points_at_the_mapping() {
        let (place, _, err) = invalid("\n# no channels\ndependencies: [python]\n");
        assert_eq!(place, at(3, 1), "{err}");
    }

    #[test]
    fn unknown_keys_are_shown_whatever_fails() {
        // The failure (a bad dependency) is not about the unknown key, which comes after.
        let (place, _, err) =
            invalid("channels: [c]\ndependencies: ['bad >=<= 1']\nvariable: {A: b}\n");
        assert_eq!(place, at(2, 16), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(
                "conda.yaml:3:1: unknown key `variable` ignored; did you mean `variables`?"
            ),
            "{text}"
        );
    }

    #[test]
    fn wrong_shapes_point_at_the_value() {
        let (place, message, err) = invalid("channels: c\ndependencies: [python]\n");
        assert_eq!(place, at(1, 11), "{err}");
        assert!(message.contains("channels"), "{err}");
        let (place, message, err) =
            invalid("channels: [c]\ndependencies:\n  - python\n  - conda: [x]\n");
        assert_eq!(place, at(4, 5), "{err}");
        assert!(message.contains("only be `pip: [...]`"), "{err}");
    }

    #[test]
    fn a_name_that_cannot_be_a_tag_points_at_it() {
        let (place, message, err) = invalid("name: my env\nchannels: [c]\ndependencies: [x]\n");
        assert_eq!(place, at(1, 7), "{err}");
        assert!(message.contains("cannot tag"), "{err}");
    }

    #[test]
    fn unknown_keys_are_kept_for_a_warning() {
        let spec =
            parse("channels: [c]\ndependencies: [x]\nprefix: /opt/x\ndependency: [y]\n").unwrap();
        let keys: Vec<(&str, Location, Option<&str>)> = spec
            .unknown_keys
            .iter()
            .map(|k| (k.key.as_str(), k.at, k.hint.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                ("prefix", at(3, 1), None),
                ("dependency", at(4, 1), Some("did you mean `dependencies`?"))
            ]
        );
    }

    #[test]
    fn missing_dependencies_or_channels_are_errors() {
        assert!(parse("channels: [c]\n").is_err());
        assert!(parse("dependencies: [x]\n").is_err());
        assert!(parse("").is_err());
        assert!(parse("- a\n").is_err());
    }
}
