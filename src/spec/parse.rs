//! Reading `conda.yaml` with the place of every mistake.
//!
//! serde_yaml gives an error raised while a node is read the line and column of that
//! node, so every check runs inside a serde visitor: a bad match spec fails at its own
//! scalar, a value of the wrong shape at itself. A key has no node left to fail in once
//! it is read, so the place of a key (an unknown one; the first one, where a missing key
//! belongs) or of a scalar found bad later comes from [`locate`]: a second read that
//! fails on purpose at that node.

use std::collections::BTreeMap;
use std::fmt;

use rattler_conda_types::{MatchSpec, PackageNameMatcher, ParseStrictness};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A place in the spec file: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Location {
    /// The start of the file.
    pub const START: Location = Location { line: 1, column: 1 };

    /// Where serde_yaml says `error` is.
    pub(super) fn of(error: &serde_yaml::Error) -> Option<Location> {
        error.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        })
    }
}

/// The message of a serde_yaml error without the place it appends (shown separately).
pub(super) fn message_of(error: &serde_yaml::Error) -> String {
    let text = error.to_string();
    match error.location() {
        Some(l) => {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            text.strip_suffix(&suffix).unwrap_or(&text).to_string()
        }
        None => text,
    }
}

/// The keys envoci reads.
pub(super) const KNOWN_KEYS: &[&str] = &["name", "channels", "dependencies", "variables"];

/// The known key an unknown `key` was probably meant to be.
pub(super) fn suggestion(key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    if lower == "pip" {
        return Some("`pip:` goes inside `dependencies:`, as `- pip: [...]`".into());
    }
    KNOWN_KEYS
        .iter()
        .filter(|known| strsim::levenshtein(&lower, known) <= (known.len() / 4).max(1))
        .min_by_key(|known| strsim::levenshtein(&lower, known))
        .map(|known| format!("did you mean `{known}`?"))
}

/// The spec's keys as read: each value checked, none yet required.
#[derive(Default)]
pub(super) struct Raw {
    pub name: Option<String>,
    pub channels: Option<Vec<String>>,
    pub dependencies: Option<Vec<Dependency>>,
    pub variables: BTreeMap<String, String>,
}

/// One entry of `dependencies:`.
pub(super) enum Dependency {
    /// A conda match spec naming one package.
    Conda(Box<MatchSpec>),
    /// The lines of a `pip:` sub-list.
    Pip(Vec<String>),
    /// Two list items YAML read as one plain scalar (`- python` followed by a deeper
    /// `- greet` is `python - greet`); the caller finds where the second one is.
    Joined(String),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with `channels:` and `dependencies:`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut raw = Raw::default();
        while let Some(Text(key)) = map.next_key()? {
            match key.as_str() {
                "name" => raw.name = Some(map.next_value::<Name>()?.0),
                "channels" => raw.channels = Some(map.next_value::<List>()?.0),
                "dependencies" => raw.dependencies = Some(map.next_value::<Dependencies>()?.0),
                "variables" => raw.variables = map.next_value::<Variables>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// A plain scalar, as written.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor("a plain value (text or a number)"))
            .map(Text)
    }
}

struct TextVisitor(&'static str);

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// `name:`, which becomes a tag of the built environment.
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(NameVisitor).map(Name)
    }
}

struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        crate::store::validate_tag(v).map_err(|_| {
            E::custom(format!(
                "`{v}` cannot tag the environment: use letters, digits, `_`, `.` and `-` \
                 (at most 128, not starting with `.` or `-`)"
            ))
        })?;
        Ok(v.to_string())
    }
}

/// A list of plain values (`channels:`, `pip:`).
struct List(Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ListVisitor).map(List)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list (`- item` lines or `[a, b]`)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut items = Vec::new();
        while let Some(Text(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// `dependencies:`.
struct Dependencies(Vec<Dependency>);

impl<'de> Deserialize<'de> for Dependencies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(DependenciesVisitor).map(Dependencies)
    }
}

struct DependenciesVisitor;

impl<'de> Visitor<'de> for DependenciesVisitor {
    type Value = Vec<Dependency>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of match specs and at most one `pip: [...]`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Dependency>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

impl<'de> Deserialize<'de> for Dependency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DependencyVisitor)
    }
}

