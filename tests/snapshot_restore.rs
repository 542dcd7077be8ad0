//! Snapshot → restore of real conda environments (made by rattler from a real local
//! channel), through the `envoci` binary, as a user runs it.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::envoci::Envoci;
use common::{install_env, run_stdout as run, CONDA_PLACEHOLDER};

const ENV_A: &[&str] = &[
    "reloc-bin",
    "reloc-text",
    "links",
    "clobber-a",
    "clobber-b",
    "shared-dep",
    "app-one",
    "pad-1",
    "pad-2",
];
const ENV_B: &[&str] = &["links", "shared-dep", "app-two", "pad-3"];

/// A prefix with ENV_A installed, plus an absolute symlink into the prefix (as
/// post-link scripts make) and an empty directory.
fn env_a(dir: &Path) -> PathBuf {
    let prefix = dir.join("env-a");
    install_env(&prefix, ENV_A);
    std::os::unix::fs::symlink(prefix.join("bin/hello.sh"), prefix.join("bin/hello-abs")).unwrap();
    fs::create_dir_all(prefix.join("var/empty-dir")).unwrap();
    prefix
}

/// `env_a` snapshotted as `a` and restored at `name` below the test's directory: the
/// prefix and the space.
fn restored_a(t: &Envoci, name: &str) -> (PathBuf, PathBuf) {
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let target = t.dir().join(name);
    t.ok(&["restore", "a", "--target", target.to_str().unwrap()]);
    (prefix, target)
}

#[test]
fn restored_environment_runs_at_a_longer_and_a_shorter_path() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    assert_eq!(
        run(&prefix.join("bin/whereami")),
        prefix.to_str().unwrap(),
        "fixture sanity"
    );
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);

    let longer = t
        .dir()
        .join("some/much/longer/directory/than/the/original/prefix/was/env");
    let shorter = t.dir().join("s");
    for target in [&longer, &shorter] {
        t.ok(&["restore", "a", "--target", target.to_str().unwrap()]);
        let target_str = target.to_str().unwrap();
        assert_eq!(
            run(&target.join("bin/whereami")),
            target_str,
            "binary placeholder relocated"
        );
        assert_eq!(
            run(&target.join("bin/hello.sh")),
            target_str,
            "text placeholder relocated"
        );
        assert_eq!(
            run(&target.join("bin/hello-abs")),
            target_str,
            "absolute link into the prefix follows the space"
        );
        assert_eq!(
            fs::read_link(target.join("bin/hello-abs")).unwrap(),
            Path::new("../bin/hello.sh")
        );
        assert_eq!(
            fs::read_link(target.join("lib/libdemo.so")).unwrap(),
            Path::new("libdemo.so.1")
        );
        assert_eq!(
            fs::read(target.join("lib/libdemo.so")).unwrap(),
            fs::read(prefix.join("lib/libdemo.so.1")).unwrap()
        );
        assert_eq!(
            fs::metadata(target.join("share/links/empty.txt"))
                .unwrap()
                .len(),
            0
        );
        assert!(fs::metadata(target.join("var/empty-dir")).unwrap().is_dir());
        assert_eq!(run(&target.join("bin/links-tool")), "links-tool");
        let conf = fs::read_to_string(target.join("etc/reloc-text.conf")).unwrap();
        assert!(conf.contains(&format!("prefix={target_str}")), "{conf}");
        assert!(!conf.contains(CONDA_PLACEHOLDER));
        assert_eq!(
            fs::read(target.join("share/clobber.txt")).unwrap(),
            fs::read(prefix.join("share/clobber.txt")).unwrap(),
            "the clobbered path holds what the original environment held"
        );
        assert!(target.join("conda-meta").is_dir());
    }
}

#[test]
fn every_file_of_the_original_comes_back_with_content_and_mode() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let target = t.dir().join("restored");
    t.ok(&[
        "restore",
        "a",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "copy",
    ]);
    assert_same_tree(&t, "a", &prefix, &target);
}

