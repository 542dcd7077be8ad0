//! `envoci login HOST` and `envoci logout HOST`

use envoci::error::UsageError;
use std::io::Read;
use std::process::ExitCode;

use envoci::transfer::{credentials, Registry, RemoteRef};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: echo \"$TOKEN\" | envoci login ghcr.io -u robot --password-stdin")]
pub struct LoginArgs {
    /// Registry host (and port), e.g. ghcr.io or harbor.corp:8443.
    host: String,
    /// User name [default: $ENVOCI_REGISTRY_USER].
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password (or access token) from standard input
    /// [default: $ENVOCI_REGISTRY_PASSWORD].
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    transfer: TransferArgs,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci logout ghcr.io")]
pub struct LogoutArgs {
    /// Registry host (and port).
    host: String,
}

pub fn login(args: LoginArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let user = match args
        .username
        .or_else(|| std::env::var("ENVOCI_REGISTRY_USER").ok())
    {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(UsageError(
                "give a user name with --username (or ENVOCI_REGISTRY_USER)".into(),
            )
            .into())
        }
    };
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else {
        std::env::var("ENVOCI_REGISTRY_PASSWORD").map_err(|_| UsageError("give the password on standard input with --password-stdin (or ENVOCI_REGISTRY_PASSWORD)".into()))?
    };
    if args.transfer.insecure && !envoci::transfer::is_loopback(&args.host) {
        eprintln!(
            "warning: {} is spoken to over plain HTTP (--insecure): the password crosses the network unencrypted",
            args.host
        );
    }
    // Check the credentials against the registry before keeping them.
    let probe = RemoteRef::parse(&format!("{}/envoci/login-check:latest", args.host))?;
    let mut options = args.transfer.options()?;
    options.credentials = Some((user.clone(), password.clone()));
    super::runtime()?.block_on(Registry::check_login(&probe, &options))?;
    let path = credentials::store_login(&args.host, &user, &password)?;
    let json = serde_json::json!({ "host": args.host, "user": user, "config": path });
    printer.print(&json, || {
        format!(
            "logged in to {} as {user} (saved in {})",
            args.host,
            path.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: LogoutArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    if !credentials::remove_login(&args.host)? {
        anyhow::bail!(
            "not logged in to {} (no entry in {})",
            args.host,
            credentials::docker_config_path().display()
        );
    }
    let json = serde_json::json!({ "host": args.host, "logged_out": true });
    printer.print(&json, || format!("logged out of {}", args.host));
    Ok(ExitCode::SUCCESS)
}
