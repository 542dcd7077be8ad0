//! The Python steps of a build, run with the environment's own interpreter: `pip:`
//! requirements (with `uv pip` when uv is available, else `python -m pip`) — resolved
//! and installed, or, from a lock, exactly the pinned files — then one reproducible
//! bytecode pass over every module that has none. `envoci lock` resolves the `pip:`
//! lines with the environment's pip ([`pip_resolve`]) without installing them.
//!
//! Neither pip nor uv compiles here, and the import system writes no `.pyc` while they
//! run (`PYTHONDONTWRITEBYTECODE`): every `.pyc` comes from [`compile_bytecode`], which
//! writes checked-hash pycs (valid whatever the file times are, so a restored space never
//! recompiles) whose `co_filename` is the path relative to the prefix (so the bytes do
//! not depend on where the build ran), with `PYTHONHASHSEED=0` for stable constants.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::pins::Pin;
use super::Error;

/// The timestamp pip, uv and the bytecode pass see (`SOURCE_DATE_EPOCH`): the layers' fixed
/// mtime, 2000-01-01T00:00:00Z.
pub const SOURCE_DATE_EPOCH: &str = "946684800";

/// The environment's interpreter, if it has one.
pub fn interpreter(prefix: &Path) -> Option<PathBuf> {
    ["bin/python", "bin/python3"]
        .iter()
        .map(|p| prefix.join(p))
        .find(|p| p.is_file())
}

/// A command for a Python step: environment variables that could leak the caller's
/// Python setup in are removed, reproducibility variables are set.
fn command(program: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_NO_INPUT", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    for var in [
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "PYTHONUSERBASE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Which pip front end a build uses.
#[derive(Clone, Debug)]
pub enum Installer {
    /// `uv pip install --python PY` (uv found in the environment or on `PATH`).
    Uv(PathBuf),
    /// `PY -m pip install`.
    Pip,
}

impl Installer {
    /// uv from the environment, else from `PATH`, else pip.
    pub fn detect(prefix: &Path) -> Installer {
        let in_env = prefix.join("bin/uv");
        if in_env.is_file() {
            return Installer::Uv(in_env);
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("uv"))
                    .find(|p| p.is_file())
            })
            .map_or(Installer::Pip, Installer::Uv)
    }

    /// The name shown in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Installer::Uv(_) => "uv",
            Installer::Pip => "pip",
        }
    }
}

/// Resolves the `pip:` lines with the environment's own pip, without installing
/// anything (`pip install --dry-run --report`): the distributions pip would add to the
/// prefix's conda packages, pinned. Relative paths in the lines resolve from `cwd`.
pub fn pip_resolve(
    prefix: &Path,
    lines: &[String],
    cwd: &Path,
    scratch: &Path,
) -> Result<Vec<Pin>, Error> {
    let python = python_with_pip(prefix, &Installer::Pip).map_err(|e| match e {
        // uv cannot stand in here: only pip reports what it would install.
        Error::Pip { .. } if interpreter(prefix).is_some() => Error::Pip {
            installer: "pip",
            message: "the spec has `pip:` entries, which `envoci lock` resolves with the \
                      environment's own pip, but the environment has none (add `pip` to \
                      its dependencies)"
                .into(),
        },
        other => other,
    })?;
    let requirements = write_requirements(scratch, "resolve", lines, cwd)?;
    let report = scratch.join("pip-report.json");
    let mut cmd = command(&python, cwd);
    cmd.args(["-m", "pip", "install", "--dry-run", "--quiet", "--report"])
        .arg(&report)
        .arg("-r")
        .arg(&requirements);
    run_pip(cmd, &Installer::Pip)?;
    let bytes =
        std::fs::read(&report).map_err(|e| Error::Io(format!("read {}", report.display()), e))?;
    super::pins::from_report(&bytes)
}

/// Installs exactly the pinned distributions from `wheels` (where [`super::pins::fetch`]
/// put them): no index, no dependencies, every hash required.
pub fn pip_install_pinned(
    prefix: &Path,
    pins: &[Pin],
    wheels: &Path,
    scratch: &Path,
    installer: &Installer,
) -> Result<(), Error> {
    let python = python_with_pip(prefix, installer)?;
    let lines: Vec<String> = pins.iter().map(Pin::requirement).collect();
    let requirements = write_requirements(scratch, "pinned", &lines, scratch)?;
    let mut cmd = match installer {
        Installer::Uv(uv) => {
            let mut cmd = command(uv, scratch);
            cmd.args(["pip", "install", "--quiet", "--python"])
                .arg(&python)
                .env("UV_NO_PROGRESS", "1");
            cmd
        }
        Installer::Pip => {
            let mut cmd = command(&python, scratch);
            cmd.args([
                "-m",
                "pip",
                "install",
                "--isolated",
                "--disable-pip-version-check",
                "--no-compile",
                "--no-warn-script-location",
            ]);
            cmd
        }
    };
    cmd.args([
        "--no-deps",
        "--no-index",
        "--require-hashes",
        "--find-links",
    ])
    .arg(wheels)
    .arg("-r")
    .arg(&requirements);
    run_pip(cmd, installer)
}

