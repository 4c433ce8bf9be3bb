//! A private Postgres per test, started even when the tests run as root.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shoal_testkit::Postgres;

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn private_postgres_starts_even_as_root() -> Result<()> {
    let started = Instant::now();
    let mut pg = Postgres::start().await?;
    eprintln!("postgres ready in {:?}", started.elapsed());
    if nix::unistd::geteuid().is_root() {
        let postgres = nix::unistd::User::from_name("postgres")?.context("postgres user")?;
        assert_eq!(
            std::fs::metadata(pg.data_dir())?.uid(),
            postgres.uid.as_raw(),
            "data belongs to postgres"
        );
    }

    let a = pg.create_database().await?;
    let b = pg.create_database().await?;
    assert_ne!(a, b);
    let prefix = format!("postgres://postgres@127.0.0.1:{}/", pg.port());
    assert!(a.starts_with(&prefix) && b.starts_with(&prefix), "{a} {b}");

    let db = connect(&a).await?;
    db.batch_execute("CREATE TABLE kept (id int PRIMARY KEY, name text NOT NULL)")
        .await?;
    db.execute("INSERT INTO kept VALUES ($1, $2)", &[&7i32, &"seven"])
        .await?;
    let name: String = db
        .query_one("SELECT name FROM kept WHERE id = 7", &[])
        .await?
        .get(0);
    assert_eq!(name, "seven");
    // The other database is really another database.
    let other = connect(&b).await?;
    assert!(other.query("SELECT * FROM kept", &[]).await.is_err());
    drop((db, other));

    pg.stop().await?;
    assert!(connect(&a).await.is_err(), "nothing listens while stopped");

    let started = Instant::now();
    pg.start_again().await?;
    eprintln!("postgres started again in {:?}", started.elapsed());
    let db = connect(&a).await?;
    let name: String = db
        .query_one("SELECT name FROM kept WHERE id = 7", &[])
        .await?
        .get(0);
    assert_eq!(name, "seven");
    assert!(
        pg.log()
            .contains("database system is ready to accept connections")
    );
    Ok(())
}

/// The SysV shared memory id the running postmaster recorded.
fn shmid(pg: &Postgres) -> Result<String> {
    let pid_file = std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))?;
    let line = pid_file
        .lines()
        .nth(6)
        .context("postmaster.pid has a shared memory line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("key and id")?
        .to_string())
}

fn shm_exists(shmid: &str) -> bool {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .any(|row| row.split_whitespace().nth(1) == Some(shmid))
}

#[tokio::test]
async fn killed_postgres_recovers_and_drop_cleans_up() -> Result<()> {
    let mut pg = Postgres::start().await?;
    let url = pg.create_database().await?;
    let db = connect(&url).await?;
    db.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await?;
    let first_shm = shmid(&pg)?;
    assert!(shm_exists(&first_shm));

    // A crash takes the backends down too, so the connection breaks; the
    // shared memory it leaves is removed rather than leaked.
    pg.kill()?;
    assert!(db.simple_query("SELECT 1").await.is_err());
    assert!(
        !shm_exists(&first_shm),
        "segment {first_shm} removed after the kill"
    );
    pg.start_again().await?;
    let db = connect(&url).await?;
    let v: i32 = db.query_one("SELECT v FROM t", &[]).await?.get(0);
    assert_eq!(v, 1, "a committed row survives the crash");

    let data = pg.data_dir();
    let second_shm = shmid(&pg)?;
    assert!(shm_exists(&second_shm));
    drop(db);
    drop(pg);
    assert!(!data.exists(), "temporary directory deleted");
    assert!(
        !shm_exists(&second_shm),
        "segment {second_shm} removed on drop"
    );
    let reconnect = tokio::time::timeout(Duration::from_secs(2), connect(&url)).await;
    assert!(
        reconnect.is_err() || reconnect.is_ok_and(|r| r.is_err()),
        "nothing listens after drop"
    );
    Ok(())
}
