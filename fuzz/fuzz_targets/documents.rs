//! The documents a registry or archive sends, on the same bytes: an image index
//! (`parse_index`, its envoci entries, platform choice, and the canonical index of the
//! same entries read back), a manifest (`ImageManifest`, `check_envoci`) and a catalog
//! (`Catalog`, its totals, and its canonical form read back unchanged).
#![no_main]

use envoci::artifact;
use envoci::catalog::Catalog;
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageManifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(index)) = artifact::parse_index(data) {
        let entries = artifact::envoci_entries(&index);
        let _ = artifact::choose_platform(&index, "linux-64");
        let document = artifact::index_document(entries.clone()).expect("an index serialises");
        let back = artifact::parse_index(&document)
            .expect("a canonical index parses")
            .expect("a canonical index is an index");
        let mut sorted = entries;
        sorted.sort_by(|a, b| a.platform.cmp(&b.platform));
        assert_eq!(artifact::envoci_entries(&back), sorted);
    }
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        let _ = artifact::check_envoci(&manifest);
        let _ = envoci::json::to_canonical_vec(&manifest);
    }
    if let Ok(mut catalog) = serde_json::from_slice::<Catalog>(data) {
        // Totals saturate (they used to overflow: fuzz/seeds/documents/catalog-*).
        let _ = catalog.file_count();
        let _ = catalog.size();
        // `spec` is free JSON whose floats need not survive a round trip exactly.
        catalog.spec = None;
        let bytes = envoci::json::to_canonical_vec(&catalog).expect("a catalog serialises");
        let back: Catalog = serde_json::from_slice(&bytes).expect("a canonical catalog parses");
        assert_eq!(back, catalog);
    }
});
