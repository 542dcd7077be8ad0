//! Attribution: which layer each file of a prefix belongs to.
//!
//! A file belongs to the conda package whose `conda-meta/*.json` lists it (the package
//! installed last wins a clobbered path, matching the layer order), else to the pip
//! distribution whose `*.dist-info/RECORD` lists it, else — for `__pycache__/*.pyc` — to
//! the owner of its source file, else to the environment layer.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use rattler_conda_types::{PackageRecord, PrefixRecord};

use super::Error;
use crate::catalog::{LayerKind, Record};
use crate::relocate::FileMode;

/// Something that owns files (a conda package, a pip distribution, the environment):
/// a future layer, or a member of a group layer — the catalog's own description of one.
pub type Owner = crate::catalog::LayerPackage;

/// What a conda package's metadata says about one installed file's placeholder.
#[derive(Clone, Debug)]
pub struct DeclaredPlaceholder {
    /// Text or binary.
    pub mode: FileMode,
    /// The placeholder in the package's copy of the file.
    pub placeholder: String,
    /// Hashes the package's metadata records for the file (either may be the original).
    pub hashes: Vec<[u8; 32]>,
}

/// The result of attributing every path of a prefix.
pub struct Attribution {
    /// Owners in layer order: conda packages in install order, pip distributions by
    /// name, the environment last.
    pub owners: Vec<Owner>,
    /// Path → index into `owners`. Paths not in the map belong to the last owner (env).
    pub owner_of: HashMap<String, usize>,
    /// Package records, in install order.
    pub records: Vec<Record>,
    /// Placeholders declared by conda metadata, by path.
    pub declared: HashMap<String, DeclaredPlaceholder>,
    /// The platform the packages were built for (first non-noarch subdir).
    pub platform: Option<String>,
}

impl Attribution {
    /// Index of the environment layer's owner.
    pub fn env_owner(&self) -> usize {
        self.owners.len() - 1
    }

    /// The owner of `path`.
    pub fn owner(&self, path: &str) -> usize {
        self.owner_of
            .get(path)
            .copied()
            .unwrap_or_else(|| self.env_owner())
    }
}

/// Attributes the files of `prefix`; `files` are every regular file and symlink found.
pub fn attribute(prefix: &Path, files: &[&str]) -> Result<Attribution, Error> {
    let mut attribution = Attribution {
        owners: Vec::new(),
        owner_of: HashMap::new(),
        records: Vec::new(),
        declared: HashMap::new(),
        platform: None,
    };
    let prefix_records = PackageRecord::sort_topologically(read_conda_meta(prefix)?);
    attribution.records.reserve(prefix_records.len());
    for record in &prefix_records {
        attribution.add_conda_package(record);
    }
    // pip distributions: every RECORD no conda package claims.
    for (owner, paths) in pip_distributions(prefix, files, &attribution.owner_of)? {
        let idx = attribution.owners.len();
        attribution.owners.push(owner);
        for p in paths {
            attribution.owner_of.entry(p).or_insert(idx);
        }
    }
    attribution.add_bytecode(files);
    attribution.owners.push(Owner {
        kind: LayerKind::Env,
        name: "env".into(),
        version: None,
        build: None,
        subdir: None,
        channel: None,
        sha256: None,
    });
    Ok(attribution)
}

impl Attribution {
    /// Adds a conda package: its record, its owner, its files and their placeholders
    /// (a later package wins a path).
    fn add_conda_package(&mut self, pr: &PrefixRecord) {
        let rr = &pr.repodata_record;
        let p = &rr.package_record;
        if self.platform.is_none() && p.subdir != "noarch" {
            self.platform = Some(p.subdir.clone());
        }
        let sha256 = p.sha256.map(|h| hex::encode(h.as_slice()));
        self.records.push(Record {
            name: p.name.as_normalized().to_string(),
            version: p.version.to_string(),
            build: p.build.to_string(),
            build_number: p.build_number,
            subdir: p.subdir.clone(),
            channel: rr.channel.clone(),
            url: Some(rr.url.to_string()),
            sha256: sha256.clone(),
            md5: p.md5.map(|h| hex::encode(h.as_slice())),
            depends: p.depends.clone(),
        });
        let idx = self.owners.len();
        self.owners.push(Owner {
            kind: LayerKind::Conda,
            name: p.name.as_normalized().to_string(),
            version: Some(p.version.to_string()),
            build: Some(p.build.to_string()),
            subdir: Some(p.subdir.clone()),
            channel: rr.channel.clone(),
            sha256,
        });
        for file in &pr.files {
            self.owner_of.insert(path_key(file), idx);
        }
        for entry in &pr.paths_data.paths {
            let key = path_key(&entry.relative_path);
            self.owner_of.insert(key.clone(), idx);
            if let Some(declared) = declared_placeholder(entry) {
                self.declared.insert(key, declared);
            }
        }
    }

