//! Flags the gateway refuses before it connects to anything.

use std::process::Command;

#[test]
fn metrics_listen_is_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-gateway"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        // Nothing listens here: the flag must be refused before any connection.
        .args(["--nats-url", "nats://127.0.0.1:1"])
        .env_remove("SHOAL_CONFIG")
        .output()
        .expect("the gateway binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--metrics-listen 127.0.0.1:0")
            && stderr.contains("GET /metrics on --http-listen"),
        "{stderr}"
    );
}
