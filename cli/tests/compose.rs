//! The compose stack, checked without a Docker engine: the YAML parses, every
//! service can be built or pulled and is health-checked where others wait on it,
//! every `SHOAL_…` variable set for a Shoal service is one that service reads
//! (from the binaries' own `--help`), and the URLs, users, passwords and subjects
//! agree with the NATS configs in compose/nats/ — which a real nats-server accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_yaml::Value;
use shoal_testkit::{binary, nats_server_binary};

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The compose file with `<<` merge keys applied, as docker compose sees it.
fn compose() -> Result<Value> {
    let text = read(&compose_dir().join("docker-compose.yml"))?;
    let mut value: Value = serde_yaml::from_str(&text).context("docker-compose.yml is not YAML")?;
    value.apply_merge()?;
    Ok(value)
}

/// `compose/.env`: what `${VAR}` interpolates to.
fn dotenv() -> Result<BTreeMap<String, String>> {
    shoal_testkit::compose::dotenv(&compose_dir().join(".env"))
}

/// Replaces `${VAR}`, `${VAR:?msg}`, `${VAR:-default}` as compose does; fails on a
/// variable `.env` does not define.
fn interpolate(s: &str, env: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .with_context(|| format!("unclosed ${{ in {s:?}"))?;
        let inner = &rest[start + 2..start + end];
        let name = inner.split([':', '-', '?']).next().unwrap_or_default();
        match env.get(name) {
            Some(v) => out.push_str(v),
            None => bail!("{s:?} uses ${{{name}}}, which compose/.env does not define"),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable a `${VAR…}` value names.
fn var_name(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    inner.split([':', '-', '?']).next()
}

fn str_list(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let Some(map) = service["environment"].as_mapping() else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.as_str()?.to_string(), value))
        })
        .collect()
}

