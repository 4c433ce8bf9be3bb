//! `--help` as a newcomer reads it: flags that take one of a few names list them,
//! and the commands used most show examples.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn choices_are_listed_and_common_commands_have_examples() {
    let nodes = help(&["nodes"]);
    assert!(
        nodes.contains("[possible values: leader, worker, replica, standby]"),
        "{nodes}"
    );
    assert!(nodes.contains("online, suspect, offline"), "{nodes}");
    let set = help(&["strategy", "set"]);
    assert!(set.contains("least_loaded"), "{set}");
    let orphaned = help(&["assignments"]);
    assert!(orphaned.contains("orphaned"), "{orphaned}");
    for command in [
        "up",
        "logs",
        "watch",
        "nodes",
        "drain",
        "promote",
        "assign",
        "move",
        "assignments",
        "history",
        "strategy",
    ] {
        let text = help(&[command]);
        assert!(
            text.contains(&format!("Examples:\n  shoal {command}")),
            "{command}:\n{text}"
        );
    }
    // A wrong name is refused with the right ones.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["nodes", "--status", "bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("possible values: online"), "{err}");
    // Group rules need a group.
    for rule in [&["--spread-by", "zone"][..], &["--anti-affinity"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["assign", "web-1"])
            .args(rule)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--group <GROUP>"), "{err}");
    }
}

/// Completions and man pages come from the same definitions as `--help`.
#[test]
fn completions_and_man_pages_are_generated() {
    let bash = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success(), "{bash:?}");
    let script = String::from_utf8(bash.stdout).unwrap();
    assert!(script.contains("complete -F _shoal"), "{script}");
    assert!(
        script.contains("least_agents"),
        "strategy names are completed"
    );
    let dir = tempfile::tempdir().unwrap();
    let man = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(man.status.success(), "{man:?}");
    let page = std::fs::read_to_string(dir.path().join("shoal-assign.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH shoal-assign"),
        "{page}"
    );
    assert!(
        page.contains("shoal assign agent\\-1"),
        "examples are in the page: {page}"
    );
    assert!(dir.path().join("shoal.1").is_file());
}

/// Output into a pipe whose reader has gone (`shoal completions bash | head -1`)
/// ends the command quietly with success: no panic, no error.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["completions".to_string(), "bash".to_string()],
        vec!["man".to_string(), dir.path().display().to_string()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
