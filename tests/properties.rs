//! Property tests for the parsers that read what registries and archives send, and for
//! relocation: they never panic on arbitrary input, and what envoci writes reads back
//! unchanged. The cargo-fuzz targets in `fuzz/` explore the same functions for longer
//! (`scripts/fuzz`); these run in the normal test suite, a few seconds in all.

use std::collections::{BTreeMap, HashMap};
use std::io;

use envoci::artifact::{self, IndexEntry, CATALOG_MEDIA_TYPE};
use envoci::catalog::Catalog;
use envoci::digest::Digest;
use envoci::layer::{self, Compression, Entry, EntryKind};
use envoci::relocate::{self, PLACEHOLDER};
use envoci::store::{Store, ANNOTATION_REF_NAME};
use envoci::transfer::layout::{self as oci_layout, ImportOptions, Layout, Select};
use oci_spec::image::{ImageIndexBuilder, ImageManifest, MediaType};
use proptest::prelude::*;
use serde_json::{json, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking a failure is worth more than its time; a pass stays quick.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Zstd),
    ]
}

/// A path component `safe_path` keeps as it is.
fn component() -> impl Strategy<Value = String> {
    // Never `.` or `..`: the first character is no dot.
    "[a-zA-Z0-9_+-][a-zA-Z0-9_.+-]{0,30}"
}

/// A relative layer path, sometimes longer than a tar header's 100 bytes.
fn layer_path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..5).prop_map(|parts| parts.join("/"))
}

fn entry_kind(link_target: BoxedStrategy<String>) -> impl Strategy<Value = (EntryKind, Vec<u8>)> {
    prop_oneof![
        3 => (prop::collection::vec(any::<u8>(), 0..600), any::<bool>()).prop_map(|(content, exec)| {
            let kind = EntryKind::File {
                digest: Digest::of(&content),
                size: content.len() as u64,
                exec,
            };
            (kind, content)
        }),
        1 => link_target.prop_map(|target| {
            let kind = EntryKind::Symlink {
                target: target.into(),
            };
            (kind, Vec::new())
        }),
        1 => Just((EntryKind::Dir, Vec::new())),
    ]
}

/// A link target: any characters but NUL, relative or absolute; no empty or `.`
/// component, which the layer writer drops (an open finding: `a//b` and `a/./b` are
/// written as `a/b`, `a/.` as `a`; see fuzz/regressions/README.md).
fn link_target() -> impl Strategy<Value = String> {
    let part = "[^\u{0}/]{1,20}".prop_filter("not .", |p| p != ".");
    (any::<bool>(), prop::collection::vec(part, 1..6)).prop_map(|(absolute, parts)| {
        format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
    })
}

/// A layer's entries (unique paths) and each file's content; links point anywhere.
fn layer_entries() -> impl Strategy<Value = BTreeMap<String, (EntryKind, Vec<u8>)>> {
    prop::collection::btree_map(layer_path(), entry_kind(link_target().boxed()), 0..8)
}

/// Entries an environment may hold: links name a sibling.
fn env_entries() -> impl Strategy<Value = BTreeMap<String, (EntryKind, Vec<u8>)>> {
    prop::collection::btree_map(layer_path(), entry_kind(component().boxed()), 0..8)
}

fn write_layer(
    files: &BTreeMap<String, (EntryKind, Vec<u8>)>,
    compression: Compression,
) -> (layer::LayerDigests, Vec<u8>, Vec<Entry>) {
    let entries: Vec<Entry> = files
        .iter()
        .map(|(path, (kind, _))| Entry {
            path: path.clone(),
            kind: kind.clone(),
        })
        .collect();
    let (digests, blob) = layer::write_layer(&entries, compression, Vec::new(), |entry| {
        let content = files[&entry.path].1.clone();
        Ok(Box::new(io::Cursor::new(content)))
    })
    .expect("a layer of valid entries is written");
    (digests, blob, entries)
}

/// Reads a layer the way the store does: each file's content hashed.
fn read_layer(
    blob: &[u8],
    compression: Compression,
) -> Result<(Vec<Entry>, Digest, u64), layer::ReadError> {
    // The bound a catalog would give: far above anything generated here.
    let limit = 1 << 30;
    layer::read_layer(blob, compression, limit, |_, content, _| {
        Digest::of_reader(content).map(|(digest, _)| digest)
    })
    .map(|(entries, got)| (entries, got.digest, got.size))
}

