//! Reclaiming disk: `rm` removes tags, `gc` removes exactly what no remaining tag and no
//! space uses (and waits for writers), `--unused-for` drops idle tags, `ls` says what
//! each environment owns and which spaces exist.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::envoci::{exit, Envoci};
use common::registry::TestRegistry;
use common::{ENV_ONE, ENV_TWO};

/// A store with `one` and `two` (sharing most packages) snapshotted into it.
fn two_envs() -> Envoci {
    let t = Envoci::new();
    t.with_env("one", ENV_ONE).with_env("two", ENV_TWO);
    t
}

/// The blob digests (hex) in the store.
fn blobs(home: &Path) -> BTreeSet<String> {
    fs::read_dir(home.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The manifest, config and layer digests (hex) of `tag`.
fn reached(t: &Envoci, tag: &str) -> BTreeSet<String> {
    let inspected = t.json(&["inspect", tag]);
    let manifest = &inspected["manifest"];
    let hex = |v: &serde_json::Value| {
        v.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let mut out: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| hex(&l["digest"]))
        .collect();
    out.insert(hex(&manifest["config"]["digest"]));
    out.insert(hex(&inspected["summary"]["digest"]));
    out
}

fn row<'a>(listing: &'a serde_json::Value, tag: &str) -> &'a serde_json::Value {
    listing
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == tag)
        .unwrap()
}

#[test]
fn gc_after_rm_frees_exactly_what_no_remaining_tag_uses() {
    let t = two_envs();
    let (one, two) = (reached(&t, "one"), reached(&t, "two"));
    let only_one: BTreeSet<String> = one.difference(&two).cloned().collect();
    let listing = t.json(&["ls"]);
    let own_layers: u64 = t.json(&["inspect", "one"])["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !two.contains(l["digest"].as_str().unwrap().trim_start_matches("sha256:")))
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        row(&listing, "one")["exclusive_bytes"].as_u64(),
        Some(own_layers)
    );
    assert!(own_layers > 0 && row(&listing, "one")["shared_bytes"].as_u64().unwrap() > 0);

    t.ok(&["gc"]);
    let before = blobs(t.home());
    assert!(
        before.is_superset(&one) && before.is_superset(&two),
        "gc kept every tag's blobs"
    );

    t.ok(&["rm", "one"]);
    let dry = t.json(&["gc", "--dry-run"]);
    assert_eq!(blobs(t.home()), before, "a dry run removes nothing");
    let done = t.json(&["gc"]);
    let after = blobs(t.home());
    let freed: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(freed, only_one, "exactly the blobs only `one` used");
    assert_eq!(done["removed"]["blob"]["items"], only_one.len());
    assert_eq!(
        dry["bytes_freed"], done["bytes_freed"],
        "the dry run said what gc did"
    );
    assert!(
        done["removed"]["file"]["items"].as_u64().unwrap() > 0,
        "{done}"
    );

    let target = t.dir().join("restored-two");
    t.ok(&["restore", "two", "--target", target.to_str().unwrap()]);
    let check = t.json(&["check", "--verify"]);
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
    assert_eq!(check["leftovers"], serde_json::json!([]), "{check}");
    let again = t.json(&["gc"]);
    assert_eq!(
        again["removed"].get("blob"),
        None,
        "nothing more to free: {again}"
    );
}

#[test]
fn a_space_keeps_its_environment_until_its_directory_is_gone() {
    let t = two_envs();
    let space = t.dir().join("space-one");
    t.ok(&["restore", "one", "--target", space.to_str().unwrap()]);
    let spaces = t.json(&["ls", "--spaces"]);
    assert_eq!(spaces[0]["path"], space.to_str().unwrap());
    assert_eq!(spaces[0]["tags"], serde_json::json!(["one"]));
    assert_eq!(spaces[0]["gone"], false);

    t.ok(&["rm", "one"]);
    t.ok(&["gc"]);
    assert!(blobs(t.home()).is_superset(&reached_by_space(&t, &space)));
    let check = t.json(&["check", "--verify"]);
    assert_eq!(
        check["problems"],
        serde_json::json!([]),
        "the space is whole: {check}"
    );

    fs::remove_dir_all(&space).unwrap();
    let done = t.json(&["gc"]);
    assert_eq!(
        done["forgotten_spaces"],
        serde_json::json!([space.to_str().unwrap()])
    );
    assert!(
        done["removed"]["blob"]["items"].as_u64().unwrap() > 0,
        "{done}"
    );
    assert_eq!(t.json(&["ls", "--spaces"]), serde_json::json!([]));
}