/// The `SHOAL_…` variables a binary reads, from its `--help` (`[env: SHOAL_X]`).
fn env_vars_read_by(bin: &str) -> Result<BTreeSet<String>> {
    let path = binary(bin)?;
    let out = std::process::Command::new(&path)
        .arg("--help")
        .env_clear()
        .output()
        .with_context(|| format!("running {} --help", path.display()))?;
    if !out.status.success() {
        bail!(
            "{bin} --help failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|v| v.starts_with("SHOAL_"))
        .collect();
    if vars.len() < 5 {
        bail!("{bin} --help lists only {vars:?}:\n{help}");
    }
    Ok(vars)
}

/// Users of auth.conf: name → (password variable, the text of its block).
fn auth_users(auth: &str) -> BTreeMap<String, (String, String)> {
    let mut users = BTreeMap::new();
    let blocks: Vec<&str> = auth.split("user: \"").skip(1).collect();
    for block in blocks {
        let Some((name, body)) = block.split_once('"') else {
            continue;
        };
        let password = body
            .split_once("password: $")
            .map(|(_, rest)| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .unwrap_or_default();
        users.insert(name.to_string(), (password, body.to_string()));
    }
    users
}

/// passwords.conf: variable → the environment variable it reads.
fn password_vars(passwords: &str) -> BTreeMap<String, String> {
    passwords
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| {
            Some((
                k.trim().to_string(),
                v.trim().strip_prefix('$')?.to_string(),
            ))
        })
        .collect()
}

/// Every double-quoted subject of auth.conf's permission lists (not includes or
/// user names).
fn quoted_subjects(conf: &str) -> Vec<String> {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.starts_with("include") && !l.starts_with("user:"))
        .flat_map(|l| {
            l.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|s| s.contains('.') && !s.contains(' ') && !s.contains('/') && !s.contains(':'))
        .collect()
}

/// host:port of a `scheme://[user[:pw]@]host:port[/…]` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// `listen: "0.0.0.0:4222"`-style port of a key in server.conf.
fn conf_port(conf: &str, key: &str) -> Option<u16> {
    conf.lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{key}:")))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().trim_matches('"').parse().ok())
}

const SHOAL_BINARIES: [&str; 6] = [
    "shoal-registry",
    "shoal-balancer",
    "shoal-coordinator",
    "shoal-announcer",
    "shoal-gateway",
    "shoal",
];

#[test]
fn compose_stack_is_consistent() -> Result<()> {
    let compose = compose()?;
    let env = dotenv()?;
    let nats_dir = compose_dir().join("nats");
    let server_conf = read(&nats_dir.join("server.conf"))?;
    let auth = read(&nats_dir.join("auth.conf"))?;
    let passwords = password_vars(&read(&nats_dir.join("passwords.conf"))?);
    let users = auth_users(&auth);
    let services = compose["services"]
        .as_mapping()
        .context("no services in docker-compose.yml")?;
    let client_port = conf_port(&server_conf, "listen").context("server.conf listen")?;
    let monitor_port = conf_port(&server_conf, "http").context("server.conf http")?;

    let mut nats_services = BTreeSet::new();
    let mut postgres_services = BTreeSet::new();
    let mut shoal_services = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().context("service name")?.to_string();
        let image = service["image"].as_str().unwrap_or_default();
        let build = &service["build"];
        assert!(
            !image.is_empty() || !build.is_null(),
            "{name} has neither an image nor a build"
        );
        if let Some(dockerfile) = build["dockerfile"].as_str() {
            let context = compose_dir().join(build["context"].as_str().unwrap_or("."));
            assert!(
                context.join(dockerfile).is_file(),
                "{name}: {dockerfile} not found in its build context"
            );
        }
        if image.starts_with("nats:") {
            nats_services.insert(name);
        } else if image.starts_with("postgres:") {
            postgres_services.insert(name);
        } else {
            let argv = {
                let entry = str_list(&service["entrypoint"]);
                if entry.is_empty() {
                    str_list(&service["command"])
                } else {
                    entry
                }
            };
            let bin = argv.first().cloned().unwrap_or_default();
            assert!(
                SHOAL_BINARIES.contains(&bin.as_str()),
                "{name} runs {bin:?}, not a Shoal binary"
            );
            shoal_services.insert(name, (bin, service.clone()));
        }
    }
    assert_eq!(nats_services.len(), 3, "a 3-server NATS cluster");
    assert_eq!(postgres_services.len(), 1);
    let healthy = |svc: &str| !services[svc]["healthcheck"]["test"].is_null();

    // NATS: the configs mounted, the JetStream health check on the monitoring port,
    // a distinct server name, every password the configs read.
    let mut server_names = BTreeSet::new();
    for name in &nats_services {
        let svc = &services[name.as_str()];
        let test = str_list(&svc["healthcheck"]["test"]).join(" ");
        assert!(
            test.contains(&format!(
                "127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"
            )),
            "{name} healthcheck: {test}"
        );
        let command = str_list(&svc["command"]).join(" ");
        let mounts = str_list(&svc["volumes"]);
        let conf_mount = mounts
            .iter()
            .find(|m| m.starts_with("./nats:"))
            .with_context(|| format!("{name} does not mount ./nats"))?;
        let target = conf_mount.split(':').nth(1).unwrap_or_default();
        assert!(
            command.contains(&format!("{target}/server.conf")),
            "{name} does not run {target}/server.conf: {command}"
        );
        let nenv = environment(svc);
        server_names.insert(nenv.get("SERVER_NAME").cloned().unwrap_or_default());
        for env_var in passwords.values() {
            assert!(nenv.contains_key(env_var), "{name} lacks {env_var}");
        }
    }
    assert_eq!(server_names.len(), 3, "server names must differ");
    for name in &nats_services {
        assert!(
            server_conf.contains(&format!("nats-route://{name}:")),
            "server.conf has no route to {name}"
        );
    }

    // Postgres: checked over TCP (see the comment in the compose file).
    let pg_name = postgres_services.iter().next().context("postgres")?;
    let pg = &services[pg_name.as_str()];
    let pg_test = str_list(&pg["healthcheck"]["test"]).join(" ");
    assert!(
        pg_test.contains("pg_isready") && pg_test.contains("-h 127.0.0.1"),
        "postgres healthcheck: {pg_test}"
    );
    let pg_env = environment(pg);

    // Shoal services.
    let prefix = {
        let prefixes: BTreeSet<String> = shoal_services
            .values()
            .map(|(_, s)| {
                environment(s)
                    .get("SHOAL_PREFIX")
                    .cloned()
                    .unwrap_or_else(|| "shoal".into())
            })
            .collect();
        assert_eq!(
            prefixes.len(),
            1,
            "one subject prefix for all: {prefixes:?}"
        );
        prefixes.into_iter().next().unwrap_or_default()
    };
    let mut reads = BTreeMap::new();
    let mut instance_ids = BTreeSet::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for (name, (bin, svc)) in &shoal_services {
        if !reads.contains_key(bin) {
            reads.insert(bin.clone(), env_vars_read_by(bin)?);
        }
        let known = &reads[bin];
        let senv = environment(svc);
        *kinds.entry(bin.clone()).or_default() += 1;
        for key in senv.keys() {
            assert!(
                known.contains(key),
                "{name} sets {key}, which {bin} does not read (it reads {known:?})"
            );
        }
        if let Some(id) = senv.get("SHOAL_INSTANCE_ID") {
            assert!(
                instance_ids.insert((bin.clone(), id.clone())),
                "two {bin} share the instance id {id}"
            );
        }

        // Every Shoal process waits for a healthy NATS cluster, and for Postgres if it
        // uses it; whatever it waits on has a health check.
        let depends = svc["depends_on"].as_mapping();
        for nats in &nats_services {
            let cond = depends
                .and_then(|d| d.get(nats.as_str()))
                .map(|d| d["condition"].as_str().unwrap_or_default());
            assert_eq!(
                cond,
                Some("service_healthy"),
                "{name} must wait for {nats} to be healthy"
            );
        }
        if let Some(d) = depends {
            for (dep, cond) in d {
                let dep = dep.as_str().unwrap_or_default();
                assert!(
                    services.contains_key(dep),
                    "{name} depends on unknown {dep}"
                );
                if cond["condition"].as_str() == Some("service_healthy") {
                    assert!(
                        healthy(dep),
                        "{name} waits for {dep}, which has no healthcheck"
                    );
                }
            }
        }

        // NATS URLs name this file's NATS servers on their client port.
        let urls = senv
            .get("SHOAL_NATS_URL")
            .with_context(|| format!("{name} has no SHOAL_NATS_URL"))?;
        let hosts: BTreeSet<String> = urls
            .split(',')
            .map(|u| {
                let (host, port) = host_port(u.trim()).unwrap_or_default();
                assert_eq!(port, client_port, "{name}: {u} is not the NATS client port");
                host
            })
            .collect();
        assert_eq!(hosts, nats_services, "{name} should know every NATS server");

        if known.contains("SHOAL_KV_REPLICAS") {
            assert_eq!(
                senv.get("SHOAL_KV_REPLICAS").map(String::as_str),
                Some("3"),
                "{name}: KV replicas must match the 3 NATS servers"
            );
        }

        if let Some(db) = senv.get("SHOAL_DATABASE_URL") {
            let db = interpolate(db, &env)?;
            let (host, port) = host_port(&db).context("database url")?;
            assert_eq!(&host, pg_name);
            assert_eq!(port, 5432);
            let user = pg_env.get("POSTGRES_USER").context("POSTGRES_USER")?;
            let password = interpolate(pg_env.get("POSTGRES_PASSWORD").context("pw")?, &env)?;
            let database = pg_env.get("POSTGRES_DB").context("POSTGRES_DB")?;
            assert!(
                db.contains(&format!("://{user}:{password}@"))
                    && db.ends_with(&format!("/{database}")),
                "{name}: {db} does not match the postgres service"
            );
            let cond = depends
                .and_then(|d| d.get(pg_name.as_str()))
                .map(|d| d["condition"].as_str().unwrap_or_default());
            assert_eq!(
                cond,
                Some("service_healthy"),
                "{name} must wait for postgres"
            );
        }

        // Users and passwords line up with auth.conf and passwords.conf.
        for (user_key, password_key) in [
            ("SHOAL_NATS_USER", "SHOAL_NATS_PASSWORD"),
            ("SHOAL_SYS_NATS_USER", "SHOAL_SYS_NATS_PASSWORD"),
        ] {
            let Some(user) = senv.get(user_key) else {
                continue;
            };
            let (conf_var, _) = users
                .get(user)
                .with_context(|| format!("{name}: user {user} is not in auth.conf"))?;
            let env_var = passwords
                .get(conf_var)
                .with_context(|| format!("passwords.conf does not define {conf_var}"))?;
            let given = senv
                .get(password_key)
                .map(String::as_str)
                .unwrap_or_default();
            assert_eq!(
                var_name(given),
                Some(env_var.as_str()),
                "{name}: {password_key} must be ${{{env_var}}}, as nats reads it for {user}"
            );
            interpolate(given, &env)?;
        }

        // A node's user is named after the node and confined to its subjects.
        if bin == "shoal-announcer" {
            let id = senv
                .get("SHOAL_NODE_ID")
                .with_context(|| format!("{name}: SHOAL_NODE_ID"))?;
            assert_eq!(senv.get("SHOAL_NATS_USER"), Some(id), "{name}");
            let (_, block) = &users[id];
            for subject in [
                format!("{prefix}.node.{id}.>"),
                format!("{prefix}.node.{id}.agents"),
            ] {
                assert!(
                    block.contains(&format!("\"{subject}\"")),
                    "auth.conf: {id} lacks {subject}"
                );
            }
        }
    }
    assert_eq!(kinds.get("shoal-registry"), Some(&1));
    assert_eq!(kinds.get("shoal-balancer"), Some(&1));
    assert_eq!(kinds.get("shoal-coordinator"), Some(&2));
    assert_eq!(kinds.get("shoal-announcer"), Some(&3));
    assert_eq!(kinds.get("shoal-gateway"), Some(&1));

    // auth.conf is written for the prefix the services use.
    let subjects = quoted_subjects(&auth);
    assert!(subjects.len() > 40, "{subjects:?}");
    for s in &subjects {
        assert!(
            s.starts_with('$') || s.starts_with("_INBOX.") || s.starts_with(&format!("{prefix}.")),
            "auth.conf subject {s:?} is not under the prefix {prefix:?}"
        );
    }

    // The image builds every binary the stack runs.
    let dockerfile = read(&compose_dir().join("Dockerfile"))?;
    assert!(
        dockerfile.matches("\nFROM ").count() >= 2,
        "a multi-stage build"
    );
    for bin in kinds.keys() {
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "the image lacks {bin}"
        );
    }
    Ok(())
}

/// The compose nats-server config, as each container runs it (same environment),
/// passes nats-server's own check: includes, variables and permissions parse.
#[test]
fn compose_nats_config_is_valid() -> Result<()> {
    let env = dotenv()?;
    let compose = compose()?;
    let nats = &compose["services"]["nats-1"];
    let mut cmd = std::process::Command::new(nats_server_binary()?);
    cmd.arg("-t")
        .arg("-c")
        .arg(compose_dir().join("nats/server.conf"))
        .env_clear();
    for (k, v) in environment(nats) {
        cmd.env(k, interpolate(&v, &env)?);
    }
    let out = cmd.output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "nats-server -t: {said}");
    assert!(said.contains("is valid"), "{said}");

    // Without its passwords the server refuses to start rather than run open.
    let out = std::process::Command::new(nats_server_binary()?)
        .arg("-t")
        .arg("-c")
        .arg(compose_dir().join("nats/server.conf"))
        .env_clear()
        .env("SERVER_NAME", "nats-1")
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can not be found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
