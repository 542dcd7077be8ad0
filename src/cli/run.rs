//! `envoci run (--target DIR | --space NAME) -- CMD ARGS...`

use envoci::error::UsageError;
use std::path::PathBuf;
use std::process::ExitCode;

use envoci::store::Store;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci run --target ./env -- python -c 'import numpy'")]
pub struct Args {
    /// The environment directory.
    #[arg(long, conflicts_with = "space", required_unless_present = "space")]
    target: Option<PathBuf>,
    /// A managed space of the store.
    #[arg(long)]
    space: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<std::ffi::OsString>,
}

pub fn run(store: &Store, args: Args) -> anyhow::Result<ExitCode> {
    let prefix = match (&args.target, &args.space) {
        (Some(t), _) => t.clone(),
        (None, Some(name)) => envoci::space::managed_space(store, name)?,
        (None, None) => return Err(UsageError("give --target DIR or --space NAME".into()).into()),
    };
    let status = envoci::run::run(&prefix, &args.command)?;
    // The command's own exit code; a signal becomes 128 + its number, as shells report it.
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
