//! Air-gapped distribution: OCI layouts and archives written by `envoci export`, read by
//! `envoci import` / `restore oci:…` / `restore oci-archive:…`, and exchanged with real
//! skopeo, the real oras Python SDK and a real CNCF distribution registry.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::envoci::{exit, Envoci, Json};
use common::oci::{container_image_layout, skopeo};
use common::registry::TestRegistry;
use common::{install_env, run_stdout, ENV_ONE, ENV_TWO};

/// A store holding `one` (and `two`, sharing most packages), snapshotted from real
/// installs of the fixture channel.
fn builder_with(envs: &[(&str, &[&str])]) -> Envoci {
    let t = Envoci::new();
    for (tag, pkgs) in envs {
        let prefix = t.dir().join(format!("prefix-{tag}"));
        install_env(&prefix, pkgs);
        t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", tag]);
    }
    t
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Entry names of a tar archive, read with the system's tar.
fn tar_entries(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn blob_entries(archive: &Path) -> Vec<String> {
    let mut blobs: Vec<String> = tar_entries(archive)
        .into_iter()
        .filter_map(|e| e.strip_prefix("blobs/sha256/").map(str::to_string))
        .filter(|h| !h.is_empty())
        .collect();
    blobs.sort();
    blobs
}

/// Digests (hex) of an artifact's manifest, config and layers.
fn artifact_blobs(t: &Envoci, tag: &str) -> Vec<String> {
    let inspected = t.json(&["inspect", tag]);
    let mut blobs = vec![hex(&inspected["summary"]["digest"])];
    let manifest = manifest_of(t, tag);
    blobs.push(hex(&manifest["config"]["digest"]));
    for layer in manifest["layers"].as_array().unwrap() {
        blobs.push(hex(&layer["digest"]));
    }
    blobs.sort();
    blobs.dedup();
    blobs
}

fn manifest_of(t: &Envoci, tag: &str) -> Json {
    t.json(&["inspect", tag])["manifest"].clone()
}

fn hex(v: &Json) -> String {
    v.as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string()
}

/// Blob files in a store (nothing committed means none).
fn store_blobs(t: &Envoci) -> usize {
    fs::read_dir(t.home().join("blobs/sha256")).map_or(0, |d| d.count())
}

fn assert_nothing_committed(t: &Envoci) {
    assert!(t.has_no_environments(), "no tags");
    assert_eq!(store_blobs(t), 0, "no blobs");
}

#[test]
fn an_exported_archive_goes_through_skopeo_and_a_registry_and_restores_a_working_env() {
    let registry = TestRegistry::start();
    let builder = builder_with(&[("one", ENV_ONE)]);
    let archive = builder.dir().join("envs.tar");
    builder.ok(&["export", "one", "-o", s(&archive)]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&archive).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "an archive is for others to read");
    let remote = registry.reference("mirror/envs:one");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}:one", archive.display()),
        &format!("docker://{remote}"),
    ]);
    let site = Envoci::new();
    let target = site.dir().join("env");
    site.ok(&["restore", &remote, "--target", s(&target)]);
    assert_eq!(run_stdout(&target.join("bin/whereami")), s(&target));
    assert_eq!(
        site.json(&["inspect", &remote])["summary"]["digest"],
        builder.json(&["inspect", "one"])["summary"]["digest"],
        "the digest survives export, skopeo and the registry"
    );
}

#[test]
fn skopeo_copies_an_artifact_into_a_layout_directory_and_envoci_restores_from_it() {
    let registry = TestRegistry::start();
    let builder = builder_with(&[("one", ENV_ONE)]);
    let remote = registry.reference("envs/demo:one");
    builder.ok(&["push", "one", &remote]);
    let site = Envoci::new();
    let usb = site.dir().join("usb");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{remote}"),
        &format!("oci:{}:one", usb.display()),
    ]);
    let target = site.dir().join("env");
    site.ok(&[
        "restore",
        &format!("oci:{}:one", usb.display()),
        "--target",
        s(&target),
    ]);
    assert_eq!(run_stdout(&target.join("bin/whereami")), s(&target));
    assert_eq!(
        site.json(&["ls"])[0]["tag"],
        "one",
        "the layout's tag names it in the store"
    );
    site.ok(&["check", "--verify"]);
}

