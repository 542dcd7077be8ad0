"""Corpora for scripts/bench.

realistic: a local conda channel made of this machine's CPython and pip (the test suite's
fixture channel, written by `cargo run --example hello-channel`) and real wheels from PyPI
converted into conda packages: pure-python wheels become `noarch: python` packages (files
under site-packages/, console scripts as link.json entry points, mapped by the
installer), binary wheels become linux-64 packages (files under lib/pythonX.Y/
site-packages/, console scripts written to bin/ with the conda prefix placeholder in
their shebang) depending on `python >=X.Y,<X.Y+1`. Wheel dependencies (Requires-Dist,
markers evaluated for this Python on linux x86_64, extras dropped) become conda
dependencies. Two specs use the channel: the second pins older versions of about a
tenth of the packages, so it shares ~90% of its packages with the first.

Everything is cached under target/bench-corpus/ (or $ENVOCI_BENCH_CORPUS): wheels per
corpus kind, the channel with a stamp naming what it was made from, so a rerun costs
nothing.

The synthetic corpus (N generated files) lives in scripts/bench itself.
"""

import email.parser
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("ENVOCI_BENCH_CORPUS") or os.path.join(ROOT, "target", "bench-corpus")
FORMAT = 3  # bump when the conversion changes, to rebuild cached channels
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
EPOCH = 946684800
TIMESTAMP_MS = 1700000000000

# What each corpus asks pip for (with dependencies), and the older versions its second
# environment pins (downloaded without dependencies; their own dependencies are met by
# what the first set brings).
KINDS = {
    "full": {
        "requirements": [
            "numpy", "pandas", "scipy", "matplotlib", "scikit-learn", "sympy", "networkx",
            "pillow", "requests", "click", "jinja2", "pyyaml", "pytz", "python-dateutil",
            "tzdata", "pygments", "rich", "tqdm", "toolz", "cloudpickle", "fsspec", "filelock",
            "platformdirs", "pytest", "decorator", "wrapt", "more-itertools",
            "importlib-metadata", "jsonschema", "pydantic", "sqlalchemy", "babel", "docutils",
            "sphinx", "tornado", "jedi", "ipython", "msgpack", "psutil", "lxml",
            "cryptography", "boto3", "plotly", "openpyxl", "xlsxwriter", "tabulate",
            "colorama", "humanize", "simplejson", "orjson", "regex", "attrs", "six",
            "packaging",
        ],
        "variant": {
            "requests": "2.32.3", "urllib3": "2.2.3", "click": "8.1.7", "attrs": "24.2.0",
            "packaging": "24.2", "pyyaml": "6.0.2", "markupsafe": "3.0.2", "jinja2": "3.1.5",
            "certifi": "2024.8.30", "idna": "3.10", "tqdm": "4.66.5", "pygments": "2.18.0",
        },
    },
    "quick": {
        "requirements": [
            "requests", "click", "jinja2", "pyyaml", "attrs", "six", "packaging", "tqdm",
            "python-dateutil", "colorama", "tabulate", "toolz",
        ],
        "variant": {"requests": "2.32.3", "click": "8.1.7"},
    },
}


class CorpusError(Exception):
    """The realistic corpus cannot be made (no PyPI, no fixture channel, ...)."""


