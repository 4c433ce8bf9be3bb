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