/// Every path of `prefix` is in `target` with the same type and exec bit, and every
/// file not relocated by `tag`'s catalog has the same content.
fn assert_same_tree(t: &Envoci, tag: &str, prefix: &Path, target: &Path) {
    let relocated: Vec<String> = t.catalog(tag)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            l["relocations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["path"].as_str().unwrap().to_string())
        })
        .collect();
    let mut compared = 0;
    for entry in walkdir::WalkDir::new(prefix).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(prefix).unwrap();
        let other = target.join(rel);
        let (a, b) = (
            fs::symlink_metadata(entry.path()).unwrap(),
            fs::symlink_metadata(&other).unwrap(),
        );
        assert_eq!(
            a.file_type().is_dir(),
            b.file_type().is_dir(),
            "{}",
            rel.display()
        );
        if a.is_file() {
            assert_eq!(
                a.mode() & 0o111 != 0,
                b.mode() & 0o111 != 0,
                "exec bit of {}",
                rel.display()
            );
            if !relocated.iter().any(|r| Path::new(r) == rel) {
                assert_eq!(
                    fs::read(entry.path()).unwrap(),
                    fs::read(&other).unwrap(),
                    "content of {}",
                    rel.display()
                );
            }
            compared += 1;
        }
    }
    assert!(compared > 50, "compared {compared} files");
    assert!(relocated.len() >= 3, "relocations recorded: {relocated:?}");
}

#[test]
fn shared_package_has_one_layer_digest_and_snapshots_are_reproducible() {
    let t = Envoci::new();
    let a = env_a(t.dir());
    let b = t.dir().join("a-quite-different-and-longer-prefix/env-b");
    install_env(&b, ENV_B);
    let first = t.json(&["snapshot", a.to_str().unwrap(), "--tag", "a"]);
    let again = t.json(&["snapshot", a.to_str().unwrap(), "--tag", "a2"]);
    assert_eq!(
        first["digest"], again["digest"],
        "snapshotting twice gives the same manifest"
    );
    t.ok(&["snapshot", b.to_str().unwrap(), "--tag", "b"]);

    let layer = |tag: &str, name: &str| -> String {
        t.layer(tag, name)["digest"].as_str().unwrap().to_string()
    };
    for shared in ["shared-dep", "links"] {
        assert_eq!(
            layer("a", shared),
            layer("b", shared),
            "{shared} layer is identical in both environments"
        );
    }
    assert_ne!(layer("a", "env"), layer("b", "env"));
}

