//! `envoci diff`: packages added, removed and changed, layers shared, and the bytes a
//! machine holding the first environment downloads for the second — checked against
//! what a pull then really moves; on store names, registry references and archives.

mod common;

use common::envoci::{exit, Envoci};
use common::registry::TestRegistry;
use common::{ENV_ONE, ENV_TWO};

#[test]
fn diff_says_what_changed_and_what_a_pull_will_move() {
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    for (tag, packages) in [("one", ENV_ONE), ("two", ENV_TWO)] {
        builder.with_env(tag, packages);
        builder.ok(&["push", tag, &registry.reference(&format!("envs/app:{tag}"))]);
    }
    let (one, two) = (
        registry.reference("envs/app:one"),
        registry.reference("envs/app:two"),
    );

    let local = builder.json(&["diff", "one", "two"]);
    let names = |key: &str| -> Vec<String> {
        local[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("added"), ["app-two", "pad-4"]);
    assert_eq!(names("removed"), ["app-one", "pad-3"]);
    assert_eq!(local["changed"], serde_json::json!([]));
    assert!(local["layers_shared"].as_u64().unwrap() > 0, "{local}");

    // From the registry, no layer is downloaded: the user's store stays empty.
    let user = Envoci::new();
    let remote = user.json(&["diff", &one, &two]);
    assert_eq!(remote["bytes_to_pull"], local["bytes_to_pull"]);
    assert_eq!(user.json(&["ls"]), serde_json::json!([]));

    // What a machine holding `one` downloads for `two` is what the pull moves.
    user.ok(&["pull", &one]);
    let pulled = user.json(&["pull", &two]);
    assert_eq!(
        pulled["bytes_transferred"], remote["bytes_to_pull"],
        "{pulled} {remote}"
    );
    assert_eq!(pulled["blobs_transferred"], remote["blobs_to_pull"]);

    // An archive on one side.
    let archive = builder.dir().join("two.tar");
    builder.ok(&["export", "two", "-o", archive.to_str().unwrap()]);
    let mixed = user.json(&["diff", &one, &format!("oci-archive:{}", archive.display())]);
    assert_eq!(mixed["b"]["digest"], local["b"]["digest"]);
    assert_eq!(mixed["bytes_to_pull"], local["bytes_to_pull"]);

    let err = builder.fail_as(exit::NOT_FOUND, &["diff", "one", "nothing-here"]);
    assert!(err.contains("nothing-here"), "{err}");
}
