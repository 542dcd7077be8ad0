//! The layer tar reader (`envoci::layer::read_layer`) on any blob: the first byte picks
//! the compression (none, gzip, zstd), the rest is the blob. Every file's content is
//! hashed, as the store does while it unpacks a layer.
#![no_main]

use envoci::digest::Digest;
use envoci::layer::{read_layer, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, blob)) = data.split_first() else {
        return;
    };
    let compression = match first % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    // The store bounds extraction by the catalog's size; a fuzzer's catalog says 64 MiB.
    let limit = 64 << 20;
    let read = read_layer(blob, compression, limit, |_path, content, _exec| {
        Digest::of_reader(content).map(|(digest, _)| digest)
    });
    if let Ok((_entries, got)) = read {
        // The blob's digest covers every byte of it, however much the tar used.
        assert_eq!(got.size, blob.len() as u64);
        assert_eq!(got.digest, Digest::of(blob));
    }
});