/// The environment's interpreter, when the installer can run with it (pip needs to be
/// in the environment; uv only needs the interpreter).
fn python_with_pip(prefix: &Path, installer: &Installer) -> Result<PathBuf, Error> {
    let python = interpreter(prefix).ok_or_else(|| Error::Pip {
        installer: installer.name(),
        message: "the spec has `pip:` entries but the environment has no Python \
                  (add `python` and `pip` to its dependencies)"
            .into(),
    })?;
    if matches!(installer, Installer::Pip)
        && !prefix.join("bin/pip").exists()
        && !has_pip_module(prefix)
    {
        return Err(Error::Pip {
            installer: "pip",
            message: "the spec has `pip:` entries but the environment has no pip \
                      (add `pip` to its dependencies, or put uv on PATH)"
                .into(),
        });
    }
    Ok(python)
}

/// Writes requirement `lines` to `scratch/NAME/requirements.txt`, alone in its
/// directory: pip looks for a relative `--find-links` beside the requirements file
/// before the working directory, so nothing may be found there. Relative find-links,
/// requirement and constraint files are made absolute from `cwd` (so `--find-links .`
/// means the spec's directory, as `-r more.txt` does).
fn write_requirements(
    scratch: &Path,
    name: &str,
    lines: &[String],
    cwd: &Path,
) -> Result<PathBuf, Error> {
    let dir = scratch.join(name);
    let path = dir.join("requirements.txt");
    let text: String = lines
        .iter()
        .map(|l| absolute_paths(l, cwd) + "\n")
        .collect();
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| Error::Io(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// The options of a `pip:` line whose value is a path pip would take relative to the
/// requirements file: how they may be spelled, the `=` or space forms first.
const PATH_OPTIONS: &[&str] = &[
    "--find-links=",
    "--find-links ",
    "--requirement=",
    "--requirement ",
    "--constraint=",
    "--constraint ",
    "-f ",
    "-f",
    "-r ",
    "-r",
    "-c ",
    "-c",
];

/// `line` with a relative path given to `--find-links`/`-f`, `--requirement`/`-r` or
/// `--constraint`/`-c` made absolute from `cwd`; any other line as it is.
fn absolute_paths(line: &str, cwd: &Path) -> String {
    let trimmed = line.trim();
    let split = PATH_OPTIONS.iter().find_map(|o| {
        trimmed
            .strip_prefix(o)
            .map(|v| (o.trim_end_matches([' ', '=']), v.trim()))
    });
    match split {
        Some((option, value))
            if !value.is_empty() && !value.contains("://") && Path::new(value).is_relative() =>
        {
            format!("{option} {}", cwd.join(value).display())
        }
        _ => line.to_string(),
    }
}

/// Runs a pip (or uv) command; a failure carries the end of its output.
fn run_pip(mut cmd: Command, installer: &Installer) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::Pip {
        installer: installer.name(),
        message: format!("cannot run it: {e}"),
    })?;
    if !out.status.success() {
        return Err(Error::Pip {
            installer: installer.name(),
            message: summarise_output(&out.stderr, &out.stdout),
        });
    }
    Ok(())
}

/// Installs the `pip:` lines into `prefix`; relative paths in them resolve from `cwd`
/// (the spec's directory). `scratch` holds the requirements file.
pub fn pip_install(
    prefix: &Path,
    lines: &[String],
    cwd: &Path,
    scratch: &Path,
    installer: &Installer,
) -> Result<(), Error> {
    let python = python_with_pip(prefix, installer)?;
    let requirements = write_requirements(scratch, "install", lines, cwd)?;
    let mut cmd = match installer {
        Installer::Uv(uv) => {
            let mut cmd = command(uv, cwd);
            cmd.args(["pip", "install", "--quiet", "--python"])
                .arg(&python)
                .env("UV_NO_PROGRESS", "1");
            cmd
        }
        Installer::Pip => {
            let mut cmd = command(&python, cwd);
            cmd.args([
                "-m",
                "pip",
                "install",
                "--no-compile",
                "--no-warn-script-location",
            ]);
            cmd
        }
    };
    cmd.arg("-r").arg(&requirements);
    run_pip(cmd, installer)
}

fn has_pip_module(prefix: &Path) -> bool {
    site_packages(prefix).is_some_and(|sp| sp.join("pip").is_dir())
}

