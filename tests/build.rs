//! Building from conda.yaml with the real solver, real installs and the real interpreter:
//! the fixture channel's `python` is this machine's CPython, `pip` comes from CPython's
//! bundled wheel, and a pip requirement is a wheel the test makes (no index, no network).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::envoci::{exit, Envoci};
use common::wheel::{self, Wheel};

/// Makes `tinywheel-1.0-py3-none-any.whl` (a module and a `tiny` console script) in
/// `dir/wheels`.
fn make_wheel(dir: &Path) -> PathBuf {
    let wheels = dir.join("wheels");
    wheel::write(
        &wheels,
        &Wheel {
            name: "tinywheel",
            version: "1.0",
            requires: &[],
            module: "import sys\n\ndef main():\n    print('tiny in', sys.prefix)\n",
            scripts: &["tiny = tinywheel:main"],
        },
    );
    wheels
}

const FULL: &str = "name: full
channels: [CHANNEL]
dependencies:
  - python
  - pip
  - greet
  - pip:
    - --no-index
    - --find-links wheels
    - tinywheel==1.0
variables:
  FULL_MODE: yes-it-is
";

/// Runs `envoci run --target DIR -- ARGS` and returns its trimmed stdout.
fn run_in(t: &Envoci, target: &Path, args: &[&str]) -> String {
    let mut all = vec!["run", "--target", target.to_str().unwrap(), "--"];
    all.extend_from_slice(args);
    t.stdout(&all).trim_end().to_string()
}

#[test]
fn conda_yaml_builds_once_restores_at_two_paths_and_runs() {
    let t = Envoci::new();
    make_wheel(t.dir());
    let spec = t.spec("conda.yaml", FULL);
    let spec_s = spec.to_str().unwrap();
    let first = t.dir().join("first");
    let second = t.dir().join("a-much-longer-directory-name/second");
    t.ok(&["restore", spec_s, "--target", first.to_str().unwrap()]);
    // The second restore finds the blueprint in the store: no build.
    t.ok(&[
        "restore",
        spec_s,
        "--target",
        second.to_str().unwrap(),
        "--no-build",
    ]);
    let report = t.json(&["build", spec_s]);
    assert_eq!(report["built"], false, "{report}");

    for target in [&first, &second] {
        let prefix = fs::canonicalize(target).unwrap();
        let prefix = prefix.to_str().unwrap();
        let out = run_in(
            &t,
            target,
            &[
                "python",
                "-c",
                "import sys, greet, tinywheel; print(sys.prefix)",
            ],
        );
        assert_eq!(out, prefix);
        assert_eq!(
            run_in(&t, target, &["greet"]),
            format!("greet from {prefix}")
        );
        assert_eq!(run_in(&t, target, &["tiny"]), format!("tiny in {prefix}"));
        assert_eq!(
            run_in(&t, target, &["sh", "-c", "echo $FULL_MODE"]),
            "yes-it-is"
        );
        // The solver chose libver 1.5 for greet's `libver >=1.1,<2`.
        assert_eq!(
            fs::read_to_string(target.join("share/libver/VERSION")).unwrap(),
            "1.5\n"
        );
    }

    // Importing wrote no bytecode: the space is still pristine.
    let status = t
        .cmd(&[
            "run",
            "--target",
            first.to_str().unwrap(),
            "--",
            "python",
            "-c",
            "import greet, tinywheel, json, email.parser",
        ])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .status()
        .unwrap();
    assert!(status.success());
    let again = t.json(&["restore", spec_s, "--target", first.to_str().unwrap()]);
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["removed"], 0, "{again}");
}

#[test]
fn run_passes_the_exit_code_through() {
    let t = Envoci::new();
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python]\n",
    );
    let target = t.dir().join("env");
    t.ok(&[
        "restore",
        spec.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    let out = t.run(&[
        "run",
        "--target",
        target.to_str().unwrap(),
        "--",
        "python",
        "-c",
        "raise SystemExit(7)",
    ]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn a_build_from_the_lock_gives_the_same_catalog_in_another_store() {
    let a = Envoci::new();
    let spec_a = a.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet]\n",
    );
    let lock = a.dir().join("envoci.lock");
    a.ok(&[
        "lock",
        spec_a.to_str().unwrap(),
        "-o",
        lock.to_str().unwrap(),
    ]);
    let text = fs::read_to_string(&lock).unwrap();
    assert!(
        text.contains("sha256:") && text.contains("libver-1.5"),
        "{text}"
    );
    let solved = a.json(&["build", spec_a.to_str().unwrap()]);

    let b = Envoci::new();
    let spec_b = b.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet]\n",
    );
    let locked = b.json(&[
        "build",
        spec_b.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
        "--timings",
    ]);
    assert_eq!(solved["digest"], locked["digest"]);
    assert_eq!(solved["blueprint"], locked["blueprint"]);
}

