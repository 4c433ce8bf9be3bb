//! The binary is a NATS micro service and stops cleanly on SIGTERM.

#[tokio::test]
async fn answers_ping_and_info_and_exits_zero_on_sigterm() {
    let seen = shoal_testkit::micro::check_lifecycle(
        "shoal-announcer",
        "shoal-announcer",
        &["--node-id".to_string(), "lifecycle-node".to_string()],
    )
    .await
    .unwrap();
    assert_eq!(seen.info["version"], env!("CARGO_PKG_VERSION"));
    println!("shoal-announcer stopped {:?} after SIGTERM", seen.stop_time);
}

#[tokio::test]
async fn an_invalid_node_id_stops_the_announcer_with_the_id_rule() {
    let nats = shoal_testkit::NatsServer::start().await.unwrap();
    let mut node = shoal_testkit::ServiceProcess::spawn(
        "announcer-bad-id",
        &shoal_testkit::binary("shoal-announcer").unwrap(),
        &["--node-id".to_string(), "node@1".to_string()],
        &[("SHOAL_NATS_URL".to_string(), nats.url())],
    )
    .unwrap();
    let status = node
        .wait_exit(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!status.success(), "{status}");
    let log = node.log();
    assert!(
        log.contains("\"node@1\" may hold only ASCII letters, digits, '-' and '_'"),
        "{log}"
    );
}
