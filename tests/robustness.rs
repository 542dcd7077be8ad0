//! Bad input, crashes and concurrency: one clear error and nothing half-written; a kill
//! at any point leaves the store and spaces consistent.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::envoci::{exit, Envoci};
use common::install_env;

const ENV: &[&str] = &[
    "reloc-bin",
    "reloc-text",
    "links",
    "shared-dep",
    "app-one",
    "pad-1",
];

fn env(t: &Envoci) -> PathBuf {
    let prefix = t.dir().join("env");
    install_env(&prefix, ENV);
    prefix
}

/// A plain environment directory with `n` small files in nested directories.
fn big_tree(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("lib/d{:03}/e{:02}", i % 97, i % 13));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{i}.txt")),
            format!("file {i} {}\n", "x".repeat(i % 2000)),
        )
        .unwrap();
    }
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(
        root.join("bin/where"),
        format!("#!/bin/sh\necho {}\n", root.display()),
    )
    .unwrap();
    fs::set_permissions(root.join("bin/where"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts `envoci ARGS` and SIGKILLs it after a while; retries with shorter delays until
/// a run is really killed mid-way (not finished before the kill).
fn kill_midway(t: &Envoci, args: &[&str]) {
    let mut delay = 400u64;
    for _ in 0..8 {
        let mut child = t
            .cmd(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(libc::SIGKILL) {
            return;
        }
        delay /= 2;
    }
    panic!(
        "envoci {} always finished before it could be killed",
        args.join(" ")
    );
}

#[test]
fn sigkill_during_snapshot_leaves_the_store_consistent() {
    let t = Envoci::new();
    let root = t.dir().join("big");
    big_tree(&root, 20_000);
    kill_midway(&t, &["snapshot", root.to_str().unwrap(), "--tag", "big"]);
    t.ok(&["check"]);
    assert!(
        t.fail_as(exit::NOT_FOUND, &["inspect", "big"])
            .contains("not in the store"),
        "no tag for an interrupted snapshot"
    );
    t.ok(&["snapshot", root.to_str().unwrap(), "--tag", "big"]);
    t.ok(&["check", "--verify"]);
    let ingest: Vec<_> = fs::read_dir(t.home().join("ingest")).unwrap().collect();
    assert!(
        ingest.is_empty(),
        "the dead process's scratch area was cleaned: {ingest:?}"
    );
}

#[test]
fn sigkill_during_restore_leaves_nothing_half_visible_and_the_next_restore_succeeds() {
    let t = Envoci::new();
    let root = t.dir().join("big");
    big_tree(&root, 20_000);
    t.ok(&["snapshot", root.to_str().unwrap(), "--tag", "big"]);
    let target = t.dir().join("space");
    let target_s = target.to_str().unwrap();

    // A new space appears whole or not at all.
    kill_midway(
        &t,
        &["restore", "big", "--target", target_s, "--link", "copy"],
    );
    assert!(!target.exists(), "a killed first restore leaves no space");
    t.ok(&["check"]);
    t.ok(&["restore", "big", "--target", target_s]);
    assert_eq!(common::run_stdout(&target.join("bin/where")), target_s);
    let leftovers: Vec<_> = fs::read_dir(t.dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".space.envoci-")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary of the killed restore removed"
    );

    // An incremental restore killed half-way: the space is marked dirty, the next
    // restore finishes the job.
    fs::remove_dir_all(target.join("lib")).unwrap();
    kill_midway(
        &t,
        &["restore", "big", "--target", target_s, "--link", "copy"],
    );
    let check = t.run(&["check"]);
    assert!(!check.status.success(), "an interrupted update is reported");
    t.ok(&["restore", "big", "--target", target_s]);
    t.ok(&["check", "--verify"]);
}

#[test]
fn concurrent_restores_into_one_space_and_into_different_spaces_end_correct() {
    let t = Envoci::new();
    let prefix = env(&t);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "e"]);
    let same = t.dir().join("same");
    let targets = [
        same.clone(),
        same.clone(),
        t.dir().join("other-1"),
        t.dir().join("other-2"),
    ];
    let handles: Vec<_> = targets
        .iter()
        .map(|target| {
            let mut cmd = t.cmd(&[
                "--json",
                "restore",
                "e",
                "--target",
                target.to_str().unwrap(),
            ]);
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for target in &targets {
        assert_eq!(
            common::run_stdout(&target.join("bin/whereami")),
            target.to_str().unwrap()
        );
    }
    t.ok(&["check", "--verify"]);
}

#[test]
fn a_write_through_a_hardlink_is_detected_and_repaired_from_the_layer() {
    let t = Envoci::new();
    let prefix = env(&t);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "e"]);
    let target = t.dir().join("space");
    t.ok(&[
        "restore",
        "e",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "hardlink",
    ]);
    let victim = target.join("share/shared-dep/data-1.txt");
    let original = fs::read(&victim).unwrap();
    // As root, a read-only file can still be written: the shared inode changes.
    std::io::Write::write_all(
        &mut fs::OpenOptions::new().append(true).open(&victim).unwrap(),
        b"corrupt",
    )
    .unwrap();
    let check = t.run(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success());
    assert!(
        report.contains("file ") && report.contains("changed in the file CAS"),
        "{report}"
    );
    assert!(
        report.contains("space ") && report.contains("data-1.txt"),
        "{report}"
    );

    t.ok(&[
        "restore",
        "e",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "hardlink",
    ]);
    assert_eq!(fs::read(&victim).unwrap(), original, "space repaired");
    t.ok(&["check", "--verify"]);
}

