//! The `envoci` command: parse, run, print. Everything else lives in the library.

mod cli;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    cli::main()
}

/// glibc gives each thread that allocates its own arena (up to eight per core) and keeps
/// what is freed in it: unpacking several layers at once on many short-lived threads
/// then holds far more memory than it uses. Two arenas keep the peak bounded (a pull
/// of a 1 GB environment peaked at 148 MiB with glibc's default, 118 MiB with two).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread
    // is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
