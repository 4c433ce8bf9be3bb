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
}
