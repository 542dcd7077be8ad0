//! Catalogs are never trusted (issue 12, findings 2 and 8): every catalog is validated —
//! by the rules of its JSON Schema and by those a schema cannot say — before anything
//! is tagged or restored, and relocation runs in constant memory whatever a file's size.

mod common;

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::Command;

use envoci::catalog::Relocation;
use envoci::digest::Digest;
use envoci::layer::{Compression, LayerWriter};
use envoci::relocate::{FileMode, PLACEHOLDER};

use common::envoci::{exit, Envoci, Json};
use common::{install_env, ENV_ONE, ENV_TWO};

/// `len` bytes of `unit` over and over, made as they are read.
struct Repeat {
    unit: Vec<u8>,
    at: usize,
    left: u64,
}

impl Repeat {
    fn new(unit: impl Into<Vec<u8>>, len: u64) -> Self {
        Repeat {
            unit: unit.into(),
            at: 0,
            left: len,
        }
    }
}

impl Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.left > 0 {
            let take = (self.unit.len() - self.at)
                .min(buf.len() - n)
                .min(self.left.try_into().unwrap_or(usize::MAX));
            buf[n..n + take].copy_from_slice(&self.unit[self.at..self.at + take]);
            self.at = (self.at + take) % self.unit.len();
            self.left -= take as u64;
            n += take;
        }
        Ok(n)
    }
}