/// `lib/pythonX.Y/site-packages` of the environment, if there is one.
fn site_packages(prefix: &Path) -> Option<PathBuf> {
    std::fs::read_dir(prefix.join("lib"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|p| p.join("site-packages"))
        .find(|p| p.is_dir())
}

/// The last lines of a failed tool's error output: what the user needs, not pages.
fn summarise_output(stderr: &[u8], stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(if stderr.trim_ascii().is_empty() {
        stdout
    } else {
        stderr
    });
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

/// The compile step, as a short script for the environment's interpreter: reads
/// NUL-separated paths from a file, compiles each with a relative `dfile`, in parallel.
const COMPILE_SCRIPT: &str = r#"
import sys, py_compile, concurrent.futures as cf
prefix, listing = sys.argv[1], sys.argv[2]
with open(listing, 'rb') as f:
    files = [p.decode() for p in f.read().split(b'\0') if p]
mode = py_compile.PycInvalidationMode.CHECKED_HASH
def one(path):
    try:
        py_compile.compile(path, dfile=path[len(prefix) + 1:], doraise=True, invalidation_mode=mode)
        return 1
    except Exception:
        return 0  # e.g. Python 2 syntax in a package's test data: conda skips those too
if len(files) < 64:
    print(sum(map(one, files)))
else:
    with cf.ProcessPoolExecutor() as ex:
        print(sum(ex.map(one, files, chunksize=32)))
"#;

/// Compiles every `.py` under the prefix's `lib/python*` that has no `.pyc` for this
/// interpreter yet. Returns how many were compiled; 0 without a Python.
pub fn compile_bytecode(prefix: &Path, scratch: &Path) -> Result<usize, Error> {
    let Some(python) = interpreter(prefix) else {
        return Ok(0);
    };
    let tag_out = command(&python, prefix)
        .args([
            "-s",
            "-c",
            "import sys; print(sys.implementation.cache_tag or '')",
        ])
        .output()
        .map_err(|e| Error::Io(format!("run {}", python.display()), e))?;
    let tag = String::from_utf8_lossy(&tag_out.stdout).trim().to_string();
    if !tag_out.status.success() || tag.is_empty() {
        return Err(Error::Bytecode(format!(
            "{} does not run: {}",
            python.display(),
            summarise_output(&tag_out.stderr, &tag_out.stdout)
        )));
    }
    let mut listing = Vec::new();
    let lib = prefix.join("lib");
    let roots = std::fs::read_dir(&lib)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("python"))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for root in roots {
        for entry in walkdir::WalkDir::new(&root).into_iter().flatten() {
            let path = entry.path();
            if !entry.file_type().is_file() || path.extension().is_none_or(|e| e != "py") {
                continue;
            }
            let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
                continue;
            };
            let pyc = dir
                .join("__pycache__")
                .join(format!("{}.{tag}.pyc", stem.to_string_lossy()));
            if !pyc.exists() {
                use std::os::unix::ffi::OsStrExt;
                listing.extend_from_slice(path.as_os_str().as_bytes());
                listing.push(0);
            }
        }
    }
    if listing.is_empty() {
        return Ok(0);
    }
    let list_path = scratch.join("compile-list");
    std::fs::write(&list_path, &listing)
        .map_err(|e| Error::Io(format!("write {}", list_path.display()), e))?;
    let out = command(&python, prefix)
        .args(["-s", "-B", "-c", COMPILE_SCRIPT])
        .arg(prefix)
        .arg(&list_path)
        .output()
        .map_err(|e| Error::Io(format!("run {}", python.display()), e))?;
    if !out.status.success() {
        return Err(Error::Bytecode(summarise_output(&out.stderr, &out.stdout)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_find_links_and_requirement_files_are_made_absolute() {
        let cwd = Path::new("/spec");
        for (line, expected) in [
            ("--find-links wheels", "--find-links /spec/wheels"),
            ("--find-links=./w", "--find-links /spec/./w"),
            ("-f .", "-f /spec/."),
            ("-fwheels", "-f /spec/wheels"),
            ("--find-links /abs", "--find-links /abs"),
            (
                "--find-links https://x.org/links",
                "--find-links https://x.org/links",
            ),
            ("-r more.txt", "-r /spec/more.txt"),
            ("--constraint=c.txt", "--constraint /spec/c.txt"),
            ("-c/abs/c.txt", "-c/abs/c.txt"),
            ("tinywheel>=1.0", "tinywheel>=1.0"),
            ("--no-index", "--no-index"),
            ("fastapi", "fastapi"),
        ] {
            assert_eq!(absolute_paths(line, cwd), expected, "{line}");
        }
    }
}
