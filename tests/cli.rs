//! The command line as people expect it: completions and a man page from the same
//! definitions, an example in every command's help, usage lines that show required
//! choices, singular and plural forms.

mod common;

use std::process::Command;

use common::envoci::Envoci;
use common::install_env;

const COMMANDS: &[&str] = &[
    "build",
    "lock",
    "blueprint",
    "run",
    "snapshot",
    "ls",
    "inspect",
    "push",
    "pull",
    "copy",
    "export",
    "import",
    "restore",
    "login",
    "logout",
    "check",
    "serve",
    "diff",
    "rm",
    "gc",
];

#[test]
fn completions_parse_and_the_man_page_names_every_command() {
    let t = Envoci::new();
    let bash = t.ok(&["completions", "bash"]).stdout;
    let file = t.dir().join("envoci.bash");
    std::fs::write(&file, &bash).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(checked.success(), "bash -n accepts the completions");
    let text = String::from_utf8(bash).unwrap();
    for command in COMMANDS {
        assert!(text.contains(command), "bash completes `{command}`");
    }
    for shell in ["zsh", "fish"] {
        assert!(!t.ok(&["completions", shell]).stdout.is_empty(), "{shell}");
    }
    let man = String::from_utf8(t.ok(&["man"]).stdout).unwrap();
    assert!(man.contains(".TH envoci 1"), "{man}");
    for command in COMMANDS {
        assert!(man.contains(command), "the man page names `{command}`");
    }
    assert!(!t.home().exists(), "neither opens a store");
}

#[test]
fn every_command_has_an_example_and_restore_shows_its_required_choice() {
    let t = Envoci::new();
    for command in COMMANDS {
        let help = String::from_utf8(t.ok(&[command, "--help"]).stdout).unwrap();
        assert!(
            help.contains("Example:"),
            "`{command} --help` has an example:\n{help}"
        );
    }
    let help = String::from_utf8(t.ok(&["restore", "--help"]).stdout).unwrap();
    assert!(help.contains("<--target <DIR>|--space <NAME>>"), "{help}");
    assert!(help.contains("With a conda.yaml:"), "{help}");
    let err = t.fail_as(2, &["restore", "x"]);
    assert!(err.contains("--target <DIR>|--space <NAME>"), "{err}");
}

#[test]
fn one_of_a_thing_is_singular() {
    let t = Envoci::new();
    let prefix = t.dir().join("env");
    install_env(&prefix, &["links"]);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let out = String::from_utf8(t.ok(&["check"]).stdout).unwrap();
    assert!(out.starts_with("checked 1 tag, "), "{out}");
    assert!(out.contains(", 0 spaces:"), "{out}");
}

/// Runs `envoci ARGS` for `t` under a pseudo-terminal (`script`), returning what the
/// terminal showed.
fn on_a_terminal(t: &Envoci, args: &[&str]) -> String {
    let exe = env!("CARGO_BIN_EXE_envoci");
    let line = std::iter::once(exe)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("ENVOCI_HOME", t.home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let registry = common::registry::TestRegistry::start();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, common::ENV_ONE);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = registry.reference("envs/progress:v1");
    builder.ok(&["push", "x", &remote]);

    let tty = Envoci::new();
    let target = tty.dir().join("env");
    let shown = on_a_terminal(
        &tty,
        &["restore", &remote, "--target", target.to_str().unwrap()],
    );
    assert!(
        shown.contains("pulling") && shown.contains("restoring"),
        "{shown}"
    );
    assert!(
        shown.contains("files") && shown.contains("created"),
        "{shown}"
    );

    let quiet = Envoci::new();
    let target = quiet.dir().join("env");
    let shown = on_a_terminal(
        &quiet,
        &[
            "-q",
            "restore",
            &remote,
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(
        !shown.contains("pulling") && shown.contains("created"),
        "{shown}"
    );

    let pushed = on_a_terminal(
        &builder,
        &["push", "x", &registry.reference("envs/progress-two:v1")],
    );
    assert!(
        pushed.contains("pushing") && pushed.contains("pushed"),
        "{pushed}"
    );

    let archive = builder.dir().join("x.tar");
    let exported = on_a_terminal(&builder, &["export", "x", "-o", archive.to_str().unwrap()]);
    assert!(
        exported.contains("exporting") && exported.contains("wrote"),
        "{exported}"
    );
    let site = Envoci::new();
    let imported = on_a_terminal(&site, &["import", archive.to_str().unwrap()]);
    assert!(
        imported.contains("importing") && imported.contains("imported"),
        "{imported}"
    );

    let piped = Envoci::new();
    let target = piped.dir().join("env");
    let out = piped.run(&["restore", &remote, "--target", target.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing extra when not a terminal"
    );
}