/// A catalog's JSON for one layer, as the schema has it.
fn catalog_json(layer: &layer::LayerDigests, files: u64, placeholder: &str) -> Value {
    json!({
        "schemaVersion": 1,
        "mediaType": CATALOG_MEDIA_TYPE,
        "tool": envoci::TOOL_VERSION,
        "platform": "linux-64",
        "placeholder": placeholder,
        "records": [{
            "name": "pkg", "version": "1.0", "build": "0", "buildNumber": 0,
            "subdir": "linux-64", "depends": []
        }],
        "layers": [{
            "digest": layer.digest.oci(),
            "diffId": layer.diff_id.oci(),
            "size": layer.uncompressed_size,
            "files": files,
            "kind": "conda",
            "name": "pkg",
            "version": "1.0",
            "build": "0",
            "relocations": []
        }],
        "environment": { "variables": {}, "activationScripts": [] }
    })
}

/// An `oci-archive` holding one envoci environment tagged `env` whose one layer holds
/// `files`: what `envoci export` writes, made here from envoci's own writers.
fn envoci_archive(files: &BTreeMap<String, (EntryKind, Vec<u8>)>) -> Vec<u8> {
    let (digests, blob, entries) = write_layer(files, Compression::Zstd);
    let catalog: Catalog =
        serde_json::from_value(catalog_json(&digests, entries.len() as u64, PLACEHOLDER))
            .expect("the catalog is valid");
    let catalog_bytes = envoci::json::to_canonical_vec(&catalog).unwrap();
    let catalog_blob = (Digest::of(&catalog_bytes), catalog_bytes.len() as u64);
    let manifest = artifact::build_manifest(
        &catalog,
        catalog_blob,
        &[(digests, Compression::Zstd.media_type())],
    );
    let manifest_bytes = envoci::json::to_canonical_vec(&manifest).unwrap();
    let manifest_digest = Digest::of(&manifest_bytes);
    let mut descriptor =
        artifact::manifest_descriptor(&manifest_digest, manifest_bytes.len() as u64);
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        "env".to_string(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .unwrap();
    let index_bytes = serde_json::to_vec(&index).unwrap();

    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index_bytes);
    for (digest, data) in [
        (manifest_digest, &manifest_bytes[..]),
        (catalog_blob.0, &catalog_bytes[..]),
        (digests.digest, &blob[..]),
    ] {
        add(&format!("blobs/sha256/{}", digest.hex()), data);
    }
    tar.into_inner().unwrap()
}

/// Opens `bytes` as an `oci-archive` and imports everything in it into a new store.
fn import_archive(bytes: &[u8]) -> Option<Result<(), String>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.tar");
    std::fs::write(&path, bytes).unwrap();
    let layout = Layout::open_archive(&path).ok()?;
    let store = Store::open(dir.path().join("store")).unwrap();
    let options = ImportOptions {
        platform: Some("linux-64"),
        progress: Default::default(),
    };
    Some(
        oci_layout::import(&store, &layout, Select::All, options)
            .map(|_| ())
            .map_err(|e| envoci::error_chain(&e)),
    )
}

