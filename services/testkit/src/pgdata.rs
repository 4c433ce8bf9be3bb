//! Postgres data directories: where they live and how to get one quickly.
//!
//! initdb writes about a thousand files. On a disk-backed temp directory that
//! takes around a second, and two at once (nextest runs tests side by side)
//! take three; on tmpfs it takes half a second. So data directories go to
//! `/dev/shm` when it has room, and after the first initdb its result is kept
//! as a template in cargo's target directory and copied (tens of
//! milliseconds) for the next servers.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, chown};
use tempfile::TempDir;

const SHM: &str = "/dev/shm";
/// Below this much free space `/dev/shm` is a container's small default
/// (often 64 MiB), which a few data directories would fill.
const SHM_MIN_FREE: u64 = 2 << 30;
const INITDB_ARGS: [&str; 8] = [
    "-U",
    "postgres",
    "--auth=trust",
    "-E",
    "UTF8",
    "--no-locale",
    "--no-sync",
    "--no-instructions",
];

/// A new temporary directory, on tmpfs when there is room.
pub(crate) fn scratch_dir(prefix: &str) -> Result<TempDir> {
    if shm_has_room()
        && let Ok(dir) = tempfile::Builder::new().prefix(prefix).tempdir_in(SHM)
    {
        return Ok(dir);
    }
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temporary directory")
}

fn shm_has_room() -> bool {
    nix::sys::statvfs::statvfs(SHM).is_ok_and(|stats| {
        stats
            .blocks_available()
            .saturating_mul(stats.fragment_size())
            >= SHM_MIN_FREE
    })
}

/// Fills `data_dir` (which must not exist) with a fresh cluster owned by
/// `run_as`: a copy of the cached template if there is one, else initdb's
/// output, which then becomes the template.
pub(crate) async fn make_data_dir(
    bindir: &Path,
    instance_dir: &Path,
    data_dir: &Path,
    run_as: Option<(Uid, Gid)>,
) -> Result<()> {
    let template = template_path(bindir);
    if let Some(template) = template.clone().filter(|t| t.join("PG_VERSION").is_file()) {
        let target = data_dir.to_path_buf();
        let copied =
            tokio::task::spawn_blocking(move || copy_tree(&template, &target, run_as)).await?;
        match copied {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "could not copy the postgres template, running initdb");
                let _ = fs::remove_dir_all(data_dir);
            }
        }
    }
    initdb(bindir, instance_dir, data_dir, run_as).await?;
    if let Some(template) = template {
        let source = data_dir.to_path_buf();
        let saved = tokio::task::spawn_blocking(move || save_template(&source, &template)).await?;
        if let Err(e) = saved {
            tracing::debug!(error = %e, "could not keep a postgres template");
        }
    }
    Ok(())
}

async fn initdb(
    bindir: &Path,
    instance_dir: &Path,
    data_dir: &Path,
    run_as: Option<(Uid, Gid)>,
) -> Result<()> {
    let mut cmd = tokio::process::Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(INITDB_ARGS)
        .current_dir(instance_dir);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let output = cmd.output().await.context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `<target>/<profile>/shoal-testkit/pg-template-<hash>`, the hash covering
/// what makes a template reusable: the binaries, their version and initdb's
/// arguments. `None` outside cargo's target directory, so nothing is cached
/// anywhere `cargo clean` would not remove.
fn template_path(bindir: &Path) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    let version = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())?
        .stdout;
    let mut hasher = DefaultHasher::new();
    (bindir, version, INITDB_ARGS).hash(&mut hasher);
    let name = format!("pg-template-{:016x}", hasher.finish());
    Some(deps.parent()?.join("shoal-testkit").join(name))
}

/// Copies a freshly made data directory into the cache; losing a race with
/// another test doing the same is fine.
fn save_template(data_dir: &Path, template: &Path) -> Result<()> {
    let parent = template.parent().context("template has a parent")?;
    fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(parent)?;
    let staged = staging.path().join("data");
    copy_tree(data_dir, &staged, None)?;
    // rename is atomic: readers see a complete template or none.
    match fs::rename(&staged, template) {
        Ok(()) => tracing::debug!(template = %template.display(), "kept a postgres template"),
        Err(_) if template.join("PG_VERSION").is_file() => {}
        Err(e) => return Err(e).context("renaming the staged postgres template"),
    }
    Ok(())
}

/// Recursive copy keeping permission bits (postgres insists on 0700/0600),
/// handing everything to `owner` when given.
fn copy_tree(src: &Path, dst: &Path, owner: Option<(Uid, Gid)>) -> Result<()> {
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    fs::set_permissions(dst, fs::metadata(src)?.permissions())?;
    give(dst, owner)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to, owner)?;
        } else if kind.is_file() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            give(&to, owner)?;
        } else {
            bail!("unexpected file type at {}", from.display());
        }
    }
    Ok(())
}

fn give(path: &Path, owner: Option<(Uid, Gid)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {} to postgres", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_keep_structure_and_modes() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        fs::create_dir_all(src.join("base/1")).unwrap();
        fs::write(src.join("PG_VERSION"), "15\n").unwrap();
        fs::write(src.join("base/1/1234"), vec![7u8; 10_000]).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(src.join("PG_VERSION"), fs::Permissions::from_mode(0o600)).unwrap();

        let dst = root.path().join("dst");
        copy_tree(&src, &dst, None).unwrap();
        assert_eq!(fs::read_to_string(dst.join("PG_VERSION")).unwrap(), "15\n");
        assert_eq!(
            fs::read(dst.join("base/1/1234")).unwrap(),
            vec![7u8; 10_000]
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dst), 0o700);
        assert_eq!(mode(&dst.join("PG_VERSION")), 0o600);

        let template = root.path().join("cache/pg-template-x");
        save_template(&dst, &template).unwrap();
        assert!(template.join("base/1/1234").is_file());
        // A second save (another test finishing initdb too) is not an error.
        save_template(&dst, &template).unwrap();
        let leftovers: Vec<_> = fs::read_dir(root.path().join("cache")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging directories left behind");
    }

    #[test]
    fn scratch_dirs_are_created_and_removed() {
        let dir = scratch_dir("shoal-test-").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
