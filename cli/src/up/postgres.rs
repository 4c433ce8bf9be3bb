//! The private Postgres `shoal up` starts: initdb on first use, run as the
//! `postgres` user when root (initdb and postgres refuse root), ready once it answers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::{Running, UpArgs, port_free, spawn, wait_until};
use crate::local::{Kind, Paths, tail};

pub(super) async fn start_postgres(
    args: &UpArgs,
    paths: &Paths,
    running: &mut Vec<Running>,
) -> anyhow::Result<String> {
    if !port_free(args.pg_port) {
        bail!(
            "port {} is in use — is another Postgres or `shoal up` running? try `shoal down` or --pg-port",
            args.pg_port
        );
    }
    let bindir = pg_bindir()?;
    let data = paths.pg_data();
    let run_as = postgres_user()?;
    if !data.join("PG_VERSION").is_file() {
        std::fs::create_dir_all(&data)?;
        chown(&data, run_as)?;
        let log = paths.logs().join("initdb.log");
        let mut cmd = Command::new(bindir.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        as_user(&mut cmd, run_as);
        let out = cmd.output().await.context("running initdb")?;
        std::fs::write(&log, [out.stdout, out.stderr].concat())?;
        if !out.status.success() {
            bail!("initdb failed:\n{}", tail(&log, 20));
        }
    }
    chown(&data, run_as)?;
    let mut cmd = Command::new(bindir.join("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(args.pg_port.to_string())
        .arg("-k")
        .arg(&data);
    cmd.args(["-c", "listen_addresses=127.0.0.1"]);
    as_user(&mut cmd, run_as);
    let base = format!("postgres://postgres@127.0.0.1:{}", args.pg_port);
    let r = spawn(cmd, "postgres", Kind::Postgres, paths, Some(base.clone()))?;
    let log = r.instance.log.clone();
    running.push(r);
    let (isready, port) = (bindir.join("pg_isready"), args.pg_port);
    wait_until("postgres", Duration::from_secs(30), &log, || {
        let isready = isready.clone();
        async move {
            Command::new(isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
    })
    .await?;
    // "already exists" on later runs is fine.
    let _ = Command::new(bindir.join("createdb"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &args.pg_port.to_string(),
            "-U",
            "postgres",
            "shoal",
        ])
        .stderr(Stdio::null())
        .status()
        .await;
    Ok(format!("{base}/shoal"))
}

fn pg_bindir() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output();
    let dir = match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => PathBuf::from("/usr/lib/postgresql/15/bin"),
    };
    if dir.join("postgres").is_file() {
        Ok(dir)
    } else {
        bail!("Postgres server binaries not found — run scripts/deps.sh (or pass --database-url)")
    }
}

/// initdb and postgres refuse to run as root: as root, run them as `postgres`.
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")?.ok_or_else(|| {
        anyhow::anyhow!("running as root needs a `postgres` system user — run scripts/deps.sh")
    })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

fn chown(dir: &Path, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    if let Some((uid, gid)) = user {
        for entry in walk(dir) {
            nix::unistd::chown(&entry, Some(uid.into()), Some(gid.into()))
                .with_context(|| format!("chown {}", entry.display()))?;
        }
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
