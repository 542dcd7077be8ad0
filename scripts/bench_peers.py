"""Peer tools for scripts/bench, each run as its own process so that the benchmark times
and measures (peak RSS) it end to end, like envoci.

    bench_peers.py rattler-build SPEC PREFIX CACHE [--compile]
                                                      solve SPEC's channels and dependencies
                                                      with py-rattler, install into PREFIX
                                                      with the package cache CACHE; with
                                                      --compile, then compile the bytecode
                                                      of PREFIX/lib/python* with the
                                                      prefix's python -m compileall -j0
    bench_peers.py rattler-install LOCK PREFIX CACHE  install the linux-64 records of a lock
                                                      file (envoci lock writes rattler's
                                                      format) into PREFIX from CACHE
    bench_peers.py oras-pull HOST/REPO:TAG DIR        pull every layer with the oras Python SDK

Each prints a JSON object of its own phase timings on stdout.
"""

import asyncio
import json
import os
import sys
import time


def spec_of(path):
    """channels and dependencies of a conda.yaml (the bench corpora write a simple
    subset: one item per line)."""
    channels, deps, section = [], [], None
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].rstrip()
            if not line:
                continue
            if not line.startswith(" "):
                section = line.split(":", 1)[0].strip()
                continue
            item = line.strip()[1:].strip() if line.strip().startswith("-") else None
            if item is None:
                continue
            if section == "channels":
                if not item.startswith(("file://", "http://", "https://")) and not os.path.isabs(item):
                    item = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), item))
                channels.append(item)
            elif section == "dependencies":
                deps.append(item)
    return channels, deps


async def rattler_build(spec, prefix, cache, *flags):
    import rattler
    channels, deps = spec_of(spec)
    t0 = time.perf_counter()
    gateway = rattler.Gateway(cache_dir=os.path.join(cache, "repodata"))
    records = await rattler.solve(channels, deps, gateway=gateway, platforms=["linux-64", "noarch"],
                                  virtual_packages=rattler.VirtualPackage.detect())
    t1 = time.perf_counter()
    await rattler.install(records, prefix, cache_dir=os.path.join(cache, "pkgs"), show_progress=False)
    t2 = time.perf_counter()
    out = {"solve": t1 - t0, "install": t2 - t1, "packages": len(records)}
    if "--compile" in flags:
        out["compile"] = compile_bytecode(prefix)
    return out


def compile_bytecode(prefix):
    """Seconds the prefix's own python takes to compile lib/python*/ (compileall -j0:
    every core), as envoci's build does for every module it installs."""
    import glob
    import subprocess
    python = os.path.join(prefix, "bin", "python3")
    libs = glob.glob(os.path.join(prefix, "lib", "python3*"))
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "compileall", "-q", "-j0", *libs], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def rattler_install(lock, prefix, cache):
    import rattler
    t0 = time.perf_counter()
    lock_file = rattler.LockFile.from_path(lock)
    env = lock_file.default_environment()
    platform = next(p for p in lock_file.platforms() if p.name == "linux-64")
    records = env.conda_repodata_records_for_platform(platform)
    await rattler.install(records, prefix, cache_dir=os.path.join(cache, "pkgs"), show_progress=False)
    return {"install": time.perf_counter() - t0, "packages": len(records)}


def oras_pull(ref, outdir):
    import oras.client
    t0 = time.perf_counter()
    client = oras.client.OrasClient(hostname=ref.split("/", 1)[0], insecure=True)
    files = client.pull(target=ref, outdir=outdir)
    return {"pull": time.perf_counter() - t0, "files": len(files)}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "rattler-build":
        out = asyncio.run(rattler_build(*args))
    elif cmd == "rattler-install":
        out = asyncio.run(rattler_install(*args))
    elif cmd == "oras-pull":
        out = oras_pull(*args)
    else:
        sys.exit(f"unknown command {cmd}\n{__doc__}")
    print(json.dumps(out), flush=True)
    # py-rattler 0.28 can crash in its runtime's teardown at interpreter exit (SIGSEGV
    # after the work is done): leave without it.
    os._exit(0)


if __name__ == "__main__":
    main()
