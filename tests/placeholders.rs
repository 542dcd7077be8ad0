//! Builds of packages whose binary placeholders are shorter than 255 bytes: conda-build's
//! `--prefix-length 80` (`reloc-80`) and very old packages' 32-byte
//! `/opt/anaconda1anaconda2anaconda3` (`reloc-32`, a `.tar.bz2` with `info/has_prefix`).
//! Each is a compiled C program holding its placeholder in a string constant, run after
//! the restore to show where it believes it is.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::envoci::{exit, Envoci, Json};
use common::{run_stdout as run, ANACONDA_PLACEHOLDER, CONDA_PLACEHOLDER_80};

/// A path below the (resolved) working directory exactly `len` bytes long, its last
/// component `x`s, below the directory `sub` when given.
fn target_of_len(t: &Envoci, sub: Option<&str>, len: usize) -> PathBuf {
    let mut base = fs::canonicalize(t.dir()).unwrap();
    if let Some(sub) = sub {
        base = base.join(sub);
    }
    let room = len - base.as_os_str().len() - 1;
    let target = base.join("x".repeat(room));
    assert_eq!(target.as_os_str().len(), len);
    target
}

/// `envoci --json build SPEC`.
fn build(t: &Envoci, spec: &Path) -> Json {
    t.json(&["build", spec.to_str().unwrap()])
}

/// `restore TAG --target TARGET`.
fn restore(t: &Envoci, tag: &str, target: &Path) {
    t.ok(&["restore", tag, "--target", target.to_str().unwrap()]);
}

/// The relocations the catalog of `tag` records for the layer of package `name`.
fn relocations(t: &Envoci, tag: &str, name: &str) -> Json {
    t.layer(tag, name)["relocations"].clone()
}

/// The layer digest of package `name` in `tag`'s catalog.
fn layer_digest(t: &Envoci, tag: &str, name: &str) -> Json {
    t.layer(tag, name)["digest"].clone()
}

fn tag(report: &Json) -> String {
    report["tags"][0].as_str().unwrap().to_string()
}

#[test]
fn an_80_byte_package_builds_runs_at_80_bytes_and_a_longer_target_is_refused() {
    assert_eq!(CONDA_PLACEHOLDER_80.len(), 80);
    let t = Envoci::new();
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [reloc-80, reloc-text]\n",
    );
    let report = build(&t, &spec);
    assert_eq!(report["prefix_len"], 80, "{report}");
    let tag = tag(&report);
    assert_eq!(
        relocations(&t, &tag, "reloc-80"),
        serde_json::json!([
            {"path": "bin/whereami80", "mode": "binary", "placeholder": CONDA_PLACEHOLDER_80},
            {"path": "etc/reloc-80.conf", "mode": "text"},
        ]),
        "the binary keeps the package's own placeholder, named in the catalog"
    );
    assert_eq!(t.json(&["inspect", &tag])["summary"]["max_target"], 80);
    let text = t.stdout(&["inspect", &tag]);
    assert!(
        text.contains("max target:  80 bytes (binary file bin/whereami80)"),
        "{text}"
    );

    let target = target_of_len(&t, None, 80);
    restore(&t, &tag, &target);
    let target_str = target.to_str().unwrap();
    assert_eq!(run(&target.join("bin/whereami80")), target_str);
    assert_eq!(run(&target.join("bin/hello.sh")), target_str);
    let conf = fs::read_to_string(target.join("etc/reloc-80.conf")).unwrap();
    assert_eq!(conf, format!("prefix={target_str}\nlib={target_str}/lib\n"));

    let too_long = target_of_len(&t, Some("d"), 81);
    let err = t.fail(&["restore", &tag, "--target", too_long.to_str().unwrap()]);
    assert!(
        err.contains("bin/whereami80") && err.contains("at most 80 bytes"),
        "{err}"
    );
    assert!(
        !t.dir().join("d").exists(),
        "nothing written, not even the parent directory"
    );
}

