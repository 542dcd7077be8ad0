//! Running the real `envoci` binary against a private store, as a user would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use serde_json::Value as Json;

/// A temporary working directory with its own store (`ENVOCI_HOME`).
pub struct Envoci {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Default for Envoci {
    fn default() -> Self {
        Self::new()
    }
}

impl Envoci {
    /// A fresh directory and store.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("envoci-test-")
            .tempdir()
            .expect("create temp dir");
        let home = dir.path().join("store");
        Envoci { dir, home }
    }

    /// A fresh directory and store at short paths (`/tmp/eXXXXXX`, its store `s/`):
    /// room for the build prefix of packages whose binary placeholders are 32 bytes.
    pub fn short() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e")
            .tempdir_in("/tmp")
            .expect("create temp dir in /tmp");
        let home = dir.path().join("s");
        Envoci { dir, home }
    }

    /// Writes a `conda.yaml` called `name` in the working directory, `CHANNEL` in
    /// `body` standing for the fixture channel's directory; returns its path.
    pub fn spec(&self, name: &str, body: &str) -> PathBuf {
        let channel = super::conda::channel().dir.display().to_string();
        let path = self.dir().join(name);
        std::fs::write(&path, body.replace("CHANNEL", &channel)).expect("write the spec");
        path
    }

    /// The working directory (put prefixes and targets here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The store.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A command running `envoci ARGS` against this store.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_envoci"));
        cmd.args(args)
            .env("ENVOCI_HOME", &self.home)
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs `envoci ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run envoci")
    }

    /// Every file in the store's CAS directories (`files-v1/<shard>/`), whatever its
    /// name: committed files and staged ones alike.
    pub fn cas_dir_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for shard in std::fs::read_dir(self.home.join("files-v1"))
            .into_iter()
            .flatten()
        {
            for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                found.push(file.unwrap().path());
            }
        }
        found
    }

    /// The layer indexes in the store (`layers-v1/<hex>.json`).
    pub fn layer_indexes(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.home.join("layers-v1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect()
    }

    /// Whether the store holds no environment (`envoci ls` lists nothing).
    pub fn has_no_environments(&self) -> bool {
        self.json(&["ls"]).as_array().is_some_and(|a| a.is_empty())
    }

    /// Runs `envoci ARGS` and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "envoci {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `envoci --json ARGS`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Json {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "envoci {} printed no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The manifest digest (`sha256:…`) `reference` names in this store.
    pub fn digest(&self, reference: &str) -> String {
        let inspected = self.json(&["inspect", reference]);
        inspected["summary"]["digest"]
            .as_str()
            .expect("inspect names the digest")
            .to_string()
    }

    /// Installs `packages` of the fixture channel into a prefix under this test's
    /// directory and snapshots it as `tag`.
    pub fn with_env(&self, tag: &str, packages: &[&str]) -> &Self {
        let prefix = self.dir().join(format!("prefix-{tag}"));
        super::install_env(&prefix, packages);
        self.ok(&[
            "snapshot",
            prefix.to_str().expect("UTF-8 path"),
            "--tag",
            tag,
        ]);
        self
    }

    /// Runs `envoci ARGS`, asserts success, returns stdout.
    pub fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ok(args).stdout).into_owned()
    }

    /// Runs `envoci ARGS`, asserts it failed cleanly — a documented error exit code (1
    /// to 6, never a crash or a signal) and one error message; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        self.fail_with(args, |code| (exit::OTHER..=exit::INTEGRITY).contains(&code))
    }

    /// Runs `envoci ARGS`, asserts it failed with exit code `code` (see [`exit`]) and one
    /// error message; returns stderr.
    pub fn fail_as(&self, code: i32, args: &[&str]) -> String {
        self.fail_with(args, |c| c == code)
    }

    fn fail_with(&self, args: &[&str], expected: impl Fn(i32) -> bool) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.code().is_some_and(&expected),
            "envoci {} should fail cleanly with the right exit code, not {:?}; stderr:\n{stderr}",
            args.join(" "),
            out.status.code()
        );
        assert!(
            stderr.starts_with("error: "),
            "one clear error, got:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    /// The catalog of `reference`, as `inspect --json` prints it.
    pub fn catalog(&self, reference: &str) -> Json {
        self.json(&["inspect", reference])["catalog"].clone()
    }

    /// Runs `code` in the restored environment at `target` with bytecode writing on and
    /// `python -v`; returns stdout (trimmed) and the import log.
    pub fn import_verbosely(&self, target: &Path, code: &str) -> (String, String) {
        let out = self
            .cmd(&[
                "run",
                "--target",
                target.to_str().unwrap(),
                "--",
                "python",
                "-v",
                "-c",
                code,
            ])
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        (String::from_utf8_lossy(&out.stdout).trim().to_string(), log)
    }

    /// The catalog entry of the layer called `name` in `reference`'s catalog.
    pub fn layer(&self, reference: &str, name: &str) -> Json {
        layer_of(&self.catalog(reference), name).clone()
    }
}

/// The entry of the layer called `name` in `catalog`.
pub fn layer_of<'a>(catalog: &'a Json, name: &str) -> &'a Json {
    catalog["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name}: {catalog}"))
}

/// The documented exit codes.
pub mod exit {
    /// Any other failure.
    pub const OTHER: i32 = 1;
    /// A malformed command line, reference or option.
    pub const USAGE: i32 = 2;
    /// No such environment, tag, repository or digest.
    pub const NOT_FOUND: i32 = 3;
    /// Credentials missing, wrong or not allowed.
    pub const AUTH: i32 = 4;
    /// The registry is unreachable or timed out.
    pub const NETWORK: i32 = 5;
    /// Content that does not match its digest or size.
    pub const INTEGRITY: i32 = 6;
}

/// Makes `cmd` run as if the disk filled up after `bytes` in any one file: no file may
/// grow beyond that (RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail with EFBIG the way
/// they would with ENOSPC).
pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls async-signal-safe libc functions.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `cmd` run with at most `bytes` of address space (RLIMIT_AS): an allocation
/// beyond it fails.
pub fn limit_address_space(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls an async-signal-safe libc function.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
