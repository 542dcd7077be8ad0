//! Command-line front end: one file per command, each parsing nothing and printing
//! through [`Printer`]; errors are printed here once, with their causes and a hint.

mod build;
mod check;
mod copy;
mod diff;
mod export;
mod gc;
mod inspect;
mod login;
mod ls;
mod progress;
mod pull;
mod push;
mod restore;
mod run;
mod serve;
mod snapshot;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use envoci::store::Store;
use envoci::ErrorKind;

/// The exit codes, shown by `--help` (and in the README).
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure
  2  usage: a malformed command line, reference or option
  3  not found: no such environment, tag, repository or digest
  4  authentication: credentials missing, wrong, or not allowed
  5  network: the registry is unreachable or timed out
  6  integrity: content does not match its digest or size
`envoci run` exits with the command's own code. With --json, an error is printed to
stderr as an object with `error`, `kind`, `exitCode` and `causes`.";

/// envoci: build conda environments once, restore them anywhere in seconds.
#[derive(Parser, Debug)]
#[command(name = "envoci", version, about, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Log what envoci does on stderr: retries, endpoints, lock waits (`RUST_LOG`
    /// overrides).
    #[arg(long, short, global = true)]
    verbose: bool,
    /// Log every request too (method, URL, status, time; never a credential).
    #[arg(long, global = true)]
    debug: bool,
    /// The store directory [default: $ENVOCI_HOME, else the user's data dir].
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an environment from a conda.yaml into the store (solve, install, pip, ingest).
    Build(build::Args),
    /// Solve a conda.yaml, pin its pip entries, and write the lock (URLs and sha256).
    Lock(build::LockArgs),
    /// Print a conda.yaml's blueprint (the key of its build; a CI cache key).
    Blueprint(build::BlueprintArgs),
    /// Run a command in an activated environment; its exit code is passed through.
    Run(run::Args),
    /// Ingest an existing conda environment into the store.
    Snapshot(snapshot::Args),
    /// List the environments in the store (with sizes), or its spaces.
    Ls(ls::Args),
    /// Compare two environments: packages added, removed and changed, layers shared,
    /// and what a machine holding the first downloads for the second.
    Diff(diff::Args),
    /// Remove tags from the store (spaces keep working; `gc` reclaims the disk).
    Rm(gc::RmArgs),
    /// Reclaim disk: blobs, files and caches no tag and no space needs.
    Gc(gc::GcArgs),
    /// Show an environment's catalog and layers.
    Inspect(inspect::Args),
    /// Push an environment from the store to a registry or OCI layout (only blobs it
    /// lacks).
    Push(push::Args),
    /// Pull an environment from a registry or OCI layout into the store (only blobs it
    /// lacks).
    Pull(pull::Args),
    /// Copy an environment between registries, OCI layouts (oci:DIR), OCI archives
    /// (oci-archive:FILE) and the store, digests preserved (blobs the destination has
    /// are not sent again).
    Copy(copy::Args),
    /// Write environments as one OCI image layout (a .tar archive or a directory) for
    /// air-gapped sites; shared blobs once, `--since` for an incremental bundle.
    Export(export::ExportArgs),
    /// Add the environments of an OCI archive or layout to the store (every blob
    /// verified).
    Import(export::ImportArgs),
    /// Restore an environment into a directory or a managed space.
    Restore(restore::Args),
    /// Save credentials for a registry (in Docker's config.json, shared with docker,
    /// skopeo and oras).
    Login(login::LoginArgs),
    /// Remove saved credentials for a registry.
    Logout(login::LogoutArgs),
    /// Check the store and the spaces (`--verify` rehashes everything).
    Check(check::Args),
    /// Serve the store read-only as an OCI registry (a LAN mirror for nearby machines).
    Serve(serve::Args),
    /// Print shell completions to stdout (`envoci completions bash > /etc/bash_completion.d/envoci`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (`envoci man > ~/.local/share/man/man1/envoci.1`).
    Man,
}

/// Options of every command that talks to a registry.
#[derive(clap::Args, Debug, Clone)]
pub struct TransferArgs {
    /// Parallel blob transfers.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// Plain HTTP for this registry (loopback registries always use it).
    #[arg(long)]
    insecure: bool,
    /// Conda platform to pick from a multi-platform index; `restore` refuses an
    /// environment for another one [default: this machine's].
    #[arg(long)]
    platform: Option<String>,
    /// Retries of a request that failed for a transient reason (connection, timeout,
    /// 429, 5xx); an interrupted download is resumed where it stopped.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Seconds a registry connection may stay silent before the request fails (and is
    /// retried; a download resumes where it stopped).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Slowest average download speed (KiB/s) a blob may have before it fails as timed
    /// out (retried; the download resumes where it stopped).
    #[arg(long, value_name = "KIB_PER_SEC", default_value_t = 16)]
    min_speed: u64,
    /// PEM file of CA certificates to trust for the registry's TLS certificate.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// A mirror to pull from before the registry (HOST[:PORT][/PATH] standing in for
    /// the registry host; repeatable, tried in order, before registries.conf mirrors).
    #[arg(
        long,
        value_name = "HOST[/PATH]",
        env = "ENVOCI_MIRROR",
        value_delimiter = ','
    )]
    mirror: Vec<String>,
}

impl TransferArgs {
    /// The registry options these flags and registries.conf give.
    fn options(&self) -> anyhow::Result<envoci::transfer::RegistryOptions> {
        let mirrors = envoci::transfer::mirrors::Mirrors::load(self.mirror.clone())?;
        Ok(envoci::transfer::RegistryOptions {
            jobs: self.jobs,
            insecure: self.insecure,
            retries: self.retries,
            ca_file: self.ca_file.clone(),
            credentials: None,
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
            min_speed: self.min_speed.max(1).saturating_mul(1024),
            mirrors: std::sync::Arc::new(mirrors),
            env_credentials: true,
            progress: progress::reporter(),
        })
    }
}

