//! Tagging hand-made environments straight into a store: one layer blob and a catalog
//! that says what the test wants it to say (the hostile-layer tests make both lie).

use std::path::Path;

use envoci::artifact::CATALOG_MEDIA_TYPE;
use envoci::catalog::{Catalog, CatalogLayer, Environment, LayerKind, Relocation, SCHEMA_VERSION};
use envoci::ingest::commit_catalog;
use envoci::layer::LayerDigests;
use envoci::store::Store;

/// What the catalog of a one-layer environment claims about its layer.
pub struct Claim<'a> {
    /// The layer's digests and sizes as the catalog states them.
    pub digests: LayerDigests,
    /// The layer's media type.
    pub media: &'static str,
    /// How many paths it holds.
    pub files: u64,
    /// Files to relocate.
    pub relocations: Vec<Relocation>,
    /// The catalog's placeholder.
    pub placeholder: &'a str,
}

/// Stores `blob` as a layer blob and tags, in the store at `home`, a one-layer
/// environment whose catalog says what `claim` says.
pub fn tag_single_layer(home: &Path, tag: &str, blob: &[u8], claim: Claim<'_>) {
    let store = Store::open(home).unwrap();
    let scratch = store.scratch().unwrap();
    let (digest, _) = store.put_blob(&scratch, blob).unwrap();
    assert_eq!(digest, claim.digests.digest, "the blob is the claimed one");
    let catalog = Catalog {
        schema_version: SCHEMA_VERSION,
        media_type: CATALOG_MEDIA_TYPE.into(),
        tool: "test".into(),
        platform: "linux-64".into(),
        blueprint: None,
        spec: None,
        placeholder: claim.placeholder.into(),
        records: vec![],
        layers: vec![CatalogLayer {
            digest,
            diff_id: claim.digests.diff_id,
            size: claim.digests.uncompressed_size,
            files: claim.files,
            kind: LayerKind::Env,
            name: "env".into(),
            version: None,
            build: None,
            subdir: None,
            channel: None,
            sha256: None,
            relocations: claim.relocations,
            packages: Vec::new(),
        }],
        environment: Environment::default(),
    };
    let layers = [(claim.digests, claim.media)];
    commit_catalog(&store, &scratch, &catalog, &layers, tag).unwrap();
}
