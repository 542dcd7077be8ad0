//! Environments for other platforms, made on this one: `lock`, `blueprint` and `build
//! --platform` for osx-arm64 and win-64 from the fixture channel's subdirs of those
//! platforms (stand-in executables that nothing runs), the artifacts they give, one
//! registry index holding every platform, and restores that refuse another platform's
//! environment unless `--platform` asks for it.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::envoci::{exit, layer_of, Envoci, Json};
use common::registry::TestRegistry;
use common::CONDA_PLACEHOLDER;

const SPEC: &str = "name: multi\nchannels: [CHANNEL]\ndependencies: [python, greet, reloc-bin]\n";

const PLATFORMS: &[&str] = &["linux-64", "osx-arm64", "win-64"];

/// The machine's Python as `X.Y` (the fixture's `python` packages have its version).
fn python_short() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `(path, mode)` of a layer's relocation records.
fn relocations(layer: &Json) -> Vec<(String, String)> {
    layer["relocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_string();
            (text("path"), text("mode"))
        })
        .collect()
}

/// Every file below `dir`, relative.
fn files_below(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap();
            rel.to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn lock_and_blueprint_work_for_other_platforms() {
    let t = Envoci::new();
    let spec = t.spec("conda.yaml", SPEC);
    let spec = spec.to_str().unwrap();
    let mut blueprints = HashSet::new();
    for platform in PLATFORMS {
        let lock = t.dir().join(format!("{platform}.lock"));
        t.ok(&[
            "lock",
            spec,
            "--platform",
            platform,
            "-o",
            lock.to_str().unwrap(),
        ]);
        let text = fs::read_to_string(&lock).unwrap();
        for package in ["python-", "reloc-bin-1.0-h0_0.conda"] {
            assert!(
                text.contains(&format!("/{platform}/{package}")),
                "{package}:\n{text}"
            );
        }
        assert!(text.contains("/noarch/greet-0.3-h0_0.conda"), "{text}");
        for other in PLATFORMS.iter().filter(|p| *p != platform) {
            assert!(!text.contains(&format!("/{other}/")), "{other} in:\n{text}");
        }
        let bp = t.json(&["blueprint", spec, "--platform", platform]);
        let hex = bp["blueprint"].as_str().unwrap();
        assert_eq!(bp["tag"], format!("bp-{}-{platform}", &hex[..32]));
        blueprints.insert(hex.to_string());
    }
    assert_eq!(blueprints.len(), PLATFORMS.len());
}

/// Where a platform keeps what the checks below look at.
struct Layout {
    platform: &'static str,
    whereami: &'static str,
    stdlib: String,
    entry_point: &'static str,
    /// Whether installing rewrites binary placeholders (conda and rattler leave those of
    /// Windows binaries as they are: DLLs are found without an rpath).
    binary_relocated: bool,
}

fn layouts() -> Vec<Layout> {
    let short = python_short();
    vec![
        Layout {
            platform: "osx-arm64",
            whereami: "bin/whereami",
            stdlib: format!("lib/python{short}"),
            entry_point: "bin/greet",
            binary_relocated: true,
        },
        Layout {
            platform: "win-64",
            whereami: "Library/bin/whereami.exe",
            stdlib: "Lib".into(),
            entry_point: "Scripts/greet-script.py",
            binary_relocated: false,
        },
    ]
}

#[test]
fn builds_for_other_platforms_install_without_running_anything() {
    let t = Envoci::new();
    let spec = t.spec("conda.yaml", SPEC);
    let spec = spec.to_str().unwrap();
    for l in layouts() {
        let report = t.json(&["build", spec, "--platform", l.platform]);
        assert_eq!(report["built"], true, "{report}");
        assert_eq!(report["compiled"], 0, "no bytecode pass: {report}");
        let bp = report["tags"][0].as_str().unwrap();
        assert!(bp.ends_with(&format!("-{}", l.platform)), "{report}");
        let name_tag = format!("multi-{}", l.platform);
        assert_eq!(report["tags"][1], name_tag.as_str(), "{report}");

        let catalog = t.catalog(bp);
        assert_eq!(catalog["platform"], l.platform);
        let names: HashSet<&str> = catalog["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|layer| layer["kind"] == "conda")
            .map(|layer| layer["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            HashSet::from(["python", "greet", "libver", "reloc-bin"])
        );
        for (name, subdir) in [
            ("python", l.platform),
            ("reloc-bin", l.platform),
            ("greet", "noarch"),
        ] {
            assert_eq!(layer_of(&catalog, name)["subdir"], subdir, "{name}");
        }
        let binary = [(l.whereami.to_string(), "binary".to_string())];
        let expected = if l.binary_relocated { &binary[..] } else { &[] };
        assert_eq!(relocations(layer_of(&catalog, "reloc-bin")), expected);
        let sysconfig = format!("{}/_sysconfigdata_fixture.py", l.stdlib);
        assert!(
            relocations(layer_of(&catalog, "python")).contains(&(sysconfig.clone(), "text".into())),
            "{}",
            layer_of(&catalog, "python")
        );

        // Its files, restored here because asked for: relocated, no bytecode.
        let target = t.dir().join(l.platform);
        t.ok(&[
            "restore",
            &name_tag,
            "--target",
            target.to_str().unwrap(),
            "--platform",
            l.platform,
        ]);
        let files = files_below(&target);
        let site = format!("{}/site-packages/greet/__init__.py", l.stdlib);
        for wanted in [&site, l.entry_point, l.whereami] {
            assert!(
                files.iter().any(|f| f == wanted),
                "{wanted} not in {files:?}"
            );
        }
        assert!(!files.iter().any(|f| f.ends_with(".pyc")), "{files:?}");
        let target_str = fs::canonicalize(&target).unwrap();
        let target_str = target_str.to_str().unwrap();
        let binary = fs::read(target.join(l.whereami)).unwrap();
        let held = if l.binary_relocated {
            target_str
        } else {
            CONDA_PLACEHOLDER
        };
        let c_string = format!("{held}\0");
        assert!(
            binary
                .windows(c_string.len())
                .any(|w| w == c_string.as_bytes()),
            "{} holds {held} as a C string",
            l.whereami
        );
        let config = fs::read_to_string(target.join(&sysconfig)).unwrap();
        assert!(config.contains(target_str), "{config}");
        for file in &files {
            let bytes = fs::read(target.join(file)).unwrap();
            let build_dir = b"build-v1/";
            assert!(
                !bytes.windows(build_dir.len()).any(|w| w == build_dir),
                "{file} still holds the build prefix"
            );
        }
    }
}

#[test]
fn an_environment_for_another_platform_is_restored_only_when_asked_for() {
    let t = Envoci::new();
    let spec = t.spec("conda.yaml", SPEC);
    let report = t.json(&["build", spec.to_str().unwrap(), "--platform", "win-64"]);
    let tag = report["tags"][0].as_str().unwrap();
    let target = t.dir().join("env");
    let target_s = target.to_str().unwrap();

    let err = t.fail_as(exit::USAGE, &["restore", tag, "--target", target_s]);
    assert!(
        err.contains("is an environment for win-64")
            && err.contains("this machine is linux-64")
            && err.contains("--platform win-64"),
        "{err}"
    );
    assert!(!target.exists());
    let err = t.fail_as(
        exit::USAGE,
        &[
            "restore",
            tag,
            "--target",
            target_s,
            "--platform",
            "osx-arm64",
        ],
    );
    assert!(err.contains("not osx-arm64"), "{err}");
    assert!(!target.exists());

    // `restore conda.yaml --platform P` builds for P and restores what it built.
    let out = t.json(&[
        "restore",
        spec.to_str().unwrap(),
        "--target",
        target_s,
        "--platform",
        "win-64",
        "--no-build",
    ]);
    assert_eq!(out["manifest"], report["digest"], "{out}");
    assert!(target.join("python.exe").is_file());
}

#[test]
fn pushing_every_platform_to_one_tag_gives_one_index() {
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    let spec = builder.spec("conda.yaml", SPEC);
    let remote = registry.reference("envs/multi:latest");
    let mut built = Vec::new();
    for platform in PLATFORMS {
        let report = builder.json(&["build", spec.to_str().unwrap(), "--platform", platform]);
        builder.ok(&["push", report["tags"][0].as_str().unwrap(), &remote]);
        built.push((*platform, report["digest"].clone()));
    }

    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{remote}"))
        .output()
        .expect("skopeo is installed (apt-get install skopeo; .ci/run does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let mut entries: Vec<(String, String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = |v: &Json| v.as_str().unwrap().to_string();
            (
                text(&m["annotations"]["io.envoci.platform"]),
                text(&m["platform"]["os"]),
                text(&m["platform"]["architecture"]),
            )
        })
        .collect();
    entries.sort();
    let expected: Vec<(String, String, String)> = [
        ("linux-64", "linux", "amd64"),
        ("osx-arm64", "darwin", "arm64"),
        ("win-64", "windows", "amd64"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(entries, expected);

    // Each platform's manifest, pulled from the index into another store, is the build.
    let user = Envoci::new();
    for (platform, digest) in &built {
        let pulled = user.json(&["pull", &remote, "--platform", platform]);
        assert_eq!(pulled["digest"], *digest, "{platform}");
    }
}

#[test]
fn bad_platform_requests_fail_clearly_and_leave_nothing() {
    let t = Envoci::new();
    let spec = t.spec("conda.yaml", SPEC);
    let spec = spec.to_str().unwrap();
    for command in ["build", "lock"] {
        let err = t.fail(&[command, spec, "--platform", "linux-aarch64"]);
        assert!(
            err.contains("no channel of the spec has packages for linux-aarch64"),
            "{command}: {err}"
        );
    }
    let with_pip = t.spec(
        "pip.yaml",
        "channels: [CHANNEL]\ndependencies: [python, pip, {pip: [tinywheel==1.0]}]\n",
    );
    let err = t.fail_as(
        exit::USAGE,
        &[
            "build",
            with_pip.to_str().unwrap(),
            "--platform",
            "osx-arm64",
        ],
    );
    assert!(
        err.contains("`pip:` entries") && err.contains("osx-arm64"),
        "{err}"
    );
    assert!(t.has_no_environments());
    let builds = t.home().join("build-v1");
    assert!(fs::read_dir(&builds).map_or(true, |mut d| d.next().is_none()));
    assert!(!t.dir().join("envoci.lock").exists());
}
