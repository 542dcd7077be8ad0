//! OCI helpers for the tests: real skopeo, and a minimal container image layout (what
//! envoci must refuse, saying what it is).

use std::fs;
use std::path::Path;

/// Runs skopeo and asserts it succeeded.
pub fn skopeo(args: &[&str]) {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (apt-get install skopeo; .ci/run does)");
    assert!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an OCI layout at `layout` holding one tiny container image tagged `tag`.
pub fn container_image_layout(layout: &Path, tag: &str) {
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = envoci::digest::Digest::of(bytes);
        fs::write(layout.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        (d.oci(), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", &b"hi"[..]).unwrap();
    let layer = put(&tar.into_inner().unwrap());
    let config = put(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        layer.0
    )
    .as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        config.0, config.1, layer.0, layer.1
    );
    let manifest = put(manifest.as_bytes());
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{}"}}}}]}}"#,
            manifest.0, manifest.1, tag
        ),
    )
    .unwrap();
}