#[test]
fn oras_pulls_one_titled_file_per_layer() {
    let registry = TestRegistry::start();
    let builder = builder_with(&[("one", ENV_ONE)]);
    let remote = registry.reference("envs/demo:one");
    builder.ok(&["push", "one", &remote]);
    let out_dir = builder.dir().join("oras-out");
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={host:?}, insecure=True)\n\
         for f in c.pull(target={remote:?}, outdir={out:?}): print(f)\n",
        host = registry.addr,
        out = s(&out_dir),
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oras pull (pip install oras; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = manifest_of(&builder, "one");
    let layers = manifest["layers"].as_array().unwrap();
    let mut expected: Vec<(String, u64)> = layers
        .iter()
        .map(|l| {
            let title = l["annotations"]["org.opencontainers.image.title"].as_str();
            (
                title.expect("every layer is titled").to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    expected.sort();
    let mut got: Vec<(String, u64)> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got, expected,
        "one file per layer, named by its title, of the layer's size"
    );
    assert!(
        got.iter().any(|(n, _)| n.starts_with("app-one-")),
        "{got:?}"
    );
}

#[test]
fn export_stores_shared_blobs_once_and_a_since_bundle_holds_exactly_the_new_blobs() {
    let builder = builder_with(&[("one", ENV_ONE), ("two", ENV_TWO)]);
    let both = builder.dir().join("envs.tar");
    builder.ok(&["export", "one", "two", "-o", s(&both)]);
    let one = artifact_blobs(&builder, "one");
    let two = artifact_blobs(&builder, "two");
    let mut union: Vec<String> = one.iter().chain(&two).cloned().collect();
    union.sort();
    union.dedup();
    assert!(
        union.len() < one.len() + two.len(),
        "the environments share blobs"
    );
    assert_eq!(blob_entries(&both), union, "each blob once");

    let delta = builder.dir().join("delta.tar");
    let report = builder.json(&["export", "two", "--since", "one", "-o", s(&delta)]);
    let new: Vec<String> = two.iter().filter(|b| !one.contains(b)).cloned().collect();
    assert_eq!(blob_entries(&delta), new, "exactly the blobs `one` lacks");
    assert!(fs::metadata(&delta).unwrap().len() < fs::metadata(&both).unwrap().len() / 2);
    assert_eq!(report["blobs_transferred"].as_u64(), Some(new.len() as u64));

    // A site without the base: refused, naming it, nothing committed.
    let bare = Envoci::new();
    let err = bare.fail_as(exit::NOT_FOUND, &["import", s(&delta)]);
    assert!(
        err.contains("incremental bundle") && err.contains("`one@sha256:"),
        "{err}"
    );
    assert_nothing_committed(&bare);

    // A site with the base: the delta imports on top and restores.
    let site = Envoci::new();
    let base = site.dir().join("base.tar");
    builder.ok(&["export", "one", "-o", s(&base)]);
    let first = site.json(&["import", &format!("oci-archive:{}", base.display())]);
    assert_eq!(first["imported"][0]["name"], "one");
    let second = site.json(&["import", s(&delta)]);
    assert_eq!(
        second["report"]["blobs_transferred"].as_u64(),
        Some(new.len() as u64 - 1),
        "all but the manifest are copied: {second}"
    );
    let target = site.dir().join("env");
    site.ok(&["restore", "two", "--target", s(&target)]);
    assert_eq!(run_stdout(&target.join("bin/whereami")), s(&target));
    site.ok(&["check", "--verify"]);
}

#[test]
fn restoring_straight_from_an_archive_copies_only_what_the_store_lacks() {
    let builder = builder_with(&[("one", ENV_ONE), ("two", ENV_TWO)]);
    let archive = builder.dir().join("envs.tar");
    builder.ok(&["export", "one", "two", "-o", s(&archive)]);
    let site = Envoci::new();
    let err = site.fail_as(
        exit::USAGE,
        &[
            "restore",
            &format!("oci-archive:{}", archive.display()),
            "--target",
            "x",
        ],
    );
    assert!(
        err.contains("several environments") && err.contains("one, two"),
        "{err}"
    );
    let err = site.fail_as(
        exit::NOT_FOUND,
        &[
            "restore",
            &format!("oci-archive:{}:three", archive.display()),
            "--target",
            "x",
        ],
    );
    assert!(
        err.contains("has no `three`") && err.contains("one, two"),
        "{err}"
    );

    let target = site.dir().join("env");
    site.ok(&[
        "restore",
        &format!("oci-archive:{}:one", archive.display()),
        "--target",
        s(&target),
    ]);
    assert_eq!(run_stdout(&target.join("bin/whereami")), s(&target));
    assert_eq!(
        store_blobs(&site),
        artifact_blobs(&builder, "one").len(),
        "only `one`'s blobs were copied"
    );
    let again = site.json(&["pull", &format!("oci-archive:{}:one", archive.display())]);
    assert_eq!(again["blobs_transferred"].as_u64(), Some(0), "{again}");
    let two = site.json(&["pull", &format!("oci-archive:{}:two", archive.display())]);
    let only_two = artifact_blobs(&builder, "two")
        .iter()
        .filter(|b| !artifact_blobs(&builder, "one").contains(b))
        .count();
    assert_eq!(
        two["blobs_transferred"].as_u64(),
        Some(only_two as u64 - 1),
        "{two}"
    );
}

#[test]
fn copy_goes_registry_to_layout_and_back_with_digests_preserved() {
    let registry = TestRegistry::start();
    let builder = builder_with(&[("one", ENV_ONE)]);
    let digest = builder.json(&["inspect", "one"])["summary"]["digest"].clone();
    let src = registry.reference("envs/demo:one");
    builder.ok(&["push", "one", &src]);
    let operator = Envoci::new();
    let usb = operator.dir().join("usb");
    let out = operator.json(&["copy", &src, &format!("oci:{}:robot", usb.display())]);
    assert_eq!(out["destination"]["digest"], digest);
    // The layout directory is read by skopeo as it is.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:robot", usb.display())])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        format!("sha256:{}", envoci::digest::Digest::of(&raw.stdout).hex()),
        digest.as_str().unwrap()
    );

    let inside = Envoci::new();
    let dst = registry.reference("mirror/demo:robot");
    let back = inside.json(&["copy", &format!("oci:{}:robot", usb.display()), &dst]);
    assert_eq!(back["destination"]["digest"], digest);
    let again = operator.json(&["copy", &src, &format!("oci:{}:robot", usb.display())]);
    assert_eq!(
        again["destination"]["blobs_transferred"].as_u64(),
        Some(0),
        "{again}"
    );
}

#[test]
fn import_of_a_corrupted_blob_fails_naming_it_and_commits_nothing() {
    let builder = builder_with(&[("one", ENV_ONE)]);
    let dir = builder.dir().join("layout");
    builder.ok(&["export", "one", "-o", s(&dir)]);
    let manifest = manifest_of(&builder, "one");
    let victim = hex(&manifest["layers"][0]["digest"]);
    let path = dir.join("blobs/sha256").join(&victim);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::remove_file(&path).unwrap();
    fs::write(&path, &bytes).unwrap();
    let archive = builder.dir().join("bad.tar");
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());

    for input in [dir.clone(), archive] {
        let site = Envoci::new();
        let err = site.fail_as(exit::INTEGRITY, &["import", s(&input)]);
        assert!(
            err.contains(&format!("sha256:{victim}")) && err.contains("does not match"),
            "{err}"
        );
        assert_nothing_committed(&site);
    }
    // There is no way to skip a check: `--trust` is gone.
    let site = Envoci::new();
    site.fail_as(exit::USAGE, &["import", "--trust", s(&dir)]);
    assert_nothing_committed(&site);
}

