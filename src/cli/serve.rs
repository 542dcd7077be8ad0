//! `envoci serve [--addr HOST:PORT]`

use std::process::ExitCode;

use envoci::serve;
use envoci::store::Store;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Repositories: a pulled host/PATH:TAG is served as PATH:TAG, the \
store's own tags as local:TAG.\n\nExample: envoci serve --addr 0.0.0.0:5000, then on \
another machine: envoci pull --mirror basestation:5000 ghcr.io/acme/envs:robot"
)]
pub struct Args {
    /// Where to listen (port 0 picks a free one). Plain HTTP: clients other than
    /// loopback need `--insecure` or `insecure = true` for it in registries.conf.
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: String,
    /// Requests answered at once (a blob counts until its body is sent).
    #[arg(long, default_value_t = 64)]
    max_requests: usize,
}

pub fn run(store: Store, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let listener = serve::bind(&args.addr).await?;
        let addr = serve::local_addr(&listener).map_or(args.addr.clone(), |a| a.to_string());
        eprintln!(
            "serving {} read-only on http://{addr}/v2/ (Ctrl-C stops)",
            store.root().display()
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        serve::serve(store, listener, args.max_requests, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
