//! Schemathesis (property-based API testing, from PyPI; `scripts/deps.sh` installs
//! it under `.shoal/tools/`) against the live gateway's `/api/openapi.json`, with
//! every check: no server error, every status, content type, header and body as
//! documented, schema-valid requests accepted and schema-violating ones refused.
//! The event stream is left out (it never ends).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::Stack;
use reqwest::Method;
use serde_json::json;

/// Test cases per operation: enough to reach every route's corners, few enough to
/// finish well within a minute on two cores.
const EXAMPLES: &str = "10";
const RUN_DEADLINE: Duration = Duration::from_secs(150);

/// `SHOAL_SCHEMATHESIS`, or the workspace's `.shoal/tools/schemathesis`.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOAL_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.shoal/tools/schemathesis"
    ));
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run scripts/deps.sh (or set SHOAL_SCHEMATHESIS)",
        path.display()
    );
    path
}

#[tokio::test]
async fn schemathesis_finds_nothing_against_the_live_gateway() {
    let bin = schemathesis();
    let stack = Stack::start().await.unwrap();
    // Nodes to place agents on, so assignments can succeed as well as fail.
    for id in ["node-a", "node-b"] {
        stack
            .ok(
                Method::POST,
                "/api/cluster/nodes",
                Some(&json!({ "id": id, "hostname": id, "max_agents": 1000 })),
            )
            .await
            .unwrap();
    }
    // Hypothesis keeps its example database in the working directory.
    let scratch = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(&bin)
        .current_dir(scratch.path())
        .args(["--no-color", "run"])
        .arg(stack.url("/api/openapi.json"))
        .args([
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--exclude-path",
            "/api/cluster/events",
            // One worker: with two threads, CPython 3.11's ast module races
            // ("AST constructor recursion depth mismatch") while
            // schemathesis compiles the assign body's schema.
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It tested every operation but the event stream and the document itself
    // (which it reads rather than tests).
    let operations = shoal_gateway::routes::table().len() - 2;
    assert!(
        stdout.contains(&format!("Tested: {operations}\n")),
        "schemathesis did not test all {operations} operations:\n{stdout}"
    );
    eprintln!(
        "{}",
        stdout.lines().rev().take(4).collect::<Vec<_>>().join("\n")
    );
}