#[test]
fn a_mixed_set_with_a_32_byte_package_builds_at_32_bytes_and_every_binary_runs() {
    assert_eq!(ANACONDA_PLACEHOLDER.len(), 32);
    let t = Envoci::short();
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [reloc-32, reloc-80, reloc-bin]\n",
    );
    let report = build(&t, &spec);
    assert_eq!(report["prefix_len"], 32, "{report}");
    let tag = tag(&report);
    // Without the original's sha256 (no paths.json) the package's own bytes cannot be
    // told back: the binary gets the canonical placeholder of the prefix's length.
    let binary = &relocations(&t, &tag, "reloc-32")[0];
    assert_eq!(binary["path"], "bin/whereami32", "{binary}");
    assert_eq!(binary["mode"], "binary", "{binary}");
    assert_eq!(
        binary["placeholder"].as_str().map(str::len),
        Some(32),
        "{binary}"
    );
    let summary = t.json(&["inspect", &tag])["summary"].clone();
    assert_eq!(summary["max_target"], 32, "{summary}");

    let target = t.dir().join("t"); // /tmp/eXXXXXX/t: 14 bytes
    restore(&t, &tag, &target);
    let target_str = target.to_str().unwrap();
    for binary in ["whereami32", "whereami80", "whereami"] {
        assert_eq!(
            run(&target.join("bin").join(binary)),
            target_str,
            "{binary}"
        );
    }
    let conf = fs::read_to_string(target.join("etc/reloc-32.conf")).unwrap();
    assert_eq!(conf, format!("prefix={target_str}\nlib={target_str}/lib\n"));

    let too_long = target_of_len(&t, Some("d"), 33);
    let err = t.fail(&["restore", &tag, "--target", too_long.to_str().unwrap()]);
    assert!(
        err.contains("bin/whereami32") && err.contains("at most 32 bytes"),
        "{err}"
    );
    assert!(!t.dir().join("d").exists());
}

#[test]
fn a_package_layer_is_the_same_whatever_length_its_environment_was_built_at() {
    let t = Envoci::new();
    let long = t.spec(
        "long.yaml",
        "channels: [CHANNEL]\ndependencies: [reloc-bin, reloc-text]\n",
    );
    let short = t.spec(
        "short.yaml",
        "channels: [CHANNEL]\ndependencies: [reloc-bin, reloc-text, reloc-80]\n",
    );
    let (long, short) = (build(&t, &long), build(&t, &short));
    assert_eq!(long["prefix_len"], 255, "{long}");
    assert_eq!(short["prefix_len"], 80, "{short}");
    for package in ["reloc-bin", "reloc-text"] {
        assert_eq!(
            layer_digest(&t, &tag(&long), package),
            layer_digest(&t, &tag(&short), package),
            "{package}"
        );
    }
    let max = |tag: &str| t.json(&["inspect", tag])["summary"]["max_target"].clone();
    assert_eq!(max(&tag(&long)), 255);
    assert_eq!(max(&tag(&short)), 80);
}

#[test]
fn a_store_too_long_for_a_32_byte_placeholder_is_refused_and_nothing_is_left() {
    let t = Envoci::new(); // its store lies deeper than 32 bytes
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [reloc-32, reloc-bin]\n",
    );
    let target = t.dir().join("env");
    for args in [
        vec!["build", spec.to_str().unwrap()],
        vec![
            "restore",
            spec.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ],
    ] {
        let err = t.fail_as(exit::OTHER, &args);
        for needle in [
            "reloc-32-1.0-h0_0",
            "32-byte binary placeholder",
            "bin/whereami32",
            "ENVOCI_HOME",
        ] {
            assert!(err.contains(needle), "{needle:?} not in:\n{err}");
        }
        assert!(t.has_no_environments());
        let builds: Vec<_> = fs::read_dir(t.home().join("build-v1"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(builds.is_empty(), "build prefixes left: {builds:?}");
        assert!(!target.exists());
    }
}
