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

/// The `site-packages` directory of the Python in `prefix` (`lib/python3.*/`).
pub fn site_packages(prefix: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(prefix.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3")
        })
        .unwrap_or_else(|| panic!("no lib/python3.* in {}", prefix.display()))
        .join("site-packages")
}

/// The catalog schema, compiled.
pub fn catalog_schema() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/catalog.v1.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

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
