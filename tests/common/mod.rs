//! Shared test support: a real local conda channel ([`conda`]) and a driver for the real
//! `envoci` binary ([`envoci`]).

#![allow(dead_code, unused_imports)]

pub mod conda;
pub mod envoci;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod token;

pub use conda::{channel, install_env, run_stdout, CONDA_PLACEHOLDER};