#[test]
fn catalogs_validate_against_the_schema_and_manifests_are_envoci_artifacts() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let validator = common::catalog_schema();
    let catalog = t.catalog("a");
    let errors: Vec<String> = validator
        .iter_errors(&catalog)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The schema is not vacuous: a broken catalog fails it.
    let mut broken = catalog.clone();
    broken["layers"][0]["kind"] = "container".into();
    assert!(!validator.is_valid(&broken));

    let inspect = t.json(&["inspect", "a"]);
    let manifest = &inspect["manifest"];
    assert_eq!(manifest["artifactType"], "application/vnd.envoci.env.v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.envoci.catalog.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        ENV_A.len() + 1,
        "one layer per package plus the environment layer"
    );
    let reloc_bin = layers
        .iter()
        .find(|l| l["annotations"]["io.envoci.name"] == "reloc-bin")
        .unwrap();
    assert_eq!(
        reloc_bin["mediaType"],
        "application/vnd.envoci.layer.v1.tar+zstd"
    );
    assert_eq!(
        reloc_bin["annotations"]["org.opencontainers.image.title"],
        "reloc-bin-1.0-h0_0"
    );
    assert_eq!(reloc_bin["annotations"]["io.envoci.kind"], "conda");
    assert!(reloc_bin["annotations"]["io.envoci.sha256"]
        .as_str()
        .is_some_and(|s| s.len() == 64));
    let env = layers.last().unwrap();
    assert_eq!(env["annotations"]["io.envoci.kind"], "env");

    // The store is a standard OCI layout: index.json tags the manifest.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(t.home().join("index.json")).unwrap()).unwrap();
    assert!(index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "a"));
    assert_eq!(
        fs::read_to_string(t.home().join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
}

#[test]
fn restore_repairs_exactly_what_changed_and_a_pristine_space_writes_nothing() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let target = t.dir().join("space");
    let target_s = target.to_str().unwrap();
    let first = t.json(&["restore", "a", "--target", target_s]);
    assert_eq!(first["created"], true);

    let again = t.json(&["restore", "a", "--target", target_s]);
    assert_eq!(
        (again["written"].as_u64(), again["removed"].as_u64()),
        (Some(0), Some(0)),
        "pristine space: nothing written"
    );

    // Edit (replacing the file, as editors do), delete, add, chmod.
    let edited = target.join("etc/reloc-text.conf");
    fs::remove_file(&edited).unwrap();
    fs::write(&edited, "edited\n").unwrap();
    fs::remove_file(target.join("share/shared-dep/data-1.txt")).unwrap();
    fs::write(target.join("share/added.txt"), "added").unwrap();
    let chmodded = target.join("bin/hello.sh");
    fs::set_permissions(&chmodded, fs::Permissions::from_mode(0o600)).unwrap();

    let check = t.run(&["check"]);
    assert!(!check.status.success(), "check notices the modified space");
    let repair = t.json(&["restore", "a", "--target", target_s]);
    assert_eq!(repair["written"].as_u64(), Some(3), "{repair}");
    assert_eq!(
        repair["removed"].as_u64(),
        Some(3),
        "the edited, chmodded and added paths: {repair}"
    );
    assert!(fs::read_to_string(&edited)
        .unwrap()
        .contains(&format!("prefix={target_s}")));
    assert!(target.join("share/shared-dep/data-1.txt").exists());
    assert!(!target.join("share/added.txt").exists());
    assert_eq!(run(&chmodded), target_s);
    t.ok(&["check"]);
    let quiet = t.json(&["restore", "a", "--target", target_s, "--verify"]);
    assert_eq!(quiet["written"].as_u64(), Some(0), "{quiet}");
}

#[test]
fn a_drifted_space_is_repaired_from_its_record_and_its_layers_only_when_the_cas_lacks_a_file() {
    let t = Envoci::new();
    let (prefix, target) = restored_a(&t, "space");
    let target_s = target.to_str().unwrap();
    let text = target.join("etc/reloc-text.conf");
    let data = target.join("share/shared-dep/data-1.txt");

    // A relocated file, a plain one and a whole directory gone; the layer indexes too:
    // the record says what they were, so no index is read (none is made again).
    fs::remove_file(&text).unwrap();
    fs::remove_file(&data).unwrap();
    fs::remove_dir_all(target.join("bin")).unwrap();
    let indexes = t.layer_indexes();
    assert!(!indexes.is_empty());
    for index in &indexes {
        fs::remove_file(index).unwrap();
    }
    let repair = t.json(&["restore", "a", "--target", target_s]);
    assert_eq!(repair["repaired"].as_u64(), Some(0), "{repair}");
    assert!(t.layer_indexes().is_empty(), "{:?}", t.layer_indexes());
    assert!(fs::read_to_string(&text)
        .unwrap()
        .contains(&format!("prefix={target_s}")));
    assert_eq!(run(&target.join("bin/hello.sh")), target_s);
    assert_same_tree(&t, "a", &prefix, &target);

    // A deleted file whose CAS copy is gone as well: its layer is extracted again.
    let ino = fs::metadata(&data).unwrap().ino();
    let cas = t
        .cas_dir_files()
        .into_iter()
        .find(|f| fs::metadata(f).unwrap().ino() == ino)
        .expect("the space file is a hard link to its CAS file");
    fs::remove_file(&cas).unwrap();
    fs::remove_file(&data).unwrap();
    let repair = t.json(&["restore", "a", "--target", target_s]);
    assert_eq!(repair["repaired"].as_u64(), Some(1), "{repair}");
    assert_eq!(repair["written"].as_u64(), Some(1), "{repair}");
    assert!(cas.is_file() && !t.layer_indexes().is_empty());
    assert_same_tree(&t, "a", &prefix, &target);
    t.ok(&["check", "--verify"]);
}

