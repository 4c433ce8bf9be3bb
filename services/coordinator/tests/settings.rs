//! A coordinator configured by a settings file alone (`SHOAL_CONFIG`): it reaches
//! the NATS server and takes the instance id the file names; a key that is not a
//! setting stops it with a message naming the key.

mod common;

use std::time::Duration;

use common::*;
use shoal_testkit::{NatsServer, ServiceProcess, binary};

#[tokio::test]
async fn a_settings_file_configures_a_coordinator() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coordinator.toml");
    std::fs::write(
        &file,
        format!(
            "nats-url = \"{}\"\ninstance_id = \"from-file\"\nlease-ttl = \"2s\"\nlog-json = true\n",
            nats.url()
        ),
    )
    .unwrap();
    let env = [("SHOAL_CONFIG".to_string(), file.display().to_string())];
    let bin = binary("shoal-coordinator").unwrap();
    let _c = ServiceProcess::spawn("from-file", &bin, &[], &env).unwrap();
    let client = nats.client().await.unwrap();
    let leader = wait_leader(&shoal(&client), &["from-file"], LONG)
        .await
        .unwrap();
    assert_eq!(leader, "from-file");

    std::fs::write(&file, "nats-urll = \"nats://127.0.0.1:1\"\n").unwrap();
    let mut refused = ServiceProcess::spawn("refused", &bin, &[], &env).unwrap();
    let status = refused.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(!status.success());
    let log = refused.log();
    assert!(
        log.contains("\"nats-urll\"") && log.contains("nats-url"),
        "{log}"
    );
}
