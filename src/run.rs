//! `run`: a command inside an activated environment (rattler_shell computes the
//! variables: `PATH`, `CONDA_PREFIX`, the spec's `variables`, `activate.d` scripts).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// Why a command could not be run in an environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is not an environment.
    #[error("{} is not an environment (no conda-meta/); restore one there first", path.display())]
    NotEnvironment {
        /// The directory.
        path: PathBuf,
    },
    /// Activation failed.
    #[error("cannot activate {}: {reason}", path.display())]
    Activation {
        /// The environment.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The command could not be started.
    #[error("cannot run `{command}` in {}", path.display())]
    Spawn {
        /// The program.
        command: String,
        /// The environment.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `command` (program and arguments) in the activated environment at `prefix` and
/// waits for it.
pub fn run(prefix: &Path, command: &[OsString]) -> Result<ExitStatus, Error> {
    use rattler_shell::activation::{ActivationVariables, Activator};
    let prefix = std::fs::canonicalize(prefix).map_err(|_| Error::NotEnvironment {
        path: prefix.to_path_buf(),
    })?;
    if !prefix.join("conda-meta").is_dir() {
        return Err(Error::NotEnvironment { path: prefix });
    }
    let activation_error = |reason: String| Error::Activation {
        path: prefix.clone(),
        reason,
    };
    let platform = rattler_conda_types::Subdir::current()
        .ok_or_else(|| activation_error("unknown host platform".into()))?;
    let activator = Activator::from_path(&prefix, rattler_shell::shell::Bash::default(), platform)
        .map_err(|e| activation_error(e.to_string()))?;
    let variables = ActivationVariables::from_env().map_err(|e| activation_error(e.to_string()))?;
    let env = activator
        .run_activation(variables, None)
        .map_err(|e| activation_error(e.to_string()))?;
    let Some((program, args)) = command.split_first() else {
        return Err(activation_error("no command given".into()));
    };
    // Resolve the program on the activated PATH, not the caller's.
    let path = env.get("PATH").cloned().unwrap_or_default();
    let has_dir = Path::new(program).components().count() > 1;
    let resolved = std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| !has_dir && p.is_file())
        .unwrap_or_else(|| PathBuf::from(program));
    std::process::Command::new(&resolved)
        .args(args)
        .envs(env)
        .status()
        .map_err(|source| Error::Spawn {
            command: program.to_string_lossy().into_owned(),
            path: prefix.clone(),
            source,
        })
}