#[test]
fn a_space_recorded_by_an_earlier_version_is_repaired_and_its_record_migrated() {
    let t = Envoci::new();
    let (_, target) = restored_a(&t, "space");
    let target_s = target.to_str().unwrap();
    // The record as versions before state-v2 wrote it: JSON in state-v1, relocated
    // files without the size of their CAS content.
    let store = envoci::store::Store::open(t.home()).unwrap();
    let canonical = fs::canonicalize(&target).unwrap();
    let state = store.space_state(&canonical).unwrap().expect("recorded");
    let mut record = serde_json::to_value(&state).unwrap();
    let mut stripped = 0;
    for (_, path) in record["paths"].as_object_mut().unwrap() {
        stripped += path.as_object_mut().unwrap().remove("cas_size").is_some() as usize;
    }
    assert!(
        stripped >= 3,
        "relocated files record their CAS size: {stripped}"
    );
    let id = envoci::store::space_id(&canonical);
    let (v1, v2) = (
        t.home().join(format!("state-v1/{id}.json")),
        t.home().join(format!("state-v2/{id}.state")),
    );
    fs::create_dir_all(v1.parent().unwrap()).unwrap();
    fs::write(&v1, serde_json::to_vec(&record).unwrap()).unwrap();
    fs::remove_file(&v2).unwrap();
    let spaces = t.json(&["ls", "--spaces"]);
    assert_eq!(
        (spaces[0]["path"].as_str(), spaces[0]["dirty"].as_bool()),
        (canonical.to_str(), Some(false)),
        "listed from the old record: {spaces}"
    );

    let text = target.join("etc/reloc-text.conf");
    fs::remove_file(&text).unwrap();
    let repair = t.json(&["restore", "a", "--target", target_s]);
    assert_eq!(repair["written"].as_u64(), Some(1), "{repair}");
    assert!(fs::read_to_string(&text)
        .unwrap()
        .contains(&format!("prefix={target_s}")));
    assert!(
        v2.is_file() && !v1.exists(),
        "the record is in the new format now"
    );
    t.ok(&["check", "--verify"]);

    // A record altered on disk is refused as such, never read as another record.
    let mut bytes = fs::read(&v2).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&v2, bytes).unwrap();
    let err = t.fail_as(6, &["restore", "a", "--target", target_s]);
    assert!(err.contains("is not a valid space record"), "{err}");
    assert!(fs::read_to_string(&text).unwrap().contains(target_s));
}

#[test]
fn restore_into_managed_space_and_listing() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let report = t.json(&["restore", "a", "--space", "work"]);
    let target = PathBuf::from(report["target"].as_str().unwrap());
    assert!(
        target.starts_with(t.home()),
        "managed spaces live in the store"
    );
    assert_eq!(run(&target.join("bin/whereami")), target.to_str().unwrap());
    let ls = t.json(&["ls"]);
    let row = &ls.as_array().unwrap()[0];
    assert_eq!(row["tag"], "a");
    assert_eq!(row["packages"].as_u64(), Some(ENV_A.len() as u64));
    assert_eq!(row["platform"], "linux-64");
    assert!(row["files"].as_u64().unwrap() > 50, "{row}");
    let text = t.stdout(&["ls"]);
    assert!(
        text.starts_with("TAG") && text.lines().any(|l| l.starts_with("a ")),
        "{text}"
    );
    let inspect = t.stdout(&["inspect", "a"]);
    assert!(inspect.contains("reloc-bin-1.0-h0_0"), "{inspect}");
}