def log(msg):
    print(f"corpus: {msg}", file=sys.stderr, flush=True)


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def fixture_channel():
    """The test suite's fixture channel (python, pip, ...), written once by the
    hello-channel example. Returns its directory."""
    dest = os.path.join(CACHE, "fixture")
    if not os.path.exists(os.path.join(dest, "noarch", "repodata.json")):
        log("writing the fixture channel (cargo run --example hello-channel)")
        shutil.rmtree(dest, ignore_errors=True)
        proc = subprocess.run(["cargo", "run", "-q", "--example", "hello-channel", "--", dest], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise CorpusError(f"cargo run --example hello-channel failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return dest


def fixture_python(fixture):
    """(python record file name, record) of the fixture channel's python."""
    with open(os.path.join(fixture, "linux-64", "repodata.json")) as f:
        packages = json.load(f)["packages.conda"]
    for fn, rec in packages.items():
        if rec["name"] == "python":
            return fn, rec
    raise CorpusError(f"no python package in {fixture}")


def pip_download(args, dest):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", dest] + args
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        text = proc.stdout.decode(errors="replace").strip()
        last = text.splitlines()[-1] if text else f"exit status {proc.returncode}"
        raise CorpusError(f"pip download from PyPI failed: {last}\n{text[-1500:]}")


def download(kind, pyver):
    """Wheels of KINDS[kind] for CPython pyver on manylinux x86_64, cached. Returns the
    directory."""
    spec = KINDS[kind]
    dest = os.path.join(CACHE, f"wheels-{kind}-py{pyver}")
    stamp = os.path.join(dest, ".complete")
    want = json.dumps(spec, sort_keys=True)
    if os.path.exists(stamp) and open(stamp).read() == want:
        return dest
    os.makedirs(dest, exist_ok=True)
    abi = "cp" + pyver.replace(".", "")
    target = ["--only-binary=:all:", "--python-version", pyver, "--implementation", "cp", "--abi", abi,
              "--abi", "abi3", "--abi", "none", "--platform", "manylinux2014_x86_64",
              "--platform", "manylinux_2_28_x86_64", "--platform", "any"]
    log(f"downloading {len(spec['requirements'])} requirements and their dependencies from PyPI into {dest}")
    pip_download(target + spec["requirements"], dest)
    pins = [f"{name}=={version}" for name, version in spec["variant"].items()]
    pip_download(target + ["--no-deps"] + pins, dest)
    with open(stamp, "w") as f:
        f.write(want)
    return dest


def marker_env(pyver, full):
    return {"python_version": pyver, "python_full_version": full, "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def requirement_class():
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def tar_bytes(members):
    """A deterministic uncompressed tar of (path, bytes, executable) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, data, exe in sorted(members):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o755 if exe else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zstd_module():
    try:
        import zstandard
        return zstandard
    except ImportError:
        return None


def write_package(out_dir, stem, files, info, zstd):
    """Writes STEM.conda (zstd available) or STEM.tar.bz2; returns the file name."""
    if zstd is not None:
        cctx = zstd.ZstdCompressor(level=15, threads=-1)
        fn = f"{stem}.conda"
        with zipfile.ZipFile(os.path.join(out_dir, fn), "w", zipfile.ZIP_STORED) as z:
            for name, data in [("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
                               (f"info-{stem}.tar.zst", cctx.compress(tar_bytes(info))),
                               (f"pkg-{stem}.tar.zst", cctx.compress(tar_bytes(files)))]:
                zi = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
                z.writestr(zi, data)
        return fn
    import bz2
    fn = f"{stem}.tar.bz2"
    with open(os.path.join(out_dir, fn), "wb") as f:
        f.write(bz2.compress(tar_bytes(info + files), 9))
    return fn


def script(module_attr):
    module, _, attr = module_attr.partition(":")
    attr = attr.split("[")[0].strip()
    head = attr.split(".")[0]
    return (f"#!{PLACEHOLDER}/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
            f"from {module.strip()} import {head}\nif __name__ == '__main__':\n"
            f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            f"    sys.exit({attr}())\n").encode()


def entry_points(text):
    """console_scripts and gui_scripts of an entry_points.txt: [(name, module:attr)]."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif "=" in line and section in ("console_scripts", "gui_scripts"):
            name, target = line.split("=", 1)
            out.append((name.strip(), target.strip()))
    return out


def convert(whl, pyver, env):
    """One wheel → the content of one conda package: (subdir, name, version, build,
    files as (path, bytes, executable), paths.json entries, link.json or None, repodata
    record without hashes, requirements as (name, specifier))."""
    Requirement = requirement_class()
    z = zipfile.ZipFile(whl)
    names = z.namelist()
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
    meta = email.parser.Parser().parsestr(z.read(f"{dist_info}/METADATA").decode("utf-8", "replace"))
    name, version = normalize(meta["Name"]), meta["Version"]
    pure = os.path.basename(whl)[:-4].split("-")[-1] == "any"
    site = "site-packages/" if pure else f"lib/python{pyver}/site-packages/"
    data_dir = dist_info[: -len(".dist-info")] + ".data/"
    files, placeholders = [], set()
    for zi in z.infolist():
        if zi.is_dir():
            continue
        data = z.read(zi)
        exe = bool((zi.external_attr >> 16) & 0o111)
        path = zi.filename
        if path.startswith(data_dir):
            kind, _, rest = path[len(data_dir):].partition("/")
            if kind in ("purelib", "platlib"):
                path = site + rest
            elif kind == "scripts":
                path = ("python-scripts/" if pure else "bin/") + rest
                if data.startswith(b"#!python"):
                    data = f"#!{PLACEHOLDER}/bin/python".encode() + data[len(b"#!python"):]
                    placeholders.add(path)
                exe = True
            elif kind == "headers":
                path = f"include/python{pyver}/{name}/{rest}"
            else:
                path = rest
        else:
            path = site + path
        if path.endswith(".dist-info/INSTALLER"):
            data = b"conda\n"
        files.append((path, data, exe))
    link = None
    eps = entry_points(z.read(f"{dist_info}/entry_points.txt").decode()) if f"{dist_info}/entry_points.txt" in names else []
    if eps and pure:
        link = {"noarch": {"type": "python", "entry_points": [f"{n} = {t}" for n, t in eps]}, "package_metadata_version": 1}
    elif eps:
        for n, t in eps:
            files.append((f"bin/{n}", script(t), True))
            placeholders.add(f"bin/{n}")

    requirements = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        spec = str(req.specifier).replace("===", "==")
        requirements.append((normalize(req.name), spec))

    subdir = "noarch" if pure else "linux-64"
    build = "py_0" if pure else f"py{pyver.replace('.', '')}_0"
    major, minor = pyver.split(".")
    python_dep = "python" if pure else f"python >={pyver},<{major}.{int(minor) + 1}"
    paths = []
    for path, data, exe in sorted(files):
        entry = {"_path": path, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}
        if path in placeholders:
            entry.update(file_mode="text", prefix_placeholder=PLACEHOLDER)
        paths.append(entry)
    record = {"name": name, "version": version, "build": build, "build_number": 0, "depends": [python_dep],
              "subdir": subdir, "license": meta.get("License-Expression") or "unknown", "timestamp": TIMESTAMP_MS}
    if pure:
        record["noarch"] = "python"
    else:
        record.update(arch="x86_64", platform="linux")
    return subdir, name, version, build, files, paths, link, record, requirements


def realistic(kind, runner_log=log):
    """The realistic corpus KIND ("full" or "quick"): returns a dict with the channel
    directory, the two conda.yaml paths, and a description. Raises CorpusError."""
    fixture = fixture_channel()
    python_fn, python_rec = fixture_python(fixture)
    full = python_rec["version"]
    pyver = ".".join(full.split(".")[:2])
    wheels = download(kind, pyver)
    whls = sorted(f for f in os.listdir(wheels) if f.endswith(".whl"))
    zstd = zstd_module()
    if zstd is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "zstandard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        zstd = zstd_module()
    channel = os.path.join(CACHE, f"channel-{kind}-py{pyver}")
    stamp_want = json.dumps({"format": FORMAT, "wheels": whls, "python": python_rec["sha256"], "zstd": zstd is not None})
    stamp = os.path.join(channel, ".complete")
    specs = (os.path.join(CACHE, f"spec-{kind}", "env1", "conda.yaml"), os.path.join(CACHE, f"spec-{kind}", "env2", "conda.yaml"))
    if not (os.path.exists(stamp) and open(stamp).read() == stamp_want):
        runner_log(f"converting {len(whls)} wheels into conda packages in {channel}")
        start = time.monotonic()
        shutil.rmtree(channel, ignore_errors=True)
        for subdir in ("linux-64", "noarch"):
            os.makedirs(os.path.join(channel, subdir))
        env = marker_env(pyver, full)
        converted = []
        for whl in whls:
            subdir, name, version, build, files, paths, link, record, reqs = convert(os.path.join(wheels, whl), pyver, env)
            converted.append((subdir, name, version, build, files, paths, link, record, reqs))
        available = {c[1] for c in converted} | {"python", "pip"}
        repodata = {s: {} for s in ("linux-64", "noarch")}
        for subdir, name, version, build, files, paths, link, record, reqs in converted:
            for dep, spec in reqs:
                if dep not in available:
                    runner_log(f"{name} {version}: dependency {dep} is not in the corpus, dropped")
                    continue
                record["depends"].append(f"{dep} {spec}".strip())
            index = dict(record)
            info = [("info/index.json", json.dumps(index, indent=2, sort_keys=True).encode(), False),
                    ("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}, indent=2).encode(), False),
                    ("info/files", "".join(p["_path"] + "\n" for p in paths).encode(), False)]
            if link:
                info.append(("info/link.json", json.dumps(link, indent=2).encode(), False))
            has_prefix = [p for p in paths if "prefix_placeholder" in p]
            if has_prefix:
                info.append(("info/has_prefix", "".join(f"{PLACEHOLDER} text {p['_path']}\n" for p in has_prefix).encode(), False))
            fn = write_package(os.path.join(channel, subdir), f"{name}-{version}-{build}", files, info, zstd)
            with open(os.path.join(channel, subdir, fn), "rb") as f:
                blob = f.read()
            repodata[subdir][fn] = dict(record, md5=hashlib.md5(blob).hexdigest(), sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
        for subdir in ("linux-64", "noarch"):
            with open(os.path.join(fixture, subdir, "repodata.json")) as f:
                fixture_packages = json.load(f)["packages.conda"]
            for fn, rec in fixture_packages.items():
                if rec["name"] in ("python", "pip"):
                    shutil.copy(os.path.join(fixture, subdir, fn), os.path.join(channel, subdir, fn))
                    repodata[subdir][fn] = rec
            doc = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
            for fn, rec in repodata[subdir].items():
                doc["packages.conda" if fn.endswith(".conda") else "packages"][fn] = rec
            with open(os.path.join(channel, subdir, "repodata.json"), "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
        with open(stamp, "w") as f:
            f.write(stamp_want)
        runner_log(f"channel written in {time.monotonic() - start:.0f} s")

    spec = KINDS[kind]
    url = "file://" + channel
    deps1 = [f"python {pyver}.*", "pip"] + [normalize(r) for r in spec["requirements"]]
    deps2 = list(deps1)
    for name, version in spec["variant"].items():
        pin = f"{normalize(name)} =={version}"
        deps2 = [pin if d == normalize(name) else d for d in deps2]
        if pin not in deps2:
            deps2.append(pin)
    for path, deps, label in [(specs[0], deps1, "env1"), (specs[1], deps2, "env2")]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        text = (f"# scripts/bench realistic corpus ({kind}), {label}\nname: bench-{kind}-{label}\n"
                f"channels:\n  - {url}\ndependencies:\n" + "".join(f"  - {d}\n" for d in deps))
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
    return {"kind": kind, "channel": channel, "spec1": specs[0], "spec2": specs[1], "python": pyver,
            "wheels": len(whls), "variant": sorted(spec["variant"])}


def hello():
    """The small fixture corpus: examples/hello/conda.yaml's environment (python, pip,
    greet) from the fixture channel; one spec, no variant."""
    fixture = fixture_channel()
    path = os.path.join(CACHE, "spec-hello", "conda.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = f"name: bench-hello\nchannels:\n  - file://{fixture}\ndependencies:\n  - python >=3.8\n  - pip\n  - greet\n"
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return {"kind": "hello", "channel": fixture, "spec1": path, "spec2": None}


if __name__ == "__main__":
    print(json.dumps(realistic(sys.argv[1] if len(sys.argv) > 1 else "quick"), indent=1))