    /// Bytecode caches no one claims follow their source.
    fn add_bytecode(&mut self, files: &[&str]) {
        for file in files {
            if self.owner_of.contains_key(*file) {
                continue;
            }
            if let Some(source) = pyc_source(file) {
                if let Some(&idx) = self.owner_of.get(&source) {
                    self.owner_of.insert(file.to_string(), idx);
                }
            }
        }
    }
}

/// The placeholder conda metadata declares for one installed file, if any.
fn declared_placeholder(
    entry: &rattler_conda_types::prefix_record::PathsEntry,
) -> Option<DeclaredPlaceholder> {
    let placeholder = entry.prefix_placeholder.as_ref()?;
    let mode = match entry.file_mode {
        Some(rattler_conda_types::package::FileMode::Binary) => FileMode::Binary,
        _ => FileMode::Text,
    };
    let hashes = [entry.sha256, entry.sha256_in_prefix]
        .into_iter()
        .flatten()
        .map(|h| h.into())
        .collect();
    Some(DeclaredPlaceholder {
        mode,
        placeholder: placeholder.clone(),
        hashes,
    })
}

/// The pip distributions of `files` whose `RECORD` no conda package owns (in
/// `owner_of`), each with the paths its RECORD lists, sorted by name and location.
fn pip_distributions(
    prefix: &Path,
    files: &[&str],
    owner_of: &HashMap<String, usize>,
) -> Result<Vec<(Owner, Vec<String>)>, Error> {
    let mut pip: BTreeMap<String, (Owner, Vec<String>)> = BTreeMap::new();
    for file in files {
        let Some(dist_info) = file
            .strip_suffix("/RECORD")
            .filter(|d| d.ends_with(".dist-info"))
        else {
            continue;
        };
        if owner_of.contains_key(*file) {
            continue;
        }
        let (base, dir_name) = dist_info.rsplit_once('/').unwrap_or(("", dist_info));
        let stem = dir_name.trim_end_matches(".dist-info");
        let (name, version) = stem.split_once('-').unwrap_or((stem, ""));
        let record_path = prefix.join(file);
        let text = fs::read_to_string(&record_path).map_err(|source| Error::Read {
            path: record_path,
            source,
        })?;
        let mut paths: Vec<String> = text
            .lines()
            .filter_map(parse_record_path)
            .filter_map(|p| normalize_join(base, &p))
            .collect();
        paths.push(file.to_string());
        let owner = Owner {
            kind: LayerKind::Pypi,
            name: name.to_string(),
            version: (!version.is_empty()).then(|| version.to_string()),
            build: None,
            subdir: None,
            channel: None,
            sha256: None,
        };
        pip.insert(format!("{name}\0{base}"), (owner, paths));
    }
    Ok(pip.into_values().collect())
}

fn read_conda_meta(prefix: &Path) -> Result<Vec<PrefixRecord>, Error> {
    let dir = prefix.join("conda-meta");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| PrefixRecord::from_path(&path).map_err(|source| Error::Record { path, source }))
        .collect()
}

fn path_key(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/")
}

/// The path field of a RECORD line (CSV; a path with commas is quoted).
fn parse_record_path(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    line.split(',').next().map(str::to_string)
}

/// `base/rel` with `.` and `..` resolved; `None` if it leaves the prefix.
fn normalize_join(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `a/__pycache__/m.cpython-311.pyc` → `a/m.py`.
pub fn pyc_source(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once("/__pycache__/")?;
    let stem = file.strip_suffix(".pyc")?;
    let module = stem.split('.').next()?;
    Some(format!("{dir}/{module}.py"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines() {
        assert_eq!(
            parse_record_path("a/b.py,sha256=x,12").as_deref(),
            Some("a/b.py")
        );
        assert_eq!(
            parse_record_path("\"a,b.py\",sha256=x,1").as_deref(),
            Some("a,b.py")
        );
        assert_eq!(parse_record_path(""), None);
    }

    #[test]
    fn record_paths_resolve_against_site_packages() {
        let base = "lib/python3.11/site-packages";
        assert_eq!(
            normalize_join(base, "../../../bin/tool").as_deref(),
            Some("bin/tool")
        );
        assert_eq!(
            normalize_join(base, "pkg/__init__.py").as_deref(),
            Some("lib/python3.11/site-packages/pkg/__init__.py")
        );
        assert_eq!(normalize_join(base, "../../../../etc/passwd"), None);
    }

    #[test]
    fn pyc_maps_to_source() {
        assert_eq!(
            pyc_source("lib/p/__pycache__/m.cpython-311.pyc").as_deref(),
            Some("lib/p/m.py")
        );
        assert_eq!(
            pyc_source("lib/p/__pycache__/m.cpython-311.opt-1.pyc").as_deref(),
            Some("lib/p/m.py")
        );
        assert_eq!(pyc_source("lib/p/m.pyc"), None);
    }
}
