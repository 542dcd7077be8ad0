//! Writes the local conda channel the `examples/hello` environment is built from: the
//! test suite's fixture channel (real `.conda` packages indexed by rattler_index: this
//! machine's CPython as `python`, `pip` from CPython's bundled wheel, `greet` with an
//! entry point, and more). No network.
//!
//! ```sh
//! cargo run --example hello-channel -- examples/hello/channel
//! ```

#[path = "../tests/common/conda.rs"]
mod conda;

fn main() {
    let Some(dest) = std::env::args_os().nth(1) else {
        eprintln!("usage: hello-channel DIR");
        std::process::exit(2);
    };
    let dest = std::path::PathBuf::from(dest);
    let channel = conda::channel();
    if let Err(e) = copy_tree(&channel.dir, &dest) {
        eprintln!("error: cannot write the channel to {}: {e}", dest.display());
        std::process::exit(1);
    }
    println!(
        "wrote {} packages to {}",
        channel.records.len(),
        dest.display()
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let rel = entry.path().strip_prefix(from).expect("inside the tree");
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
