//! A real local conda channel and real environments, with no network: `.conda` packages
//! written with `rattler_package_streaming`, indexed with `rattler_index`, installed
//! with rattler's `Installer` (which writes real `conda-meta/*.json` and replaces
//! placeholders exactly as conda would).

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rattler_conda_types::{Channel, RepoData, RepoDataRecord};
use serde_json::json;

/// The 255-byte build placeholder baked into fixture packages, like conda-build's.
pub const CONDA_PLACEHOLDER: &str = concat!(
    "/opt/conda-bld/fixture_1700000000000/_h_env_placehold_placehold_placehold_placehold_placehold",
    "_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placeh",
    "old_placehold_placehold_placehold_placehold_placehold_placehold__"
);

/// A local channel and its records.
pub struct LocalChannel {
    /// The channel directory (`linux-64/`, `noarch/`).
    pub dir: PathBuf,
    /// Every package record, with `file://` URLs.
    pub records: Vec<RepoDataRecord>,
    _keep: tempfile::TempDir,
}

/// One file of a fixture package.
enum F<'a> {
    /// Plain file.
    File(&'a str, Vec<u8>, bool),
    /// File with the placeholder in text mode.
    Text(&'a str, String, bool),
    /// File with the placeholder in binary mode.
    Binary(&'a str, Vec<u8>),
    /// Relative symlink.
    Link(&'a str, &'a str),
}

struct Pkg<'a> {
    name: &'a str,
    depends: &'a [&'a str],
    noarch: bool,
    files: Vec<F<'a>>,
}

/// The channel, built once per test process.
pub fn channel() -> &'static LocalChannel {
    static CHANNEL: OnceLock<LocalChannel> = OnceLock::new();
    CHANNEL.get_or_init(build_channel)
}

fn whereami_binary(work: &Path) -> Vec<u8> {
    let src = work.join("whereami.c");
    fs::write(
        &src,
        format!("#include <stdio.h>\nstatic const char prefix[] = \"{CONDA_PLACEHOLDER}\";\nint main(void) {{ puts(prefix); return 0; }}\n"),
    )
    .unwrap();
    let out = work.join("whereami");
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the fixture");
    assert!(status.success(), "cc failed");
    fs::read(out).unwrap()
}

fn packages(work: &Path) -> Vec<Pkg<'static>> {
    let text_script = format!("#!/bin/sh\necho {CONDA_PLACEHOLDER}\n");
    let mut pkgs = vec![
        Pkg {
            name: "reloc-bin",
            depends: &[],
            noarch: false,
            files: vec![F::Binary("bin/whereami", whereami_binary(work))],
        },
        Pkg {
            name: "reloc-text",
            depends: &[],
            noarch: false,
            files: vec![
                F::Text("bin/hello.sh", text_script, true),
                F::Text(
                    "etc/reloc-text.conf",
                    format!("# config\nprefix={CONDA_PLACEHOLDER}\nlib={CONDA_PLACEHOLDER}/lib\n"),
                    false,
                ),
            ],
        },
        Pkg {
            name: "links",
            depends: &[],
            noarch: false,
            files: vec![
                F::File(
                    "lib/libdemo.so.1",
                    b"\x7fELF not really a library\0".to_vec(),
                    false,
                ),
                F::Link("lib/libdemo.so", "libdemo.so.1"),
                F::File("share/links/empty.txt", Vec::new(), false),
                F::File(
                    "bin/links-tool",
                    b"#!/bin/sh\necho links-tool\n".to_vec(),
                    true,
                ),
            ],
        },
        Pkg {
            name: "clobber-a",
            depends: &[],
            noarch: false,
            files: vec![
                F::File("share/clobber.txt", b"from clobber-a\n".to_vec(), false),
                F::File("share/clobber-a.txt", b"a\n".to_vec(), false),
            ],
        },
        Pkg {
            name: "clobber-b",
            depends: &[],
            noarch: false,
            files: vec![
                F::File("share/clobber.txt", b"from clobber-b\n".to_vec(), false),
                F::File("share/clobber-b.txt", b"b\n".to_vec(), false),
            ],
        },
        Pkg {
            name: "shared-dep",
            depends: &[],
            noarch: true,
            files: (1..=5)
                .map(|i| {
                    F::File(
                        leak(format!("share/shared-dep/data-{i}.txt")),
                        format!("shared data {i}\n").repeat(i * 10).into_bytes(),
                        false,
                    )
                })
                .chain([F::Text(
                    "share/shared-dep/where.txt",
                    format!("installed at {CONDA_PLACEHOLDER}\n"),
                    false,
                )])
                .collect(),
        },
        Pkg {
            name: "app-one",
            depends: &["shared-dep", "reloc-text"],
            noarch: false,
            files: vec![
                F::File("share/app-one/README", b"app one\n".to_vec(), false),
                F::File("bin/app-one", b"#!/bin/sh\necho one\n".to_vec(), true),
            ],
        },
        Pkg {
            name: "app-two",
            depends: &["shared-dep", "links"],
            noarch: false,
            files: vec![
                F::File("share/app-two/README", b"app two\n".to_vec(), false),
                F::File("bin/app-two", b"#!/bin/sh\necho two\n".to_vec(), true),
            ],
        },
    ];
    for p in 1..=5 {
        let name = leak(format!("pad-{p}"));
        let files = (0..20)
            .map(|i| {
                F::File(
                    leak(format!("lib/{name}/sub{}/file{i}.dat", i % 4)),
                    format!("{name} file {i}\n").repeat(1 + i * 7).into_bytes(),
                    i % 5 == 0,
                )
            })
            .collect();
        pkgs.push(Pkg {
            name,
            depends: &[],
            noarch: false,
            files,
        });
    }
    pkgs
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn sha256_hex(bytes: &[u8]) -> String {
    envoci::digest::Digest::of(bytes).hex()
}

