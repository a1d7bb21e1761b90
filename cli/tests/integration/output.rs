//! Output that cannot be written loses nothing: a reader that has gone ends the
//! command quietly, and `alloc` gives back the ports it could not print. The
//! completion scripts and the manual come from the same definitions as the parser.

use std::process::{Command, Stdio};

use crate::helpers::{Outcome, Run, binary, first_ports, registry, registry_json};

/// Runs the binary with its stdout a pipe whose reader has already gone.
fn into_closed_pipe(dir: &std::path::Path, args: &[&str]) -> Outcome {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = Command::new(binary())
        .env("PORTLEASE_DIR", dir)
        .env_remove("RUST_BACKTRACE")
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("the binary runs");
    Outcome(output)
}

#[test]
fn alloc_into_a_pipe_whose_reader_has_gone_leaves_no_lease() {
    let (dir, _allocator) = registry();
    let range = first_ports(106, 40);
    let range = format!("{}-{}", range.start(), range.end());
    let outcome = into_closed_pipe(dir.path(), &["alloc", "--count", "30", "--range", &range]);
    assert_ne!(outcome.code(), 0, "the ports were not handed to anyone");
    assert!(
        !outcome.stderr().contains("panicked"),
        "{}",
        outcome.stderr()
    );
    assert!(
        registry_json(dir.path()).is_empty(),
        "the 30 leases were released"
    );
}

#[test]
fn list_and_check_into_a_closed_pipe_end_quietly() {
    let (dir, _allocator) = registry();
    let range = first_ports(106, 45);
    let port = range.end().to_string();
    Run::new(dir.path())
        .args(["alloc", "--range", &format!("{port}-{port}")])
        .run()
        .success();
    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["check", port.as_str()],
        vec!["info"],
    ] {
        let outcome = into_closed_pipe(dir.path(), &args);
        assert_eq!(outcome.stderr(), "", "{args:?} says nothing");
        assert_eq!(outcome.code(), 141, "{args:?} exits as `ls | head` would");
    }
}

#[test]
fn completion_scripts_come_from_the_command_definitions() {
    let (dir, _allocator) = registry();
    let bash = Run::new(dir.path())
        .args(["completions", "bash"])
        .run()
        .success();
    for subcommand in ["alloc", "release", "hand", "completions", "man"] {
        assert!(bash.contains(subcommand), "bash completes {subcommand}");
    }
    assert!(bash.contains("--token") && bash.contains("--lock-timeout"));
    let script = dir.path().join("portlease.bash");
    std::fs::write(&script, &bash).expect("write");
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash runs");
    assert!(checked.success(), "the bash script parses");

    let zsh = Run::new(dir.path())
        .args(["completions", "zsh"])
        .run()
        .success();
    assert!(zsh.starts_with("#compdef portlease"), "{zsh}");
    let fish = Run::new(dir.path())
        .args(["completions", "fish"])
        .run()
        .success();
    assert!(fish.contains("complete -c portlease"), "{fish}");
    assert!(fish.contains("-a \"hand\""), "{fish}");

    Run::new(dir.path())
        .args(["completions", "tcsh"])
        .run()
        .fails(2, "tcsh");
}

#[test]
fn the_manual_comes_from_the_command_definitions() {
    let (dir, _allocator) = registry();
    let page = Run::new(dir.path()).args(["man"]).run().success();
    assert!(page.contains(".TH portlease 1"), "{page}");
    for subcommand in ["alloc", "release", "hand", "completions"] {
        assert!(page.contains(subcommand), "the page lists {subcommand}");
    }
    let alloc = Run::new(dir.path()).args(["man", "alloc"]).run().success();
    assert!(alloc.contains(".TH portlease-alloc 1"), "{alloc}");
    assert!(alloc.contains("\\-\\-count"), "{alloc}");
    Run::new(dir.path())
        .args(["man", "nope"])
        .run()
        .fails(2, "invalid value 'nope'")
        .contains("possible values: alloc, release");
}