#[test]
fn link_modes_give_the_same_space() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    for mode in ["auto", "hardlink", "copy"] {
        let target = t.dir().join(format!("space-{mode}"));
        let report = t.json(&[
            "restore",
            "a",
            "--target",
            target.to_str().unwrap(),
            "--link",
            mode,
        ]);
        let methods = report["methods"].as_object().unwrap();
        assert!(methods.contains_key("relocated"), "{report}");
        match mode {
            "hardlink" => assert!(
                methods.contains_key("hardlink") && !methods.contains_key("copy"),
                "{report}"
            ),
            "copy" => assert!(
                methods.contains_key("copy") && !methods.contains_key("hardlink"),
                "{report}"
            ),
            _ => {}
        }
        assert_eq!(run(&target.join("bin/whereami")), target.to_str().unwrap());
        let data = target.join("share/shared-dep/data-1.txt");
        let nlink = fs::metadata(&data).unwrap().nlink();
        if mode == "copy" {
            assert_eq!(nlink, 1, "a copy is private");
        }
    }
    t.ok(&["check", "--verify"]);
}

#[test]
fn a_directory_without_conda_meta_is_one_environment_layer() {
    let t = Envoci::new();
    let dir = t.dir().join("plain");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(
        dir.join("bin/tool"),
        format!("#!/bin/sh\necho {}\n", dir.display()),
    )
    .unwrap();
    fs::set_permissions(dir.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("readme"), "hello").unwrap();
    let snap = t.json(&["snapshot", dir.to_str().unwrap()]);
    assert_eq!(snap["tag"], "plain", "tag defaults to the directory name");
    assert_eq!(snap["layers"].as_u64(), Some(1));
    assert_eq!(snap["packages"].as_u64(), Some(0));
    let target = t.dir().join("plain-restored");
    t.ok(&["restore", "plain", "--target", target.to_str().unwrap()]);
    assert_eq!(run(&target.join("bin/tool")), target.to_str().unwrap());
}

#[test]
fn gzip_and_uncompressed_layers_restore_too() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    for (tag, compression, media) in [("gz", "gzip", "tar+gzip"), ("raw", "none", "tar")] {
        t.ok(&[
            "snapshot",
            prefix.to_str().unwrap(),
            "--tag",
            tag,
            "--compression",
            compression,
        ]);
        let inspect = t.json(&["inspect", tag]);
        assert_eq!(
            inspect["manifest"]["layers"][0]["mediaType"],
            format!("application/vnd.envoci.layer.v1.{media}")
        );
        let target = t.dir().join(tag);
        t.ok(&["restore", tag, "--target", target.to_str().unwrap()]);
        assert_eq!(run(&target.join("bin/whereami")), target.to_str().unwrap());
    }
}

#[test]
fn a_repeated_snapshot_reuses_layers_but_never_a_missing_blob() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    let first = t.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let catalog = t.catalog("a");
    let layer = catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "pad-1")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = t
        .home()
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    fs::remove_file(&blob).unwrap();
    assert!(
        !t.run(&["check"]).status.success(),
        "a missing layer blob is reported"
    );
    let again = t.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    assert_eq!(first["digest"], again["digest"]);
    assert!(
        blob.exists(),
        "the layer was written again, not taken from the cache on trust"
    );
    t.ok(&["check", "--verify"]);
}

