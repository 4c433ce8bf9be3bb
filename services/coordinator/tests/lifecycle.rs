//! The binary is a NATS micro service and stops cleanly on SIGTERM.

#[tokio::test]
async fn answers_ping_and_info_and_exits_zero_on_sigterm() {
    let seen = shoal_testkit::micro::check_lifecycle("shoal-coordinator", "shoal-coordinator", &[])
        .await
        .unwrap();
    assert_eq!(seen.info["version"], env!("CARGO_PKG_VERSION"));
    println!(
        "shoal-coordinator stopped {:?} after SIGTERM",
        seen.stop_time
    );
}