struct DependencyVisitor;

impl<'de> Visitor<'de> for DependencyVisitor {
    type Value = Dependency;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a match spec (`python >=3.11`) or `pip: [...]`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dependency, E> {
        if v.contains(" - ") {
            return Ok(Dependency::Joined(v.to_string()));
        }
        match_spec(v)
            .map(|m| Dependency::Conda(Box::new(m)))
            .map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dependency, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dependency, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dependency, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Dependency, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Dependency, E> {
        Err(E::custom(
            "an empty dependency (a `-` with nothing after it)",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dependency, A::Error> {
        let only_pip = "a mapping in `dependencies` may only be `pip: [...]`";
        let Some(Text(key)) = map.next_key()? else {
            return Err(de::Error::custom(only_pip));
        };
        if key != "pip" {
            return Err(de::Error::custom(format!("{only_pip}, not `{key}:`")));
        }
        let List(lines) = map.next_value()?;
        if map.next_key::<Text>()?.is_some() {
            return Err(de::Error::custom(only_pip));
        }
        Ok(Dependency::Pip(lines))
    }
}

/// A dependency's match spec, which must name one package.
fn match_spec(raw: &str) -> Result<MatchSpec, String> {
    let parsed = MatchSpec::from_str(raw, ParseStrictness::Lenient)
        .map_err(|e| format!("invalid dependency `{raw}`: {e}"))?;
    if !matches!(parsed.name, PackageNameMatcher::Exact(_)) {
        return Err(format!(
            "dependency `{raw}` must name one package (no globs)"
        ));
    }
    Ok(parsed)
}

/// `variables:`, names to plain values.
struct Variables(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(VariablesVisitor).map(Variables)
    }
}

struct VariablesVisitor;

impl<'de> Visitor<'de> for VariablesVisitor {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of names to plain values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut variables = BTreeMap::new();
        while let Some((Text(k), Text(v))) = map.next_entry()? {
            variables.insert(k, v);
        }
        Ok(variables)
    }
}

/// What [`locate`] looks for.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    /// The top-level key of this name.
    Key(&'a str),
    /// The first top-level key.
    FirstKey,
    /// The first scalar anywhere (key or value) whose text is this.
    Scalar(&'a str),
}

/// Where `target` is in `text` (which parsed as YAML), if it is there.
pub(super) fn locate(text: &str, target: Target<'_>) -> Option<Location> {
    let seed = Probe { target, depth: 0 };
    let result = de::DeserializeSeed::deserialize(seed, serde_yaml::Deserializer::from_str(text));
    result.err().as_ref().and_then(Location::of)
}

/// Walks the document and fails at its target (see [`locate`]).
#[derive(Clone, Copy)]
struct Probe<'a> {
    target: Target<'a>,
    /// 0 for the document's top node, 1 for its keys and values, ...
    depth: usize,
}

/// The error a probe fails with at its target (only its place is read).
const FOUND: &str = "found";

impl<'de> de::DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.target {
            Target::Scalar(s) if s == v => Err(E::custom(FOUND)),
            _ => Ok(()),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = Probe {
            depth: self.depth + 1,
            ..self
        };
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = Probe {
            depth: self.depth + 1,
            ..self
        };
        let key_probe = match (self.depth, self.target) {
            // Fails here: the error takes the place of the mapping, its first key.
            (0, Target::FirstKey) => return Err(de::Error::custom(FOUND)),
            (0, Target::Key(k)) => KeyProbe::Named(k),
            _ => KeyProbe::Walk(inner),
        };
        while map.next_key_seed(key_probe)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// How a probe reads a mapping's keys.
#[derive(Clone, Copy)]
enum KeyProbe<'a> {
    /// Fails at the key of this name.
    Named(&'a str),
    /// Reads it as any other node.
    Walk(Probe<'a>),
}

impl<'de> de::DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self {
            KeyProbe::Walk(probe) => d.deserialize_any(probe),
            KeyProbe::Named(name) => d.deserialize_any(Probe {
                target: Target::Scalar(name),
                depth: 1,
            }),
        }
    }
}
