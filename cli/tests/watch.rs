//! `shoal watch` as a user meets it when NATS goes away: it says at once that it is
//! disconnected (no stale node table) and Ctrl-C still ends it.

use std::time::{Duration, Instant};

use shoal_testkit::{NatsServer, ServiceProcess, binary};

const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn watch_shows_a_lost_connection_and_ends_on_ctrl_c() {
    let mut nats = NatsServer::start().await.unwrap();
    let mut watch = ServiceProcess::spawn(
        "watch",
        &binary("shoal").unwrap(),
        &["--nats-url".into(), nats.url(), "watch".into()],
        &[],
    )
    .unwrap();
    // Nothing serves yet: the screen says so, and keeps being drawn.
    watch
        .wait_for_log("leader: unknown", DEADLINE)
        .await
        .unwrap();
    nats.kill().unwrap();
    let lost = Instant::now();
    watch
        .wait_for_log("DISCONNECTED from NATS", DEADLINE)
        .await
        .unwrap();
    let noticed = lost.elapsed();
    watch.interrupt().unwrap();
    let asked = Instant::now();
    let status = watch.wait_exit(Duration::from_secs(2)).await.unwrap();
    assert!(status.success(), "{status}");
    println!(
        "MEASURED watch showed the lost connection after {noticed:?} and ended {:?} after Ctrl-C",
        asked.elapsed()
    );
}

/// `shoal watch` in a terminal, as a person runs it: the screen is cleared and
/// drawn in place with the leader, the nodes and recent events, and Ctrl-C typed
/// at the keyboard (the terminal's interrupt character, not a signal sent by pid)
/// ends it with success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_in_a_terminal_draws_its_screen_and_ends_on_ctrl_c() {
    let nats = NatsServer::start().await.unwrap();
    let url = nats.url();
    let shoal = binary("shoal").unwrap();
    let ended = tokio::task::spawn_blocking(move || {
        use expectrl::{ControlCode, Expect};
        let mut cmd = std::process::Command::new(shoal);
        cmd.args(["--nats-url", &url, "watch"]);
        let mut term = expectrl::Session::spawn(cmd).unwrap();
        term.set_expect_timeout(Some(DEADLINE));
        // Nothing serves: the screen says so, drawn in place (cleared, cursor home).
        term.expect("\x1b[2J\x1b[H").unwrap();
        term.expect("leader: unknown").unwrap();
        term.expect("nodes unavailable").unwrap();
        term.expect("recent events").unwrap();
        let typed = Instant::now();
        term.send(ControlCode::EndOfText).unwrap();
        term.expect(expectrl::Eof).unwrap();
        let status = term.get_process().wait().unwrap();
        (status, typed.elapsed())
    })
    .await
    .unwrap();
    let (status, took) = ended;
    assert!(
        matches!(status, expectrl::process::unix::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    println!("MEASURED watch in a terminal ended {took:?} after Ctrl-C");
}

/// `shoal --json watch`: JSON lines, no screen codes. Each second a snapshot
/// (here with nothing serving: connected, every part `null` with its error code).
#[tokio::test]
async fn watch_with_json_prints_json_lines() {
    let nats = NatsServer::start().await.unwrap();
    let out = tokio::process::Command::new(binary("shoal").unwrap())
        .args([
            "--nats-url",
            &nats.url(),
            "--json",
            "watch",
            "--refreshes",
            "2",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\x1b'),
        "screen codes in --json output: {text:?}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for snapshot in &lines {
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        assert_eq!(snapshot["connected"], true, "{snapshot}");
        assert!(snapshot["leader"].is_null(), "{snapshot}");
        assert!(snapshot["errors"]["nodes"].is_string(), "{snapshot}");
    }
}