/// The blobs the space's manifest reaches, read from `check`'s point of view: its
/// manifest digest from `ls --spaces` and the blobs that manifest names.
fn reached_by_space(t: &Envoci, space: &Path) -> BTreeSet<String> {
    let spaces = t.json(&["ls", "--spaces"]);
    let entry = spaces
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == space.to_str().unwrap())
        .unwrap();
    let digest = entry["digest"].as_str().unwrap();
    reached(t, digest)
}

/// Moves tag `tag`'s recorded last use `days` into the past (in the store's index).
fn age_tag(home: &Path, tag: &str, days: u64) {
    let path = home.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag {
            let used: u64 = m["annotations"]["io.envoci.last-used"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            m["annotations"]["io.envoci.last-used"] = (used - days * 86_400).to_string().into();
        }
    }
    fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn unused_for_removes_only_tags_idle_for_longer() {
    let t = two_envs();
    age_tag(t.home(), "one", 10);
    age_tag(t.home(), "two", 3);
    let dry = t.json(&["gc", "--unused-for", "7d", "--dry-run"]);
    assert_eq!(dry["tags"], serde_json::json!(["one"]));
    assert!(
        dry["removed"]["blob"]["items"].as_u64().unwrap() > 0,
        "{dry}"
    );
    assert_eq!(
        t.json(&["ls"]).as_array().unwrap().len(),
        2,
        "a dry run keeps the tag"
    );
    let done = t.json(&["gc", "--unused-for", "7d"]);
    assert_eq!(done["tags"], serde_json::json!(["one"]));
    let left: Vec<String> = t
        .json(&["ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["two"]);

    // A restore counts as a use.
    age_tag(t.home(), "two", 30);
    let target = t.dir().join("used");
    t.ok(&["restore", "two", "--target", target.to_str().unwrap()]);
    let kept = t.json(&["gc", "--unused-for", "7d"]);
    assert_eq!(kept["tags"], serde_json::json!([]));

    let err = t.fail_as(exit::USAGE, &["gc", "--unused-for", "soon"]);
    assert!(err.contains("`soon` does not start with a number"), "{err}");
}

#[test]
fn rm_resolves_every_reference_first_and_names_what_it_cannot() {
    let t = two_envs();
    let err = t.fail_as(exit::NOT_FOUND, &["rm", "two", "nothing-here"]);
    assert!(
        err.contains("`nothing-here` is not in the store") && err.contains("envoci ls"),
        "{err}"
    );
    assert_eq!(
        t.json(&["ls"]).as_array().unwrap().len(),
        2,
        "a typo removes nothing"
    );

    let digest = t.digest("two");
    let short = &digest[..19]; // what `ls` prints
    let removed = t.json(&["rm", short]);
    assert_eq!(removed["removed"], serde_json::json!(["two"]));
    let left = t.json(&["ls"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
}

#[test]
fn gc_waits_for_a_pull_and_a_restore_running_at_the_same_time() {
    let registry = TestRegistry::start();
    let builder = two_envs();
    let remote = registry.reference("envs/gc:v1");
    builder.ok(&["push", "one", &remote]);
    // A layer of `one` that `two` lacks: the pull has to download it.
    let two_has = reached(&builder, "two");
    let layer = builder.json(&["inspect", "one"])["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .find(|d| !two_has.contains(d.trim_start_matches("sha256:")))
        .unwrap();
    // The pull's first layer takes two seconds: gc starts while it runs.
    let slow = common::proxy::Proxy::start(
        &registry.addr,
        common::proxy::Fault::Delay(std::time::Duration::from_secs(2)),
        &layer,
    );
    let t = Envoci::new();
    t.with_env("two", ENV_TWO);
    let target = t.dir().join("space");
    let pull = t
        .cmd(&["pull", &slow.via(&remote)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let restore = t
        .cmd(&["restore", "two", "--target", target.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let gc = t.json(&["gc"]);
    let (pull, restore) = (
        pull.wait_with_output().unwrap(),
        restore.wait_with_output().unwrap(),
    );
    assert!(pull.status.success() && restore.status.success());
    assert!(slow.fired());
    assert_eq!(gc["waited"], true, "{gc}");
    let check = t.json(&["check", "--verify"]);
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
    let pulled = slow.via(&remote);
    let again = t.dir().join("pulled");
    t.ok(&[
        "restore",
        &pulled,
        "--target",
        again.to_str().unwrap(),
        "--offline",
    ]);
}