/// JSON of any shape, small: what a hostile document may hold.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[a-zA-Z0-9:._/+-]{0,20}".prop_map(Value::from),
        Just(Value::from(CATALOG_MEDIA_TYPE)),
        Just(Value::from("application/vnd.oci.image.index.v1+json")),
        Just(Value::from(Digest([7; 32]).oci())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("mediaType".to_string()),
            Just("manifests".to_string()),
            Just("schemaVersion".to_string()),
            Just("config".to_string()),
            Just("layers".to_string()),
            Just("digest".to_string()),
            Just("size".to_string()),
            Just("annotations".to_string()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every parser of documents from outside on `bytes`: none may panic.
fn parse_documents(bytes: &[u8]) {
    if let Ok(Some(index)) = artifact::parse_index(bytes) {
        let _ = artifact::choose_platform(&index, "linux-64");
    }
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(bytes) {
        let _ = artifact::check_envoci(&manifest);
    }
    let _ = serde_json::from_slice::<Catalog>(bytes);
    let _ = serde_json::from_slice::<Digest>(bytes);
}

fn index_entry() -> impl Strategy<Value = IndexEntry> {
    let platform = prop_oneof![
        Just("linux-64".to_string()),
        Just("osx-arm64".to_string()),
        Just("win-64".to_string()),
        Just("noarch".to_string()),
        ".{0,20}",
    ];
    (any::<[u8; 32]>(), any::<u64>(), platform).prop_map(|(digest, size, platform)| IndexEntry {
        digest: Digest(digest),
        size,
        platform,
    })
}

/// A file's content made of `pieces`: lowercase words (never holding `/`), occurrences
/// of `marker`, and NULs.
fn content_with(marker: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => "[a-z ]{0,12}".prop_map(String::into_bytes),
        2 => Just(marker.as_bytes().to_vec()),
        1 => Just(vec![0u8]),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// A target path: `/` then components with no lowercase letter, so it never appears in
/// [`content_with`]'s words nor in the placeholder.
fn target_path(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Z0-9_.]{1,12}", 1..8).prop_map(move |parts| {
        let mut path = format!("/{}", parts.join("/"));
        path.truncate(max);
        path
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn documents_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_documents(&bytes);
    }

    #[test]
    fn documents_never_panic_on_arbitrary_json(value in any_json()) {
        parse_documents(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn digest_parse_never_panics_and_round_trips(text in ".{0,80}", raw in any::<[u8; 32]>()) {
        if let Ok(digest) = Digest::parse(&text) {
            prop_assert_eq!(Digest::parse(&digest.oci()).unwrap(), digest);
        }
        let digest = Digest(raw);
        prop_assert_eq!(Digest::parse(&digest.oci()).unwrap(), digest);
        prop_assert_eq!(Digest::parse(&digest.hex()).unwrap(), digest);
        prop_assert_eq!(serde_json::from_value::<Digest>(json!(digest.oci())).unwrap(), digest);
    }

    #[test]
    fn canonical_json_is_stable(value in any_json()) {
        let once = envoci::json::to_canonical_vec(&value).unwrap();
        let reparsed: Value = serde_json::from_slice(&once).unwrap();
        prop_assert_eq!(&reparsed, &value);
        prop_assert_eq!(envoci::json::to_canonical_vec(&reparsed).unwrap(), once);
    }

    #[test]
    fn index_document_round_trips(entries in prop::collection::vec(index_entry(), 0..6)) {
        let bytes = artifact::index_document(entries.clone()).unwrap();
        let index = artifact::parse_index(&bytes).unwrap().expect("an index");
        let mut sorted = entries;
        sorted.sort_by(|a, b| a.platform.cmp(&b.platform));
        prop_assert_eq!(artifact::envoci_entries(&index), sorted);
    }

    #[test]
    fn relocation_never_panics(
        src in prop::collection::vec(any::<u8>(), 0..300),
        from in prop::collection::vec(1u8..=255, 1..16),
        to in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        // `from` holds no NUL and is not empty, as a placeholder (see the fuzz target
        // for what else is tried).
        let text = relocate::relocate_text(&src, &from, &to);
        if !relocate::contains(&src, &from) && !src.starts_with(b"#!") {
            prop_assert_eq!(&text, &src);
        }
        match relocate::relocate_binary(&src, &from, &to) {
            Ok(out) => prop_assert_eq!(out.len(), src.len()),
            Err(e) => prop_assert!(to.len() > from.len(), "{}", e),
        }
        if let Some(out) = relocate::unrelocate_binary(&src, &from, &to) {
            prop_assert_eq!(out.len(), src.len());
        }
        let _ = relocate::fix_long_shebang(src.clone());
    }

    #[test]
    fn text_relocation_reverses(src in content_with(PLACEHOLDER), target in target_path(400)) {
        let relocated = relocate::replace_text(&src, PLACEHOLDER.as_bytes(), target.as_bytes());
        prop_assert!(!relocate::contains(&relocated, PLACEHOLDER.as_bytes()));
        let back = relocate::replace_text(&relocated, target.as_bytes(), PLACEHOLDER.as_bytes());
        prop_assert_eq!(back, src);
    }

    #[test]
    fn binary_relocation_reverses(
        src in content_with(PLACEHOLDER),
        target in target_path(PLACEHOLDER.len()),
    ) {
        let mut src = src;
        src.push(0); // every C string ends with its NUL
        let relocated =
            relocate::relocate_binary(&src, PLACEHOLDER.as_bytes(), target.as_bytes()).unwrap();
        prop_assert_eq!(relocated.len(), src.len());
        prop_assert!(!relocate::contains(&relocated, PLACEHOLDER.as_bytes()));
        let back = relocate::unrelocate_binary(&relocated, target.as_bytes(), PLACEHOLDER.as_bytes());
        prop_assert_eq!(back, Some(src));
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn layer_reader_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        compression in compression(),
    ) {
        let _ = read_layer(&bytes, compression);
    }

    #[test]
    fn layers_read_back_as_written(files in layer_entries(), compression in compression()) {
        let (digests, blob, entries) = write_layer(&files, compression);
        let (read, digest, size) = read_layer(&blob, compression).unwrap();
        prop_assert_eq!(read, entries);
        prop_assert_eq!(digest, digests.digest);
        prop_assert_eq!(size, digests.size);
        prop_assert_eq!(size, blob.len() as u64);
    }

    #[test]
    fn damaged_layers_never_panic(
        files in layer_entries(),
        compression in compression(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let (_, mut blob, _) = write_layer(&files, compression);
        let at = flip.index(blob.len());
        blob[at] ^= byte | 1;
        let _ = read_layer(&blob, compression);
        blob.truncate(cut.index(blob.len()));
        let _ = read_layer(&blob, compression);
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn archive_reader_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..3072),
    ) {
        let _ = import_archive(&bytes);
    }

    #[test]
    fn exported_archives_import_and_damaged_ones_never_panic(
        files in env_entries(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let archive = envoci_archive(&files);
        prop_assert_eq!(import_archive(&archive), Some(Ok(())));
        let mut damaged = archive.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= byte | 1;
        let _ = import_archive(&damaged);
        let _ = import_archive(&archive[..cut.index(archive.len())]);
    }
}

/// The seed corpora of the fuzz targets (`fuzz/seeds/`), written from envoci's own
/// writers: `cargo test --test properties -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand when the formats change"]
fn write_fuzz_seeds() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let mut files = BTreeMap::new();
    let script = format!("#!{PLACEHOLDER}/bin/python\nprint('hi')\n").into_bytes();
    files.insert(
        "bin/tool".to_string(),
        (
            EntryKind::File {
                digest: Digest::of(&script),
                size: script.len() as u64,
                exec: true,
            },
            script,
        ),
    );
    files.insert(
        "lib/link".to_string(),
        (
            EntryKind::Symlink {
                target: "../bin/tool".into(),
            },
            Vec::new(),
        ),
    );
    files.insert("share/empty".to_string(), (EntryKind::Dir, Vec::new()));
    for (tag, compression) in [
        (0u8, Compression::None),
        (1, Compression::Gzip),
        (2, Compression::Zstd),
    ] {
        let (_, blob, _) = write_layer(&files, compression);
        write(
            "layer",
            &format!("layer-{tag}"),
            &[&[tag][..], &blob].concat(),
        );
    }
    let archive = envoci_archive(&files);
    assert_eq!(import_archive(&archive), Some(Ok(())));
    write("layout", "env.tar", &archive);
    let (digests, _, _) = write_layer(&files, Compression::Zstd);
    let catalog = catalog_json(&digests, 3, PLACEHOLDER);
    write(
        "documents",
        "catalog.json",
        &serde_json::to_vec(&catalog).unwrap(),
    );
    let entries = vec![IndexEntry {
        digest: digests.digest,
        size: 1234,
        platform: "linux-64".into(),
    }];
    write(
        "documents",
        "index.json",
        &artifact::index_document(entries).unwrap(),
    );
    let catalog: Catalog = serde_json::from_value(catalog).unwrap();
    let manifest = artifact::build_manifest(
        &catalog,
        (Digest::of(b"{}"), 2),
        &[(digests, Compression::Zstd.media_type())],
    );
    write(
        "documents",
        "manifest.json",
        &envoci::json::to_canonical_vec(&manifest).unwrap(),
    );
    for (name, from, to, src) in [
        (
            "text",
            "/ph",
            "/opt/env",
            &b"#!/ph/bin/python\nx=/ph/lib\n"[..],
        ),
        (
            "binary",
            "/ph/long",
            "/s",
            &b"a\0/ph/long/lib:/ph/long/x\0\0b"[..],
        ),
    ] {
        let mut input = vec![from.len() as u8, to.len() as u8];
        input.extend_from_slice(from.as_bytes());
        input.extend_from_slice(to.as_bytes());
        input.extend_from_slice(src);
        write("relocate", name, &input);
    }
}