#[test]
fn blueprint_ignores_formatting_and_follows_constraints() {
    let t = Envoci::new();
    let a = t.spec(
        "a.yaml",
        "channels: [CHANNEL]\ndependencies: [python, 'greet >=0.1']\n",
    );
    let b = t.spec("b.yaml", "# comment\ndependencies:\n  - greet>=0.1   # spelled differently\n  - python\nchannels:\n  - CHANNEL\n");
    let c = t.spec(
        "c.yaml",
        "channels: [CHANNEL]\ndependencies: [python, 'greet >=0.2']\n",
    );
    let bp = |p: &Path| {
        t.stdout(&["blueprint", p.to_str().unwrap()])
            .trim()
            .to_string()
    };
    assert_eq!(bp(&a), bp(&b));
    assert_ne!(bp(&a), bp(&c));
    assert_eq!(bp(&a).len(), 64);
}

#[test]
fn a_second_environment_fetches_only_packages_the_cache_lacks() {
    let t = Envoci::new();
    let one = t.spec(
        "one.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet]\n",
    );
    let two = t.spec(
        "two.yaml",
        "channels: [CHANNEL]\ndependencies: [python, pip]\n",
    );
    let first = t.json(&["build", one.to_str().unwrap()]);
    assert_eq!(first["downloads"]["fetched"], 3, "{first}"); // python, greet, libver
    let second = t.json(&["build", two.to_str().unwrap()]);
    assert_eq!(second["downloads"]["fetched"], 1, "{second}"); // pip only
    assert_eq!(second["downloads"]["cached"], 1, "{second}"); // python
                                                              // The python layer is byte-identical in both environments.
    let layer = |tag: &str| -> serde_json::Value {
        let catalog = t.catalog(tag);
        catalog["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "python")
            .unwrap()["digest"]
            .clone()
    };
    let tag = |r: &serde_json::Value| r["tags"][0].as_str().unwrap().to_string();
    assert_eq!(layer(&tag(&first)), layer(&tag(&second)));
}

#[test]
fn concurrent_builds_of_one_blueprint_build_once() {
    let t = Envoci::new();
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet]\n",
    );
    let children: Vec<_> = (0..2)
        .map(|_| {
            t.cmd(&["--json", "build", spec.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let built: Vec<bool> = reports
        .iter()
        .map(|r| r["built"].as_bool().unwrap())
        .collect();
    assert_eq!(built.iter().filter(|b| **b).count(), 1, "{reports:?}");
    assert_eq!(reports[0]["digest"], reports[1]["digest"]);
}

#[test]
fn no_build_fails_clearly_when_the_blueprint_is_missing() {
    let t = Envoci::new();
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python]\n",
    );
    let target = t.dir().join("env");
    let err = t.fail_as(
        exit::NOT_FOUND,
        &[
            "restore",
            spec.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
            "--no-build",
        ],
    );
    assert!(
        err.contains("not built") && err.contains("--no-build"),
        "{err}"
    );
    assert!(!target.exists());
}

/// No tag, no build prefix and no scratch left behind by a failed build.
fn assert_nothing_left(t: &Envoci) {
    let tags = t.json(&["ls"]);
    assert_eq!(tags.as_array().map_or(0, |a| a.len()), 0, "{tags}");
    let build_dir = t.home().join("build-v1");
    let left: Vec<_> = fs::read_dir(&build_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build prefixes left: {left:?}");
}

#[test]
fn bad_specs_fail_with_one_clear_error_and_leave_nothing() {
    let t = Envoci::new();
    let cases: &[(&str, &str, &[&str])] = &[
        ("yaml.yaml", "channels: [CHANNEL\ndependencies:\n  - python\n", &["yaml.yaml:"]),
        ("missing.yaml", "channels: [CHANNEL]\ndependencies: [python, no-such-package]\n", &["no-such-package"]),
        ("unsat.yaml", "channels: [CHANNEL]\ndependencies: [greet, 'libver >=2']\n", &["cannot solve", "libver"]),
        ("channel.yaml", "channels: ['http://127.0.0.1:9/nothing']\ndependencies: [python]\n", &["channel"]),
        ("pip.yaml", "channels: [CHANNEL]\ndependencies: [python, pip, {pip: [--no-index, no-such-wheel==1]}]\n", &["pip failed", "no-such-wheel"]),
    ];
    for (name, body, needles) in cases {
        let path = t.spec(name, body);
        let err = t.fail(&["build", path.to_str().unwrap()]);
        for needle in *needles {
            assert!(
                err.to_lowercase().contains(&needle.to_lowercase()),
                "{name}: {needle:?} not in:\n{err}"
            );
        }
        assert_nothing_left(&t);
    }
}

#[test]
fn unknown_keys_warn_and_the_build_goes_on() {
    let t = Envoci::new();
    let path = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python]\nprefix: /opt/x\n",
    );
    let out = t.ok(&["build", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `prefix`"), "{stderr}");
}

#[test]
fn a_package_that_does_not_match_the_lock_is_refused() {
    let t = Envoci::new();
    let path = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet]\n",
    );
    let lock = t.dir().join("envoci.lock");
    t.ok(&["lock", path.to_str().unwrap(), "-o", lock.to_str().unwrap()]);
    let text = fs::read_to_string(&lock).unwrap();
    let greet = common::channel()
        .records
        .iter()
        .find(|r| r.package_record.name.as_normalized() == "greet")
        .unwrap();
    let sha = hex::encode(greet.package_record.sha256.unwrap());
    assert!(text.contains(&sha));
    fs::write(&lock, text.replace(&sha, &"0".repeat(64))).unwrap();
    let err = t.fail(&[
        "build",
        path.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert!(
        err.contains("greet") && err.to_lowercase().contains("hash"),
        "{err}"
    );
    assert_nothing_left(&t);
}

#[test]
fn a_killed_build_leaves_no_catalog_and_the_next_one_starts_clean() {
    let t = Envoci::new();
    let path = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet, pip]\n",
    );
    let mut child = t.cmd(&["build", path.to_str().unwrap()]).spawn().unwrap();
    // Kill it once the build prefix exists (mid-install or later).
    let build_dir = t.home().join("build-v1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && fs::read_dir(&build_dir).map_or(true, |mut d| d.next().is_none())
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let tags = t.json(&["ls"]);
    assert_eq!(tags.as_array().unwrap().len(), 0, "{tags}");
    let report = t.json(&["build", path.to_str().unwrap()]);
    assert_eq!(report["built"], true);
    let left: Vec<_> = fs::read_dir(&build_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    t.ok(&["check"]);
}

#[test]
fn conda_pack_packs_a_restored_environment() {
    let t = Envoci::new();
    let spec = t.spec(
        "conda.yaml",
        "channels: [CHANNEL]\ndependencies: [python, greet]\n",
    );
    let target = t.dir().join("env");
    t.ok(&[
        "restore",
        spec.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--link",
        "copy",
    ]);
    // The records keep conda's `link` object, with the building store's path emptied.
    for entry in fs::read_dir(target.join("conda-meta")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let record: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            assert_eq!(record["link"]["source"], "", "{}", path.display());
            assert!(record["link"]["type"].is_number(), "{}", path.display());
        }
    }
    let packed = t.dir().join("env.tar.gz");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from conda_pack.cli import main; sys.exit(main())",
        ])
        .args(["--ignore-missing-files", "-p"])
        .arg(&target)
        .arg("-o")
        .arg(&packed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "conda-pack (pip install conda-pack; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&packed)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l == "bin/greet"),
        "the entry point is packed"
    );
}

