//! With system-account credentials a follower hears from NATS itself that the
//! leader's connection closed, and takes over at once.

mod common;

use std::time::Instant;

use common::*;
use shoal_testkit::{NatsOptions, NatsServer};

/// An application account with JetStream, and the system account whose users see
/// connection advisories.
const ACCOUNTS: &str = r#"
accounts {
  SYS { users = [ { user: sys, password: sys } ] }
  APP { jetstream: enabled, users = [ { user: app, password: app } ] }
}
system_account: SYS
"#;

const CREDENTIALS: &[(&str, &str)] = &[
    ("SHOAL_NATS_USER", "app"),
    ("SHOAL_NATS_PASSWORD", "app"),
    ("SHOAL_SYS_NATS_USER", "sys"),
    ("SHOAL_SYS_NATS_PASSWORD", "sys"),
];

#[tokio::test]
async fn a_follower_told_by_nats_that_the_leader_connection_closed_takes_over() {
    let nats = NatsServer::start_with(NatsOptions {
        extra_config: ACCOUNTS.to_string(),
        ..NatsOptions::default()
    })
    .await
    .unwrap();
    let url = nats.url();
    let mut replicas = vec![
        coordinator(&url, "c1", CREDENTIALS).unwrap(),
        coordinator(&url, "c2", CREDENTIALS).unwrap(),
    ];
    let client = async_nats::ConnectOptions::with_user_and_password("app".into(), "app".into())
        .connect(url.as_str())
        .await
        .unwrap();
    let shoal = shoal(&client);
    let first = wait_leader(&shoal, &["c1", "c2"], LONG).await.unwrap();
    let at = usize::from(first == "c2");
    let mut leader = replicas.remove(at);
    let follower = replicas.pop().unwrap();
    follower
        .process
        .wait_for_log("following nats connection advisories", LONG)
        .await
        .unwrap();
    let killed = Instant::now();
    leader.process.kill().unwrap();
    follower
        .process
        .wait_for_log("the leader's connection closed", LONG)
        .await
        .unwrap();
    let now = wait_leader(&shoal, &[follower.id.as_str()], LONG)
        .await
        .unwrap();
    println!(
        "MEASURED with advisories, {now} leads {:?} after {first} was killed",
        killed.elapsed()
    );
}