#[test]
fn deleting_a_space_directory_drops_it_from_check() {
    let t = Envoci::new();
    let (_, target) = restored_a(&t, "gone");
    fs::remove_dir_all(&target).unwrap();
    let report = t.json(&["check"]);
    assert_eq!(report["forgotten"][0], target.to_str().unwrap(), "{report}");
    assert_eq!(report["spaces"].as_u64(), Some(1));
    let again = t.json(&["check"]);
    assert_eq!(
        (
            again["spaces"].as_u64(),
            again["forgotten"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{again}"
    );
    // The path is free for a new space.
    t.ok(&["restore", "a", "--target", target.to_str().unwrap()]);
    assert_eq!(run(&target.join("bin/whereami")), target.to_str().unwrap());
}

#[test]
fn an_explicit_link_mode_the_filesystem_lacks_fails_clearly_without_falling_back() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "a"]);
    let target = t.dir().join("space");
    // The test directory's filesystem (ext4/overlay/tmpfs here) cannot clone files.
    let out = t.run(&[
        "--json",
        "restore",
        "a",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "reflink",
    ]);
    if out.status.success() {
        // A reflink-capable filesystem (XFS, btrfs): every non-relocated file is a clone.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            report["methods"]["reflink"].as_u64().unwrap() > 50,
            "{report}"
        );
        assert!(
            report["methods"].get("hardlink").is_none() && report["methods"].get("copy").is_none(),
            "{report}"
        );
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("{\"error\":\"cannot reflink ") && err.contains("--link auto"),
        "{err}"
    );
    assert!(
        err.contains(target.to_str().unwrap()) && !err.contains(".envoci-"),
        "names the target, not a temporary: {err}"
    );
    assert!(!target.exists(), "nothing left behind");
    let auto = t.json(&[
        "restore",
        "a",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "auto",
    ]);
    assert!(
        auto["methods"].get("reflink").is_none() && auto["methods"].get("hardlink").is_some(),
        "{auto}"
    );
}

