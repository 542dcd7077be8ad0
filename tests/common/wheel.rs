//! Real wheels for `pip:` entries, written with the machine's Python's `zipfile` (a
//! module, its metadata with `Requires-Dist` lines, console scripts and a `RECORD` of
//! sha256s): no build backend, no network.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into a wheel.
pub struct Wheel<'a> {
    /// The distribution (also the module) name.
    pub name: &'a str,
    /// Its version (also the module's `__version__`).
    pub version: &'a str,
    /// `Requires-Dist` lines.
    pub requires: &'a [&'a str],
    /// The module's `__init__.py`, after the `__version__` line.
    pub module: &'a str,
    /// Console scripts (`name = module:function`).
    pub scripts: &'a [&'a str],
}

const SCRIPT: &str = r#"
import sys, json, zipfile, hashlib, base64
out, spec = sys.argv[1], json.loads(sys.argv[2])
name, version = spec["name"], spec["version"]
info = f"{name}-{version}.dist-info"
metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
metadata += "".join(f"Requires-Dist: {r}\n" for r in spec["requires"])
files = {
  f"{name}/__init__.py": f"__version__ = {version!r}\n" + spec["module"],
  f"{info}/METADATA": metadata,
  f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
if spec["scripts"]:
    files[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(s + "\n" for s in spec["scripts"])
record = []
with zipfile.ZipFile(out, "w") as z:
    for path, text in files.items():
        data = text.encode()
        z.writestr(zipfile.ZipInfo(path, (2000, 1, 1, 0, 0, 0)), data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    z.writestr(zipfile.ZipInfo(f"{info}/RECORD", (2000, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
"#;

/// Writes `wheel` as `NAME-VERSION-py3-none-any.whl` into `dir` (created); returns it.
pub fn write(dir: &Path, wheel: &Wheel<'_>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the wheel directory");
    let out = dir.join(format!("{}-{}-py3-none-any.whl", wheel.name, wheel.version));
    let spec = serde_json::json!({
        "name": wheel.name,
        "version": wheel.version,
        "requires": wheel.requires,
        "module": wheel.module,
        "scripts": wheel.scripts,
    });
    let status = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&out)
        .arg(spec.to_string())
        .status()
        .expect("run python3");
    assert!(status.success(), "writing {}", out.display());
    out
}
