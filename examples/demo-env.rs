//! Makes a real conda environment offline, for trying envoci without a conda channel:
//! builds the test suite's local channel (real `.conda` packages, indexed by
//! rattler_index, including a C program with its install prefix compiled in) and
//! installs a few packages into the given directory with rattler's Installer.
//!
//! ```sh
//! cargo run --example demo-env -- /tmp/envoci-demo/env
//! ```

#[path = "../tests/common/conda.rs"]
mod conda;

fn main() {
    let Some(prefix) = std::env::args_os().nth(1) else {
        eprintln!("usage: demo-env PREFIX");
        std::process::exit(2);
    };
    let prefix = std::path::PathBuf::from(prefix);
    if prefix.exists() {
        eprintln!(
            "error: {} exists already; give a new directory",
            prefix.display()
        );
        std::process::exit(1);
    }
    let packages = [
        "reloc-bin",
        "reloc-text",
        "links",
        "shared-dep",
        "app-one",
        "pad-1",
        "pad-2",
    ];
    conda::install_env(&prefix, &packages);
    println!(
        "installed {} packages into {}",
        packages.len(),
        prefix.display()
    );
}