#[test]
fn above_the_layer_limit_small_packages_share_group_layers() {
    let t = Envoci::new();
    let prefix = env_a(t.dir());
    let snap = t.json(&[
        "snapshot",
        prefix.to_str().unwrap(),
        "--tag",
        "a",
        "--max-layers",
        "4",
    ]);
    let catalog = t.catalog("a");
    let layers = catalog["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        4,
        "2 packages of their own, 1 group, the env layer"
    );
    assert_eq!(
        t.json(&["inspect", "a"])["manifest"]["layers"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let group = layers
        .iter()
        .find(|l| l["kind"] == "group")
        .expect("a group layer");
    let members: Vec<&str> = group["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), ENV_A.len() - 2, "{members:?}");
    assert_eq!(layers.last().unwrap()["kind"], "env");
    assert!(common::catalog_schema().is_valid(&catalog));

    // Grouping changes the layers, not the environment: clobbered paths included.
    let target = t.dir().join("restored");
    t.ok(&[
        "restore",
        "a",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "copy",
    ]);
    assert_same_tree(&t, "a", &prefix, &target);
    assert_eq!(run(&target.join("bin/whereami")), target.to_str().unwrap());
    // And it is deterministic: another store groups the same way.
    let other = Envoci::new();
    let again = other.json(&[
        "snapshot",
        prefix.to_str().unwrap(),
        "--tag",
        "a",
        "--max-layers",
        "4",
    ]);
    assert_eq!(again["digest"], snap["digest"]);
    let out = other.run(&["snapshot", prefix.to_str().unwrap(), "--max-layers", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("'2'") && err.contains("3..=100000"), "{err}");
}

/// A prefix at `dir/name` with `python` and `pyconf`, its modules compiled the way
/// conda compiles noarch packages: timestamp pycs naming their absolute path.
fn python_env_compiled_in_place(dir: &Path, name: &str) -> PathBuf {
    let prefix = dir.join(name);
    install_env(&prefix, &["python", "pyconf"]);
    let status = std::process::Command::new(prefix.join("bin/python"))
        .args(["-m", "compileall", "-q"])
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(status.success());
    prefix
}

#[test]
fn a_snapshots_bytecode_is_path_independent_and_valid_after_restore() {
    let t = Envoci::new();
    let one = python_env_compiled_in_place(t.dir(), "env-one");
    let two = python_env_compiled_in_place(t.dir(), "a-longer-path/to/env-two");
    t.ok(&["snapshot", one.to_str().unwrap(), "--tag", "one"]);
    t.ok(&["snapshot", two.to_str().unwrap(), "--tag", "two"]);
    let layer = |tag: &str, name: &str| t.layer(tag, name);
    // The snapshots' paths are gone from the bytecode: one layer for both, the
    // interpreter's (whose stdlib compileall compiled again in place) too.
    for name in ["pyconf", "python"] {
        assert_eq!(
            layer("one", name)["digest"],
            layer("two", name)["digest"],
            "{name}"
        );
    }
    let pyconf = |tag: &str| layer(tag, "pyconf");
    let pyc_modes = pyconf("one")["relocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["mode"] == "pyc")
        .count();
    assert_eq!(pyc_modes, 2, "{}", pyconf("one"));
    // The schema knows the mode.
    let validator = common::catalog_schema();
    assert!(validator.is_valid(&t.catalog("one")));

    let target = t.dir().join("restored/here");
    t.ok(&["restore", "two", "--target", target.to_str().unwrap()]);
    let prefix = fs::canonicalize(&target).unwrap();
    let site = common::site_packages(&prefix).join("pyconf");
    // Python imports the module from the space, and its bytecode matches the source.
    let imports_from_bytecode = || {
        let (out, log) = t.import_verbosely(
            &target,
            "import pyconf, pyconf.commented; print(pyconf.where(), pyconf.where.__code__.co_filename)",
        );
        assert_eq!(
            out,
            format!(
                "{} {}",
                prefix.display(),
                site.join("__init__.py").display()
            )
        );
        for module in ["__init__", "commented"] {
            let matched = format!(" matches {}", site.join(format!("{module}.py")).display());
            assert!(
                log.lines().any(|l| l.ends_with(&matched)),
                "{module}:\n{log}"
            );
        }
        assert!(!log.contains("# wrote "), "{log}");
    };
    imports_from_bytecode();
    // Bytecode repaired from the space's record is relocated like a fresh restore's.
    fs::remove_dir_all(site.join("__pycache__")).unwrap();
    let repair = t.json(&["restore", "two", "--target", target.to_str().unwrap()]);
    assert_eq!(
        repair["written"], 3,
        "the directory and two bytecode files: {repair}"
    );
    imports_from_bytecode();
    let again = t.json(&[
        "restore",
        "two",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(again["written"], 0, "{again}");
}

#[test]
fn cas_files_get_their_mode_whatever_the_umask() {
    // Staged CAS files are created with their final mode where the umask keeps it, and
    // given it afterwards where it does not: either way the CAS holds 0444 and 0555.
    let builder = Envoci::new();
    let prefix = env_a(builder.dir());
    let archive = builder.dir().join("a.tar");
    for (mask, what) in [(0o022, "a usual umask"), (0o077, "a private umask")] {
        let run = |t: &Envoci, args: &[&str]| {
            let mut cmd = t.cmd(args);
            with_umask(&mut cmd, mask);
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{args:?} under {what}: {stderr}");
        };
        // Ingested by a snapshot, and unpacked from layers by an import.
        let snapshotted = Envoci::new();
        run(
            &snapshotted,
            &["snapshot", prefix.to_str().unwrap(), "--tag", "a"],
        );
        run(
            &snapshotted,
            &["export", "a", "-o", archive.to_str().unwrap()],
        );
        let imported = Envoci::new();
        run(&imported, &["import", archive.to_str().unwrap()]);
        let target = imported.dir().join("restored");
        run(
            &imported,
            &["restore", "a", "--target", target.to_str().unwrap()],
        );
        for t in [&snapshotted, &imported] {
            let files = t.cas_dir_files();
            assert!(files.len() > 20, "{} CAS files", files.len());
            for file in files {
                let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
                assert!(
                    mode == 0o444 || mode == 0o555,
                    "{} is {mode:o} under {what}",
                    file.display()
                );
            }
            t.ok(&["check"]);
        }
        assert_same_tree(&imported, "a", &prefix, &target);
        fs::remove_file(&archive).unwrap();
    }
}

/// Makes `cmd` run with file-creation mask `mask`.
fn with_umask(cmd: &mut std::process::Command, mask: libc::mode_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls umask, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
}
