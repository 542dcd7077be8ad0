//! Shared test support: a real local conda channel ([`conda`]) and a driver for the real
//! `envoci` binary ([`envoci`]).

#![allow(dead_code, unused_imports)]

pub mod catalog;
pub mod conda;
pub mod envoci;
pub mod oci;
pub mod proxy;
pub mod registry;
pub mod token;
pub mod wheel;

pub use conda::{
    channel, install_env, run_stdout, ANACONDA_PLACEHOLDER, CONDA_PLACEHOLDER, CONDA_PLACEHOLDER_80,
};

/// Two environments of the fixture channel sharing most packages (`app-one` and
/// `pad-3` against `app-two` and `pad-4`).
pub const ENV_ONE: &[&str] = &[
    "reloc-bin",
    "reloc-text",
    "links",
    "shared-dep",
    "app-one",
    "pad-1",
    "pad-2",
    "pad-3",
];
pub const ENV_TWO: &[&str] = &[
    "reloc-bin",
    "reloc-text",
    "links",
    "shared-dep",
    "app-two",
    "pad-1",
    "pad-2",
    "pad-4",
];