/// Cuts every layer index to its first half: what a power cut can leave of a file
/// written without a flush.
fn tear_layer_indexes(t: &Envoci) {
    let indexes = t.layer_indexes();
    assert!(!indexes.is_empty());
    for index in indexes {
        let bytes = fs::read(&index).unwrap();
        fs::write(&index, &bytes[..bytes.len() / 2]).unwrap();
    }
}

fn layer_indexes_parse(t: &Envoci) -> bool {
    let parses = |p: &PathBuf| serde_json::from_slice::<serde_json::Value>(&fs::read(p).unwrap());
    t.layer_indexes().iter().all(|p| parses(p).is_ok())
}

#[test]
fn a_torn_layer_index_is_made_again_from_its_layer_by_check_repair_or_restore() {
    let t = Envoci::new();
    let prefix = env(&t);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "e"]);
    let cas_files = t.cas_dir_files().len();
    tear_layer_indexes(&t);

    let check = t.run(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{report}");
    assert!(
        report.contains("index sha256:") && report.contains("makes it again"),
        "{report}"
    );
    // Repair makes the indexes again, so the layers' files are not taken for leftovers.
    let repair = t.ok(&["check", "--repair"]);
    let repair = String::from_utf8_lossy(&repair.stdout);
    assert!(repair.contains("made again from the layer"), "{repair}");
    assert!(layer_indexes_parse(&t));
    assert_eq!(t.cas_dir_files().len(), cas_files, "{repair}");
    t.ok(&["check"]);

    tear_layer_indexes(&t);
    let target = t.dir().join("space");
    t.ok(&["restore", "e", "--target", target.to_str().unwrap()]);
    assert!(layer_indexes_parse(&t));
    assert_eq!(
        fs::read(target.join("share/shared-dep/data-1.txt")).unwrap(),
        fs::read(prefix.join("share/shared-dep/data-1.txt")).unwrap()
    );
    t.ok(&["check"]);
}

#[test]
fn bad_prefixes_are_refused_naming_the_path() {
    let t = Envoci::new();
    let missing = t.dir().join("no-such-env");
    let err = t.fail(&["snapshot", missing.to_str().unwrap()]);
    assert!(err.contains("no-such-env"), "{err}");
    let file = t.dir().join("a-file");
    fs::write(&file, "x").unwrap();
    let err = t.fail(&["snapshot", file.to_str().unwrap()]);
    assert!(
        err.contains("a-file") && err.contains("not a directory"),
        "{err}"
    );
    let prefix = t.dir().join("env-bad-meta");
    fs::create_dir_all(prefix.join("conda-meta")).unwrap();
    fs::write(prefix.join("conda-meta/broken-1.0-0.json"), "{ not json").unwrap();
    let err = t.fail(&["snapshot", prefix.to_str().unwrap()]);
    assert!(err.contains("broken-1.0-0.json"), "{err}");
    let odd = t.dir().join("env-odd-name");
    fs::create_dir_all(odd.join("lib")).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(odd.join("lib").join(name), "latin-1 name").unwrap();
    let err = t.fail(&["snapshot", odd.to_str().unwrap()]);
    assert!(
        err.contains("env-odd-name/lib/caf") && err.contains("not UTF-8"),
        "{err}"
    );
    let err = t.fail(&["snapshot", t.dir().to_str().unwrap(), "--tag", "bad/tag"]);
    assert!(err.contains("not a valid tag"), "{err}");
    assert!(t.has_no_environments(), "nothing tagged");
}