/// Writes a tar archive with one entry of `kind` named `name` beside a valid layout.
fn archive_with_entry(dir: &Path, good: &Path, name: &str, kind: tar::EntryType) -> PathBuf {
    let path = dir.join(format!("bad-{}.tar", name.replace(['/', '.'], "_")));
    let mut tar = tar::Builder::new(fs::File::create(&path).unwrap());
    tar.append_dir_all(".", good).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    if kind == tar::EntryType::Regular {
        h.set_size(2);
    } else {
        h.set_size(0);
        h.set_link_name("/etc/passwd").unwrap();
    }
    // Names `tar` refuses to write through its safe API go straight into the header.
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_cksum();
    tar.append(
        &h,
        &b"hi"[..if kind == tar::EntryType::Regular {
            2
        } else {
            0
        }],
    )
    .unwrap();
    tar.finish().unwrap();
    path
}

#[test]
fn bad_layouts_and_archives_are_refused_clearly_and_commit_nothing() {
    let builder = builder_with(&[("one", &["links", "shared-dep"])]);
    let good = builder.dir().join("good");
    builder.ok(&["export", "one", "-o", s(&good)]);
    let site = Envoci::new();
    let expect = |input: &Path, needle: &str| {
        let err = site.fail(&["import", s(input)]);
        assert!(
            err.contains(needle),
            "{}: expected `{needle}` in: {err}",
            input.display()
        );
        assert_nothing_committed(&site);
    };

    let not_layout = builder.dir().join("not-layout");
    fs::create_dir_all(&not_layout).unwrap();
    fs::write(not_layout.join("readme"), "hi").unwrap();
    expect(
        &not_layout,
        "is not an OCI image layout: it has no `oci-layout`",
    );

    let copy_of_good = |name: &str| {
        let d = builder.dir().join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&good)
            .arg(&d)
            .status()
            .unwrap();
        assert!(status.success());
        d
    };
    let no_index = copy_of_good("no-index");
    fs::remove_file(no_index.join("index.json")).unwrap();
    expect(&no_index, "it has no `index.json`");

    let bad_index = copy_of_good("bad-index");
    fs::write(bad_index.join("index.json"), "{\"manifests\": [").unwrap();
    expect(&bad_index, "index.json is not valid");

    let missing = copy_of_good("missing-blob");
    let layer = hex(&manifest_of(&builder, "one")["layers"][0]["digest"]);
    fs::remove_file(missing.join("blobs/sha256").join(&layer)).unwrap();
    expect(&missing, &format!("lacks blob sha256:{layer}"));

    let image = builder.dir().join("image");
    container_image_layout(&image, "web");
    expect(&image, "it is a container image");

    let archive = builder.dir().join("good.tar");
    builder.ok(&["export", "one", "-o", s(&archive)]);
    let truncated = builder.dir().join("truncated.tar");
    let bytes = fs::read(&archive).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    expect(&truncated, "truncated");

    let dotdot = archive_with_entry(
        builder.dir(),
        &good,
        "blobs/../../evil",
        tar::EntryType::Regular,
    );
    expect(&dotdot, "a name with `..`");
    let absolute = archive_with_entry(builder.dir(), &good, "/tmp/evil", tar::EntryType::Regular);
    expect(&absolute, "an absolute name");
    let link = archive_with_entry(
        builder.dir(),
        &good,
        "blobs/sha256/link",
        tar::EntryType::Symlink,
    );
    expect(&link, "holds no links");

    let not_tar = builder.dir().join("not.tar");
    fs::write(&not_tar, vec![b'x'; 4096]).unwrap();
    let err = site.fail(&["import", s(&not_tar)]);
    assert!(err.contains("not.tar"), "{err}");
    assert_nothing_committed(&site);
    assert!(!builder.dir().join("evil").exists() && !Path::new("/tmp/evil").exists());
}