/// Logs to stderr at the level `-v`/`--debug` ask for, or as `RUST_LOG` says; none by
/// default.
fn init_logs(verbose: bool, debug: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ if debug => EnvFilter::new("envoci=debug,oci_client=debug,warn"),
        _ if verbose => EnvFilter::new("envoci=info,warn"),
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `1 tag`, `2 tags`, `0 tags`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration on the command line: a number and a unit, `s`, `m`, `h`, `d` or `w`
/// (`90s`, `15m`, `12h`, `7d`); `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write 90s, 15m, 12h, 7d or 2w"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("`{unit}` is not a unit: use s, m, h, d or w")),
    };
    number
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// The async runtime registry commands run on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    envoci::runtime().context("cannot start the async runtime")
}

/// Prints results as text or JSON.
pub struct Printer {
    json: bool,
}

impl Printer {
    /// Prints `value` as JSON, or `text()` as text.
    pub fn print<T: serde::Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let out = if self.json {
            serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        } else {
            text()
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`envoci ls | head`) is not an error.
        let _ = writeln!(stdout, "{}", out.trim_end());
    }
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::init(cli.json, cli.quiet);
    init_logs(cli.verbose, cli.debug);
    let printer = Printer { json: cli.json };
    match run(cli, &printer) {
        Ok(code) => code,
        Err(err) => {
            let kind = kind_of(err.as_ref());
            report_error(&err, kind, printer.json);
            ExitCode::from(kind.exit_code())
        }
    }
}

fn run(cli: Cli, printer: &Printer) -> anyhow::Result<ExitCode> {
    // These describe the command line itself: no store is opened.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "envoci", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let root = cli.store.unwrap_or_else(Store::default_root);
    let store = Store::open(&root).map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot open the store at {}", root.display()))
    })?;
    match cli.command {
        Command::Build(args) => build::run(&store, args, printer),
        Command::Lock(args) => build::lock(&store, args, printer),
        Command::Blueprint(args) => build::blueprint(args, printer),
        Command::Run(args) => run::run(&store, args),
        Command::Snapshot(args) => snapshot::run(&store, args, printer),
        Command::Ls(args) => ls::run(&store, args, printer),
        Command::Rm(args) => gc::rm(&store, args, printer),
        Command::Diff(args) => diff::run(&store, args, printer),
        Command::Gc(args) => gc::gc(&store, args, printer),
        Command::Inspect(args) => inspect::run(&store, args, printer),
        Command::Push(args) => push::run(&store, args, printer),
        Command::Pull(args) => pull::run(&store, args, printer),
        Command::Copy(args) => copy::run(&store, args, printer),
        Command::Export(args) => export::export(&store, args, printer),
        Command::Import(args) => export::import(&store, args, printer),
        Command::Restore(args) => restore::run(&store, args, printer),
        Command::Login(args) => login::login(args, printer),
        Command::Logout(args) => login::logout(args, printer),
        Command::Check(args) => check::run(&store, args, printer),
        Command::Serve(args) => serve::run(store, args),
        Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
    }
}

/// The kind of `error`: that of the first error in its chain that is one of the
/// library's (context added on top says nothing about the kind), else "other".
fn kind_of(error: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(kind) = own_kind(e) {
            return kind;
        }
        next = e.source();
    }
    ErrorKind::Other
}

/// The kind of `e` if it is one of the library's errors.
fn own_kind(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use envoci::{artifact, builder, provide, space, store, transfer};
    if e.is::<envoci::error::UsageError>() {
        Some(ErrorKind::Usage)
    } else if let Some(e) = e.downcast_ref::<transfer::Error>() {
        Some(e.kind().into())
    } else if let Some(e) = e.downcast_ref::<transfer::layout::Error>() {
        Some(e.kind())
    } else if let Some(e) = e.downcast_ref::<store::Error>() {
        Some(e.kind())
    } else if let Some(e) = e.downcast_ref::<artifact::LoadError>() {
        Some(e.kind())
    } else if let Some(e) = e.downcast_ref::<space::Error>() {
        Some(e.kind())
    } else if let Some(e) = e.downcast_ref::<envoci::serve::Error>() {
        Some(e.kind())
    } else if let Some(e) = e.downcast_ref::<provide::Error>() {
        Some(e.kind())
    } else {
        e.downcast_ref::<builder::Error>().map(builder::Error::kind)
    }
}

/// Prints an error once, with its causes (a cause whose text the line above already
/// holds is left out), and as JSON with its kind under `--json`.
fn report_error(err: &anyhow::Error, kind: ErrorKind, json: bool) {
    let mut shown = err.to_string();
    let mut causes = Vec::new();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            shown.push_str(&text);
            causes.push(text);
        }
    }
    if json {
        let value = serde_json::json!({
            "error": err.to_string(),
            "kind": kind.as_str(),
            "exitCode": kind.exit_code(),
            "causes": causes,
        });
        eprintln!("{value}");
        return;
    }
    eprintln!("error: {err}");
    for cause in causes {
        eprintln!("  caused by: {cause}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_found_under_context() {
        let inner = envoci::store::Error::NotFound("robot".into());
        let wrapped = anyhow::Error::new(inner).context("restoring robot");
        assert_eq!(kind_of(wrapped.as_ref()), ErrorKind::NotFound);
        let usage = anyhow::Error::new(envoci::error::UsageError("give --target".into()));
        assert_eq!(kind_of(usage.as_ref()), ErrorKind::Usage);
        let plain = anyhow::anyhow!("something else");
        assert_eq!(kind_of(plain.as_ref()), ErrorKind::Other);
    }
}