fn write_package(channel_dir: &Path, work: &Path, pkg: &Pkg<'_>) {
    let root = work.join(format!("pkg-{}", pkg.name));
    fs::create_dir_all(root.join("info")).unwrap();
    let mut written = Vec::new();
    let mut paths_json = Vec::new();
    for f in &pkg.files {
        let (path, bytes, exec, mode) = match f {
            F::File(p, b, x) => (*p, Some(b.clone()), *x, None),
            F::Text(p, s, x) => (*p, Some(s.clone().into_bytes()), *x, Some("text")),
            F::Binary(p, b) => (*p, Some(b.clone()), true, Some("binary")),
            F::Link(p, target) => {
                let full = root.join(p);
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, &full).unwrap();
                written.push(full);
                paths_json.push(json!({"_path": p, "path_type": "softlink", "size_in_bytes": 0}));
                (*p, None, false, None)
            }
        };
        let Some(bytes) = bytes else { continue };
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, &bytes).unwrap();
        fs::set_permissions(
            &full,
            fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
        )
        .unwrap();
        written.push(full);
        let mut entry = json!({"_path": path, "path_type": "hardlink", "sha256": sha256_hex(&bytes), "size_in_bytes": bytes.len()});
        if let Some(mode) = mode {
            entry["file_mode"] = mode.into();
            entry["prefix_placeholder"] = CONDA_PLACEHOLDER.into();
        }
        paths_json.push(entry);
    }
    let subdir = if pkg.noarch { "noarch" } else { "linux-64" };
    let mut index = json!({
        "name": pkg.name, "version": "1.0", "build": "h0_0", "build_number": 0,
        "depends": pkg.depends, "license": "MIT", "subdir": subdir, "timestamp": 1_700_000_000_000u64,
    });
    if pkg.noarch {
        index["noarch"] = "generic".into();
    } else {
        index["arch"] = "x86_64".into();
        index["platform"] = "linux".into();
    }
    let info_files = [
        (
            "info/index.json",
            serde_json::to_vec_pretty(&index).unwrap(),
        ),
        (
            "info/paths.json",
            serde_json::to_vec_pretty(&json!({"paths": paths_json, "paths_version": 1})).unwrap(),
        ),
    ];
    for (p, bytes) in info_files {
        fs::write(root.join(p), bytes).unwrap();
        written.push(root.join(p));
    }
    let out_name = format!("{}-1.0-h0_0", pkg.name);
    let dir = channel_dir.join(subdir);
    fs::create_dir_all(&dir).unwrap();
    let file = fs::File::create(dir.join(format!("{out_name}.conda"))).unwrap();
    rattler_package_streaming::write::write_conda_package(
        file,
        &root,
        &written,
        rattler_conda_types::compression_level::CompressionLevel::Numeric(3),
        Some(1),
        &out_name,
        None,
        None,
    )
    .unwrap();
}

fn build_channel() -> LocalChannel {
    let keep = tempfile::Builder::new()
        .prefix("envoci-channel-")
        .tempdir()
        .unwrap();
    let dir = keep.path().join("channel");
    let work = keep.path().join("work");
    fs::create_dir_all(&work).unwrap();
    for sub in ["linux-64", "noarch"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for pkg in packages(&work) {
        write_package(&dir, &work, &pkg);
    }
    runtime().block_on(async {
        rattler_index::index_fs(rattler_index::IndexFsConfig {
            channel: dir.clone(),
            target_platform: None,
            repodata_patch: None,
            write_zst: false,
            write_shards: false,
            repodata_revisions: Vec::new(),
            package_revision_assignment: Default::default(),
            force: true,
            max_parallel: 2,
            multi_progress: None,
        })
        .await
        .expect("rattler_index indexes the fixture channel")
    });
    let channel = Channel::try_from_directory(&dir).expect("channel directory is a valid path");
    let mut records = Vec::new();
    for sub in ["linux-64", "noarch"] {
        let repodata = RepoData::from_path(dir.join(sub).join("repodata.json"))
            .expect("repodata.json written by rattler_index");
        records.extend(repodata.into_repo_data_records(&channel));
    }
    LocalChannel {
        dir,
        records,
        _keep: keep,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Installs exactly the named packages into `prefix` with rattler's Installer.
pub fn install_env(prefix: &Path, packages: &[&str]) {
    let channel = channel();
    let records: Vec<RepoDataRecord> = packages
        .iter()
        .map(|name| {
            channel
                .records
                .iter()
                .find(|r| r.package_record.name.as_normalized() == *name)
                .unwrap_or_else(|| panic!("package {name} is not in the fixture channel"))
                .clone()
        })
        .collect();
    let cache = channel.dir.parent().unwrap().join("pkgs");
    runtime().block_on(async {
        rattler::install::Installer::new()
            .with_package_cache(rattler::package_cache::PackageCache::new(cache))
            .with_execute_link_scripts(false)
            .install(prefix, records)
            .await
            .expect("rattler installs the fixture environment")
    });
}

/// Runs a program and returns its trimmed stdout, asserting success.
pub fn run_stdout(path: &Path) -> String {
    let out = Command::new(path)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}