/// One file of a crafted layer: path, size and content.
type File = (&'static str, u64, Box<dyn Read>);

/// Tags in `home` a one-layer catalog (zstd layer of `files`, sorted by path) with
/// `relocations` and the catalog placeholder `placeholder` — whatever they are: this is
/// how a hostile producer would write it.
fn tag_layer(
    home: &Path,
    tag: &str,
    files: Vec<File>,
    relocations: Vec<Relocation>,
    placeholder: &str,
) {
    let count = files.len() as u64;
    let mut writer = LayerWriter::new(Vec::new(), Compression::Zstd).unwrap();
    for (path, size, content) in files {
        writer.append_file(path, false, size, content).unwrap();
    }
    let (digests, blob) = writer.finish().unwrap();
    let claim = common::catalog::Claim {
        digests,
        media: Compression::Zstd.media_type(),
        files: count,
        relocations,
        placeholder,
    };
    common::catalog::tag_single_layer(home, tag, &blob, claim);
}

fn text(path: &str, placeholder: Option<&str>) -> Relocation {
    Relocation {
        path: path.into(),
        mode: FileMode::Text,
        placeholder: placeholder.map(String::from),
    }
}

fn small(content: &'static [u8]) -> (u64, Box<dyn Read>) {
    (content.len() as u64, Box::new(content))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_empty_placeholder_is_refused_before_anything_is_restored() {
    // An empty placeholder used to put the target path between every two bytes of a
    // text file: an 8 KB archive drove a restore to 4 GiB.
    let t = Envoci::new();
    let (size, content) = small(b"#!/bin/sh\necho hello\n");
    tag_layer(
        t.home(),
        "catalog-empty",
        vec![("run.sh", size, content)],
        vec![text("run.sh", None)],
        "",
    );
    let (size, content) = small(b"#!/bin/sh\necho hello\n");
    tag_layer(
        t.home(),
        "own-empty",
        vec![("run.sh", size, content)],
        vec![text("run.sh", Some(""))],
        PLACEHOLDER,
    );
    for (tag, why) in [
        ("catalog-empty", "placeholder has 0 bytes"),
        (
            "own-empty",
            "layers[0].relocations[0].placeholder has 0 bytes",
        ),
    ] {
        let target = t.dir().join(format!("space-{tag}"));
        let err = t.fail_as(exit::INTEGRITY, &["restore", tag, "--target", s(&target)]);
        assert!(
            err.contains("invalid catalog") && err.contains(why),
            "{tag}: {err}"
        );
        assert!(!target.exists(), "{tag}: nothing written");
        t.fail_as(exit::INTEGRITY, &["inspect", tag]);
    }
    assert!(t.has_no_environments(), "`ls` lists no invalid environment");
}

#[test]
fn a_256_mib_relocated_file_restores_under_a_400_mb_address_space_cap() {
    const TEXT_SIZE: u64 = 256 << 20;
    const BINARY_SIZE: u64 = 64 << 20;
    let t = Envoci::new();
    let line = format!("exec {PLACEHOLDER}/bin/tool --data={PLACEHOLDER}/share \"$@\"\n");
    let cstring = format!("{PLACEHOLDER}/lib:{PLACEHOLDER}/lib64\0");
    // Whole units, so the expected content is the relocated unit repeated.
    let text_size = TEXT_SIZE / line.len() as u64 * line.len() as u64 + line.len() as u64;
    let binary_size = BINARY_SIZE / cstring.len() as u64 * cstring.len() as u64;
    tag_layer(
        t.home(),
        "big",
        vec![
            (
                "big.bin",
                binary_size,
                Box::new(Repeat::new(cstring.clone(), binary_size)),
            ),
            (
                "big.txt",
                text_size,
                Box::new(Repeat::new(line.clone(), text_size)),
            ),
        ],
        vec![
            Relocation {
                path: "big.bin".into(),
                mode: FileMode::Binary,
                placeholder: None,
            },
            text("big.txt", None),
        ],
        PLACEHOLDER,
    );
    let target = t.dir().join("space");
    let target_str = s(&target).to_string();
    let mut cmd = t.cmd(&["restore", "big", "--target", &target_str, "--link", "copy"]);
    common::envoci::limit_address_space(&mut cmd, 400_000_000);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "restore under the cap failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let relocated_line = line.replace(PLACEHOLDER, &target_str);
    let lines = text_size / line.len() as u64;
    let want = Digest::of_reader(Repeat::new(
        relocated_line.clone(),
        lines * relocated_line.len() as u64,
    ))
    .unwrap();
    let got = Digest::of_reader(fs::File::open(target.join("big.txt")).unwrap()).unwrap();
    assert_eq!(got, want, "the text file is relocated throughout");

    let mut relocated_cstring = cstring.replace(PLACEHOLDER, &target_str).into_bytes();
    relocated_cstring.pop();
    relocated_cstring.resize(cstring.len(), 0);
    let want = Digest::of_reader(Repeat::new(relocated_cstring, binary_size)).unwrap();
    let got = Digest::of_reader(fs::File::open(target.join("big.bin")).unwrap()).unwrap();
    assert_eq!(got, want, "the binary file is relocated throughout, padded");
}

/// The blob `digest` (`sha256:…`) of a layout or store directory.
fn blob_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Writes `bytes` as a blob of the layout `dir`; returns its digest and size.
fn put_blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let digest = Digest::of(bytes).oci();
    fs::write(blob_path(dir, &digest), bytes).unwrap();
    (digest, bytes.len() as u64)
}

/// Rewrites the only artifact of layout `dir`: its catalog becomes `catalog` (bytes, as
/// a hostile producer wrote them) and its manifest goes through `manifest`.
fn rewrite_layout(dir: &Path, catalog: &[u8], manifest: impl FnOnce(&mut Json)) {
    let index_path = dir.join("index.json");
    let mut index: Json = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = &mut index["manifests"][0];
    let old = fs::read(blob_path(dir, entry["digest"].as_str().unwrap())).unwrap();
    let mut doc: Json = serde_json::from_slice(&old).unwrap();
    let (digest, size) = put_blob(dir, catalog);
    doc["config"]["digest"] = digest.into();
    doc["config"]["size"] = size.into();
    manifest(&mut doc);
    let (digest, size) = put_blob(dir, &serde_json::to_vec(&doc).unwrap());
    entry["digest"] = digest.into();
    entry["size"] = size.into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn catalogs_with_impossible_sizes_or_layer_counts_are_refused_at_import() {
    let builder = Envoci::new();
    let (size, content) = small(b"PATH=/nowhere\n");
    tag_layer(
        builder.home(),
        "good",
        vec![("etc/conf", size, content)],
        vec![text("etc/conf", None)],
        PLACEHOLDER,
    );
    let good = builder.dir().join("good");
    builder.ok(&["export", "good", "-o", s(&good)]);
    let catalog = builder.catalog("good");
    let json = |c: &Json| serde_json::to_vec(c).unwrap();

    type Case = (
        &'static str,
        Vec<u8>,
        Box<dyn FnOnce(&mut Json)>,
        &'static str,
    );
    let mut cases: Vec<Case> = Vec::new();
    let same = || -> Box<dyn FnOnce(&mut Json)> { Box::new(|_| {}) };
    // 2^64 does not fit any size; 2^64 − 1 fits a u64 but is no sane size.
    let bytes = json(&catalog).to_vec();
    let size = catalog["layers"][0]["size"].to_string();
    let field = format!("\"size\":{size}");
    let with_size = |n: &str| {
        String::from_utf8(bytes.clone())
            .unwrap()
            .replacen(&field, &format!("\"size\":{n}"), 1)
            .into_bytes()
    };
    cases.push((
        "size 2^64",
        with_size("18446744073709551616"),
        same(),
        "invalid catalog: it does not parse",
    ));
    cases.push((
        "size 2^64-1",
        with_size("18446744073709551615"),
        same(),
        "invalid catalog: layers[0].size is 18446744073709551615",
    ));
    let mut more = catalog.clone();
    let layer = more["layers"][0].clone();
    more["layers"].as_array_mut().unwrap().push(layer);
    cases.push((
        "more catalog layers",
        json(&more),
        same(),
        "invalid catalog: it describes 2 layers, the manifest has 1",
    ));
    cases.push((
        "more manifest layers",
        json(&catalog),
        Box::new(|m: &mut Json| {
            let layer = m["layers"][0].clone();
            m["layers"].as_array_mut().unwrap().push(layer);
        }),
        "invalid catalog: it describes 1 layers, the manifest has 2",
    ));
    cases.push((
        "manifest layer size 2^64-1",
        json(&catalog),
        Box::new(|m: &mut Json| m["layers"][0]["size"] = u64::MAX.into()),
        // The catalogs are validated before any layer is copied.
        "more than 9007199254740991",
    ));
    let mut empty = catalog.clone();
    empty["placeholder"] = "".into();
    cases.push((
        "empty placeholder",
        json(&empty),
        same(),
        "invalid catalog: placeholder has 0 bytes",
    ));
    // 100 000 levels of nesting (written by hand: serde_json would not).
    let mut deep = json(&catalog);
    deep.pop();
    deep.extend_from_slice(b",\"spec\":");
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.push(b'}');
    cases.push((
        "100k-deep",
        deep,
        same(),
        "invalid catalog: it does not parse",
    ));

    for (i, (what, catalog_bytes, manifest, why)) in cases.into_iter().enumerate() {
        let dir = builder.dir().join(format!("hostile-{i}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&good)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        rewrite_layout(&dir, &catalog_bytes, manifest);
        let site = Envoci::new();
        let err = site.fail_as(exit::INTEGRITY, &["import", s(&dir)]);
        assert!(err.contains(why), "{what}: {err}");
        assert!(site.has_no_environments(), "{what}: nothing tagged");
        let target = site.dir().join("space");
        let reference = format!("oci:{}:good", s(&dir));
        site.fail_as(
            exit::INTEGRITY,
            &["restore", &reference, "--target", s(&target)],
        );
        assert!(!target.exists(), "{what}: nothing restored");
    }
}

/// The catalog and manifest blobs of `tag`, as they are in the store.
fn raw_artifact(t: &Envoci, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let inspected = t.json(&["inspect", tag]);
    let manifest = fs::read(blob_path(
        t.home(),
        inspected["summary"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let config = inspected["manifest"]["config"]["digest"].as_str().unwrap();
    (fs::read(blob_path(t.home(), config)).unwrap(), manifest)
}

#[test]
fn every_catalog_the_fixtures_make_validates_against_the_schema() {
    let t = Envoci::new();
    let validator = common::catalog_schema();
    for (tag, pkgs, extra) in [
        ("one", ENV_ONE, &[][..]),
        ("two", ENV_TWO, &[][..]),
        ("grouped", ENV_ONE, &["--max-layers", "3"][..]),
    ] {
        let prefix = t.dir().join(format!("prefix-{tag}"));
        install_env(&prefix, pkgs);
        let mut args = vec!["snapshot", s(&prefix), "--tag", tag];
        args.extend_from_slice(extra);
        t.ok(&args);
    }
    let channel = common::channel().dir.display().to_string();
    let spec = t.dir().join("conda.yaml");
    fs::write(
        &spec,
        format!(
            "channels: [{channel}]\ndependencies:\n  - reloc-text\n  - links\nvariables:\n  MODE: built\n"
        ),
    )
    .unwrap();
    t.ok(&["build", s(&spec), "--tag", "built"]);

    for tag in ["one", "two", "grouped", "built"] {
        let (catalog, manifest) = raw_artifact(&t, tag);
        let value: Json = serde_json::from_slice(&catalog).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{tag}: {errors:#?}");
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest).unwrap();
        envoci::artifact::parse_catalog(&catalog, &manifest)
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
    }
    let grouped = t.catalog("grouped");
    assert!(
        grouped["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["kind"] == "group"),
        "the fixtures include a group layer"
    );
    let one = t.catalog("one");
    assert!(
        one["layers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["relocations"].as_array().unwrap())
            .any(|r| r.get("placeholder").is_some()),
        "the fixtures include a relocation with its own placeholder"
    );
}

#[test]
fn the_validator_refuses_what_the_schema_refuses() {
    let t = Envoci::new();
    let prefix = t.dir().join("prefix");
    install_env(&prefix, ENV_ONE);
    t.ok(&["snapshot", s(&prefix), "--tag", "one"]);
    let (catalog, manifest) = raw_artifact(&t, "one");
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest).unwrap();
    let catalog: Json = serde_json::from_slice(&catalog).unwrap();
    let validator = common::catalog_schema();
    let ours = |value: &Json| {
        envoci::artifact::parse_catalog(&serde_json::to_vec(value).unwrap(), &manifest)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(validator.is_valid(&catalog));
    ours(&catalog).unwrap();

    let (li, ri) = catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find_map(|(i, l)| (!l["relocations"].as_array().unwrap().is_empty()).then_some((i, 0)))
        .expect("a layer with a relocation");
    let reloc = format!("/layers/{li}/relocations/{ri}");
    let big: Json = serde_json::from_str("18446744073709551616").unwrap();
    let cases: Vec<(String, Json)> = vec![
        ("/placeholder".into(), "".into()),
        ("/placeholder".into(), "/".repeat(256).into()),
        ("/placeholder".into(), "/a\u{0}b".into()),
        (format!("{reloc}/placeholder"), "".into()),
        (format!("{reloc}/placeholder"), "x".repeat(300).into()),
        (format!("{reloc}/path"), "".into()),
        (format!("{reloc}/path"), "/etc/passwd".into()),
        (format!("{reloc}/path"), "..".into()),
        (format!("{reloc}/path"), "lib/../../x".into()),
        (format!("{reloc}/path"), "lib/a\u{0}".into()),
        (format!("{reloc}/mode"), "executable".into()),
        (format!("{reloc}/extra"), 1.into()),
        ("/layers/0/size".into(), big.clone()),
        ("/layers/0/size".into(), u64::MAX.into()),
        ("/layers/0/size".into(), (1u64 << 53).into()),
        ("/layers/0/size".into(), (-1).into()),
        ("/layers/0/files".into(), (1u64 << 53).into()),
        ("/layers/0/files".into(), big),
        ("/schemaVersion".into(), 2.into()),
        ("/mediaType".into(), "application/json".into()),
        ("/platform".into(), "Linux 64".into()),
        ("/blueprint".into(), "xyz".into()),
        ("/layers/0/name".into(), "".into()),
        ("/layers/0/digest".into(), "md5:00".into()),
        ("/extra".into(), Json::Null),
    ];
    for (pointer, value) in cases {
        let mut mutated = catalog.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        mutated.pointer_mut(parent).unwrap()[key] = value.clone();
        assert!(
            !validator.is_valid(&mutated),
            "the schema accepts {pointer} = {value}"
        );
        assert!(
            ours(&mutated).is_err(),
            "envoci accepts {pointer} = {value}, which the schema refuses"
        );
    }
    // What a schema cannot say, envoci refuses too.
    let mut twice = catalog.clone();
    let again = twice.pointer(&reloc).unwrap().clone();
    twice["layers"][li]["relocations"]
        .as_array_mut()
        .unwrap()
        .push(again);
    let mut fewer = catalog.clone();
    fewer["layers"].as_array_mut().unwrap().pop();
    let mut huge_total = catalog.clone();
    for layer in huge_total["layers"].as_array_mut().unwrap() {
        layer["size"] = ((1u64 << 53) - 1).into();
    }
    for (what, value, why) in [
        ("twice", twice, "twice"),
        ("fewer layers", fewer, "the manifest has"),
        ("total", huge_total, "summed over all layers"),
    ] {
        let err = ours(&value).expect_err(what);
        assert!(err.contains(why), "{what}: {err}");
    }
}