#[test]
fn force_never_empties_the_store_or_an_ancestor_of_it() {
    let t = Envoci::new();
    let prefix = env(&t);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "e"]);
    let blobs_before = fs::read_dir(t.home().join("blobs/sha256")).unwrap().count();
    let inside = t.home().join("blobs");
    for target in [t.home(), t.dir(), inside.as_path()] {
        let err = t.fail(&[
            "restore",
            "e",
            "--target",
            target.to_str().unwrap(),
            "--force",
        ]);
        assert!(
            err.contains("holds the envoci store") && err.contains("--force never replaces it"),
            "{}: {err}",
            target.display()
        );
    }
    let blobs_after = fs::read_dir(t.home().join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs_before, blobs_after, "the store lost nothing");
    assert!(prefix.exists(), "the working directory lost nothing");
    t.ok(&["check", "--verify"]);
}

#[test]
fn unknown_tags_and_foreign_targets_are_refused() {
    let t = Envoci::new();
    let prefix = env(&t);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "e"]);
    let err = t.fail_as(
        exit::NOT_FOUND,
        &[
            "restore",
            "nope",
            "--target",
            t.dir().join("x").to_str().unwrap(),
        ],
    );
    assert!(err.contains("`nope` is not in the store"), "{err}");
    assert!(!t.dir().join("x").exists());

    let foreign = t.dir().join("my-project");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("precious.txt"), "keep me").unwrap();
    let err = t.fail(&["restore", "e", "--target", foreign.to_str().unwrap()]);
    assert!(
        err.contains("is not an envoci space") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(foreign.join("precious.txt")).unwrap(),
        "keep me"
    );
    t.ok(&[
        "restore",
        "e",
        "--target",
        foreign.to_str().unwrap(),
        "--force",
    ]);
    assert!(!foreign.join("precious.txt").exists());
    assert_eq!(
        common::run_stdout(&foreign.join("bin/whereami")),
        foreign.to_str().unwrap()
    );
}

#[test]
fn a_target_too_long_for_binary_relocation_is_refused_before_writing() {
    let t = Envoci::new();
    let prefix = env(&t);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "e"]);
    let long = t.dir().join("d".repeat(200)).join("e".repeat(100));
    let err = t.fail(&["restore", "e", "--target", long.to_str().unwrap()]);
    assert!(
        err.contains("bin/whereami") && err.contains("at most 255 bytes"),
        "{err}"
    );
    assert!(
        !long.parent().unwrap().exists(),
        "nothing written, not even the parent directory"
    );
}

#[test]
fn a_failed_write_marks_the_space_dirty_and_the_next_restore_repairs_it() {
    let t = Envoci::new();
    let root = t.dir().join("tree");
    big_tree(&root, 200);
    fs::write(root.join("big.bin"), vec![7u8; 256 * 1024]).unwrap();
    t.ok(&["snapshot", root.to_str().unwrap(), "--tag", "e"]);
    let target = t.dir().join("space");
    t.ok(&[
        "restore",
        "e",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "copy",
    ]);
    fs::remove_file(target.join("big.bin")).unwrap();
    // The disk fills up: no file may grow beyond 128 KiB.
    let mut cmd = t.cmd(&[
        "restore",
        "e",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "copy",
    ]);
    common::envoci::limit_file_size(&mut cmd, 128 * 1024);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("big.bin"),
        "the error names the file: {stderr}"
    );
    let check = String::from_utf8_lossy(&t.run(&["check"]).stdout).into_owned();
    assert!(check.contains("interrupted"), "{check}");
    t.ok(&[
        "restore",
        "e",
        "--target",
        target.to_str().unwrap(),
        "--link",
        "copy",
    ]);
    assert_eq!(fs::read(target.join("big.bin")).unwrap().len(), 256 * 1024);
    t.ok(&["check", "--verify"]);
}
