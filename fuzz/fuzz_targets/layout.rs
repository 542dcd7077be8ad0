//! The OCI archive reader: the input is an `oci-archive` file, opened with
//! `Layout::open_archive` and, when it opens, imported into an empty store (index,
//! manifests, blobs checked against their names, layers unpacked into the file CAS).
#![no_main]

use envoci::store::Store;
use envoci::transfer::layout::{self, ImportOptions, Layout, Select};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = dir.path().join("input.tar");
    std::fs::write(&archive, data).expect("write the input");
    let Ok(layout) = Layout::open_archive(&archive) else {
        return;
    };
    let store = Store::open(dir.path().join("store")).expect("an empty store");
    let options = ImportOptions {
        platform: Some("linux-64"),
        progress: Default::default(),
    };
    let _ = layout::import(&store, &layout, Select::All, options);
});