/// The tags `ls --json` lists for the manifest `digest`, sorted.
fn tags_of(t: &Envoci, digest: &serde_json::Value) -> Vec<String> {
    let mut tags: Vec<String> = t
        .json(&["ls"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["digest"] == *digest)
        .map(|row| row["tag"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

#[test]
fn spec_mistakes_name_their_line_and_column_and_the_unknown_key() {
    let t = Envoci::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "misspelled.yaml",
            "name: demo\nchannel:\n  - CHANNEL\ndependencies: [python]\n",
            &[
                "misspelled.yaml:2:1: the spec names no channels",
                "warning: ",
                "misspelled.yaml:2:1: unknown key `channel` ignored; did you mean `channels`?",
            ],
        ),
        (
            "missing.yaml",
            "# no channels at all\ndependencies: [python]\n",
            &["missing.yaml:2:1: the spec names no channels"],
        ),
        (
            "indent.yaml",
            "channels: [CHANNEL]\ndependencies:\n  - python\n   - greet\n",
            &["indent.yaml:4:4: this `-` is indented deeper", "`python - greet`"],
        ),
        (
            "unrelated.yaml",
            "channels: [CHANNEL]\ndependencies:\n  - python\n  - 'greet >=<= 1'\nvariable: {A: b}\n",
            &[
                "unrelated.yaml:4:5: dependencies[1]: invalid dependency `greet >=<= 1`",
                "unrelated.yaml:5:1: unknown key `variable` ignored; did you mean `variables`?",
            ],
        ),
    ];
    for (name, body, needles) in cases {
        let path = t.spec(name, body);
        for command in ["build", "lock", "blueprint"] {
            let err = t.fail(&[command, path.to_str().unwrap()]);
            for needle in *needles {
                assert!(
                    err.contains(needle),
                    "{command} {name}: {needle:?} not in:\n{err}"
                );
            }
        }
        assert_nothing_left(&t);
    }
}

#[test]
fn the_spec_name_tags_the_environment_and_a_second_tag_is_reported() {
    let t = Envoci::new();
    let spec = t.spec(
        "conda.yaml",
        "name: demo-env\nchannels: [CHANNEL]\ndependencies: [python]\n",
    );
    let spec_s = spec.to_str().unwrap();
    let built = t.json(&["build", spec_s]);
    let bp = built["tags"][0].as_str().unwrap().to_string();
    assert_eq!(
        tags_of(&t, &built["digest"]),
        [bp.clone(), "demo-env".into()]
    );

    // Built already: only tagged, and the text says so.
    let out = t.stdout(&["build", spec_s, "--tag", "release-1"]);
    assert!(
        out.contains("is built already") && out.contains(": tagged demo-env, release-1"),
        "{out}"
    );
    assert_eq!(
        tags_of(&t, &built["digest"]),
        [bp.clone(), "demo-env".into(), "release-1".into()]
    );
    let out = t.stdout(&["build", spec_s]);
    assert!(out.contains(": tagged demo-env"), "{out}");

    // `restore conda.yaml` finding it in the store tags it with the name too.
    let renamed = t.spec(
        "renamed.yaml",
        "name: other-name\nchannels: [CHANNEL]\ndependencies: [python]\n",
    );
    let target = t.dir().join("env");
    t.ok(&[
        "restore",
        renamed.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--no-build",
    ]);
    assert!(tags_of(&t, &built["digest"]).contains(&"other-name".to_string()));
}

const PYCONF: &str = "channels: [CHANNEL]
dependencies:
  - python
  - pyconf
";

#[test]
fn bytecode_of_modules_holding_the_prefix_is_valid_after_restore() {
    let t = Envoci::new();
    let spec = t.spec("conda.yaml", PYCONF);
    let spec_s = spec.to_str().unwrap();
    let target = t.dir().join("somewhere/else");
    let built = t.json(&["build", spec_s]);
    let tag = built["tags"][0].as_str().unwrap().to_string();
    t.ok(&["restore", &tag, "--target", target.to_str().unwrap()]);
    let prefix = fs::canonicalize(&target).unwrap();
    let prefix_s = prefix.to_str().unwrap();

    let marker = t.dir().join("marker");
    fs::write(&marker, b"").unwrap();
    let (out, log) = t.import_verbosely(
        &target,
        "import pyconf, pyconf.commented; print(pyconf.PREFIX, pyconf.where(), pyconf.PATHS['lib'], pyconf.PATHS['bin'].decode(), pyconf.commented.VALUE)",
    );
    assert_eq!(
        out,
        format!("{prefix_s} {prefix_s} {prefix_s}/lib {prefix_s}/bin 42")
    );
    // CPython used each pyc (it says so only when the source hash matched), and wrote none.
    let site = common::site_packages(&prefix).join("pyconf");
    for module in ["__init__", "commented"] {
        let source = site.join(format!("{module}.py"));
        let used = log.lines().any(|l| {
            l.contains(&format!("/pyconf/__pycache__/{module}.cpython-"))
                && l.ends_with(&format!(" matches {}", source.display()))
        });
        assert!(used, "{module}: its pyc was not used:\n{log}");
    }
    assert!(!log.contains("# wrote "), "{log}");
    let newer = Command::new("find")
        .arg(&prefix)
        .args(["-newer", marker.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(newer.status.success());
    assert_eq!(
        String::from_utf8_lossy(&newer.stdout),
        "",
        "written by the import"
    );

    // The relocated pycs are recorded like any relocated file: nothing to repair.
    let check = t.json(&["check", "--verify"]);
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
    let again = t.json(&[
        "restore",
        &tag,
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["removed"], 0, "{again}");

    // The catalog names the pycs as relocations of their own mode.
    let catalog = t.catalog(&tag);
    let layer = catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "pyconf")
        .unwrap();
    let modes: Vec<(String, String)> = layer["relocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let path = r["path"].as_str().unwrap();
            let file = path.rsplit('/').next().unwrap();
            let module = file.split('.').next().unwrap();
            let ext = if path.ends_with(".pyc") { "pyc" } else { "py" };
            (
                format!("{module}.{ext}"),
                r["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("__init__.py", "text"),
        ("__init__.pyc", "pyc"),
        ("commented.pyc", "pyc"),
        ("commented.py", "text"),
    ]
    .map(|(f, m)| (f.to_string(), m.to_string()));
    assert_eq!(modes, want);
}

#[test]
fn a_package_whose_modules_hold_the_prefix_gives_the_same_layer_in_two_environments() {
    let t = Envoci::new();
    let digest_of_pyconf = |body: &str, name: &str| {
        let spec = t.spec(name, body);
        let built = t.json(&["build", spec.to_str().unwrap()]);
        let catalog = t.catalog(built["tags"][0].as_str().unwrap());
        let layers = catalog["layers"].as_array().unwrap().clone();
        layers.into_iter().find(|l| l["name"] == "pyconf").unwrap()["digest"].clone()
    };
    let alone = digest_of_pyconf(PYCONF, "one.yaml");
    let with_greet = digest_of_pyconf(&format!("{PYCONF}  - greet\n"), "two.yaml");
    assert_eq!(alone, with_greet);
}

/// `dir/wheels` holding `tinywheel` VERSION (which requires `tinydep`) and `tinydep`
/// VERSION; returns the directory.
fn make_wheels(dir: &Path, version: &str) -> PathBuf {
    let wheels = dir.join("wheels");
    let module = "import tinydep\n";
    for (name, requires, module) in [
        ("tinywheel", &["tinydep>=1"][..], module),
        ("tinydep", &[][..], ""),
    ] {
        wheel::write(
            &wheels,
            &Wheel {
                name,
                version,
                requires,
                module,
                scripts: &[],
            },
        );
    }
    wheels
}

const PINNED: &str = "channels: [CHANNEL]
dependencies:
  - python
  - pip
  - pip:
    - --no-index
    - --find-links wheels
    - tinywheel>=1.0
";

/// The lock's PyPI entries: name → (version, location, sha256).
fn pypi_entries(lock: &Path) -> std::collections::BTreeMap<String, (String, String, String)> {
    let text = fs::read_to_string(lock).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let field = |entry: &serde_yaml::Value, key: &str| {
        entry[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_string()
    };
    doc["packages"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|entry| entry.get("pypi").is_some())
        .map(|entry| {
            let value = (
                field(entry, "version"),
                field(entry, "pypi"),
                field(entry, "sha256"),
            );
            (field(entry, "name"), value)
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn pip_entries_are_pinned_in_the_lock_and_rebuilt_from_it_without_the_index() {
    let a = Envoci::new();
    let wheels = make_wheels(a.dir(), "1.0");
    let spec_a = a.spec("conda.yaml", PINNED);
    let lock = a.dir().join("envoci.lock");
    let locked = a.json(&["lock", spec_a.to_str().unwrap()]);
    assert_eq!(
        locked["pip"],
        serde_json::json!(["tinydep==1.0", "tinywheel==1.0"]),
        "{locked}"
    );
    let entries = pypi_entries(&lock);
    for name in ["tinywheel", "tinydep"] {
        let file = format!("{name}-1.0-py3-none-any.whl");
        let expected = (
            "1.0".to_string(),
            format!("wheels/{file}"),
            sha256_of(&wheels.join(&file)),
        );
        assert_eq!(entries.get(name), Some(&expected), "{entries:?}");
    }
    assert_eq!(entries.len(), 2, "{entries:?}");
    // Resolving again would now pick 2.0; the lock still installs 1.0.
    make_wheels(a.dir(), "2.0");
    let built = a.json(&[
        "build",
        spec_a.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert_eq!(built["pip_pinned"], 2, "{built}");
    let unlocked = a.json(&["build", spec_a.to_str().unwrap()]);
    assert_ne!(built["digest"], unlocked["digest"]);
    assert_ne!(built["blueprint"], unlocked["blueprint"]);
    let versions = |t: &Envoci, report: &serde_json::Value| -> Vec<(String, String)> {
        let catalog = t.catalog(report["digest"].as_str().unwrap());
        let mut found: Vec<(String, String)> = catalog["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "pypi")
            .map(|l| {
                (
                    l["name"].as_str().unwrap().into(),
                    l["version"].as_str().unwrap().into(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        versions(&a, &built),
        [pair("tinydep", "1.0"), pair("tinywheel", "1.0")]
    );
    // A pinned distribution's layer records its wheel's sha256 (`io.envoci.sha256`).
    let catalog = a.catalog(built["digest"].as_str().unwrap());
    let layer = |name: &str| {
        catalog["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    for name in ["tinywheel", "tinydep"] {
        let file = wheels.join(format!("{name}-1.0-py3-none-any.whl"));
        assert_eq!(layer(name)["sha256"], sha256_of(&file), "{name}");
    }
    assert_eq!(
        versions(&a, &unlocked),
        [pair("tinydep", "2.0"), pair("tinywheel", "2.0")]
    );

    // Another store, where the spec's find-links directory does not exist: the lock's
    // files are all it needs, and it gives the same environment.
    let b = Envoci::new();
    let spec_b = b.spec("conda.yaml", PINNED);
    assert!(!b.dir().join("wheels").exists());
    let rebuilt = b.json(&[
        "build",
        spec_b.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert_eq!(rebuilt["built"], true, "{rebuilt}");
    assert_eq!(rebuilt["digest"], built["digest"]);
    assert_eq!(rebuilt["blueprint"], built["blueprint"]);
    let bp = b.stdout(&[
        "blueprint",
        spec_b.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert_eq!(bp.trim(), built["blueprint"].as_str().unwrap());
    // `restore conda.yaml --lock` looks for the same blueprint: found, not built.
    let target = b.dir().join("env");
    let restored = b.json(&[
        "restore",
        spec_b.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
        "--no-build",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(restored["manifest"], built["digest"], "{restored}");
    let out = run_in(
        &b,
        &target,
        &[
            "python",
            "-c",
            "import tinywheel; print(tinywheel.__version__)",
        ],
    );
    assert_eq!(out, "1.0");
}

#[test]
fn a_pip_requirement_that_does_not_resolve_writes_no_lock() {
    let t = Envoci::new();
    make_wheels(t.dir(), "1.0");
    let spec = t.spec(
        "conda.yaml",
        &PINNED.replace("tinywheel>=1.0", "tinywheel>=3"),
    );
    let lock = t.dir().join("envoci.lock");
    let err = t.fail(&["lock", spec.to_str().unwrap()]);
    assert!(
        err.contains("pip failed") && err.contains("tinywheel>=3"),
        "{err}"
    );
    assert!(!lock.exists());
    assert_nothing_left(&t);

    // Without pip in the environment there is nothing to resolve with.
    let spec = t.spec(
        "conda.yaml",
        &PINNED.replace("  - pip\n  - pip:", "  - pip:"),
    );
    let err = t.fail(&["lock", spec.to_str().unwrap()]);
    assert!(
        err.contains("resolves with the environment's own pip"),
        "{err}"
    );
    assert!(!lock.exists());
    assert_nothing_left(&t);
}

#[test]
fn a_pip_file_that_does_not_match_the_lock_is_refused_before_installing() {
    let t = Envoci::new();
    let wheels = make_wheels(t.dir(), "1.0");
    let spec = t.spec("conda.yaml", PINNED);
    let lock = t.dir().join("envoci.lock");
    t.ok(&["lock", spec.to_str().unwrap()]);
    // The wheel is rebuilt with other content under the same name.
    let file = wheels.join("tinydep-1.0-py3-none-any.whl");
    let pinned = sha256_of(&file);
    wheel::write(
        &wheels,
        &Wheel {
            name: "tinydep",
            version: "1.0",
            requires: &[],
            module: "print('changed')\n",
            scripts: &[],
        },
    );
    let actual = sha256_of(&file);
    assert_ne!(pinned, actual);
    let err = t.fail_as(
        exit::INTEGRITY,
        &[
            "build",
            spec.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("tinydep-1.0") && err.contains(&pinned) && err.contains(&actual),
        "{err}"
    );
    assert_nothing_left(&t);

    // A lock written before pins (no PyPI section) is refused for a spec with `pip:`.
    let text = fs::read_to_string(&lock).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut stripped = doc.clone();
    let packages: Vec<serde_yaml::Value> = doc["packages"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|p| p.get("pypi").is_none())
        .cloned()
        .collect();
    stripped["packages"] = serde_yaml::Value::Sequence(packages);
    let env = &mut stripped["environments"]["default"];
    let env = env.as_mapping_mut().unwrap();
    env.remove("indexes");
    env.remove("find-links");
    let platforms = env.get_mut("packages").unwrap().as_mapping_mut().unwrap();
    for (_, list) in platforms.iter_mut() {
        let list = list.as_sequence_mut().unwrap();
        list.retain(|p| p.get("pypi").is_none());
    }
    fs::write(&lock, serde_yaml::to_string(&stripped).unwrap()).unwrap();
    let err = t.fail_as(
        exit::USAGE,
        &[
            "build",
            spec.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("pins no pip packages") && err.contains("envoci lock"),
        "{err}"
    );
    assert_nothing_left(&t);
    t.fail_as(
        exit::USAGE,
        &[
            "blueprint",
            spec.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
        ],
    );
}

/// `python3 -m http.server` serving `dir` on a free loopback port (a find-links page
/// pip reads: the directory listing's links); killed on drop.
struct FileServer {
    child: std::process::Child,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        FileServer { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pinned_pip_files_are_downloaded_from_their_urls_and_an_unreachable_one_fails_clearly() {
    let t = Envoci::new();
    let wheels = make_wheels(t.dir(), "1.0");
    let server = FileServer::start(&wheels);
    let url = format!("http://127.0.0.1:{}/", server.port);
    let spec = t.spec(
        "conda.yaml",
        &PINNED.replace("--find-links wheels", &format!("--find-links {url}")),
    );
    let spec_s = spec.to_str().unwrap();
    let lock = t.dir().join("envoci.lock");
    t.ok(&["lock", spec_s]);
    let entries = pypi_entries(&lock);
    let file = "tinywheel-1.0-py3-none-any.whl";
    assert_eq!(
        entries.get("tinywheel"),
        Some(&(
            "1.0".to_string(),
            format!("{url}{file}"),
            sha256_of(&wheels.join(file))
        )),
        "{entries:?}"
    );
    let built = t.json(&["build", spec_s, "--lock", lock.to_str().unwrap()]);
    assert_eq!(built["pip_pinned"], 2, "{built}");

    // The server gone, another store cannot fetch the pinned files: exit 5, nothing left.
    drop(server);
    let other = Envoci::new();
    let spec = other.spec(
        "conda.yaml",
        &PINNED.replace("--find-links wheels", &format!("--find-links {url}")),
    );
    let err = other.fail_as(
        exit::NETWORK,
        &[
            "build",
            spec.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("cannot download tinydep-1.0") && err.contains(&url),
        "{err}"
    );
    assert_nothing_left(&other);
}
