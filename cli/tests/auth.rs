//! compose/nats/auth.conf for real: a nats-server started by the testkit includes
//! the very file the compose cluster includes (with test passwords in its
//! passwords.conf), and the whole control plane runs with one user per role —
//! registry (plus its system-account user for disconnect advisories), balancer, two
//! coordinators, three announcers as node-1..3, the CLI as `operator`. Then a node
//! tries what a node must not do, and the server refuses each attempt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::ConnectOptions;
use shoal_protocol::{
    AssignRequest, AssignmentAction, Endpoint, Heartbeat, HistoryRequest, LEADER_BUCKET,
    LEADER_KEY, ListAssignmentsRequest, ListNodesRequest, NodeStatus, ShoalClient, Strategy,
    Subjects,
};
use shoal_testkit::{
    NatsOptions, NatsServer, Postgres, ServerErrors, ServiceProcess, binary, wait_for,
};

/// For things that must happen: generous, the machine may be loaded.
const DEADLINE: Duration = Duration::from_secs(60);

fn compose_nats_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/nats")
}

/// A copy of compose/nats/auth.conf next to a passwords.conf with test passwords,
/// defining every variable the compose passwords.conf defines.
struct AuthFiles {
    dir: tempfile::TempDir,
    passwords: BTreeMap<String, String>,
}

impl AuthFiles {
    fn new() -> Result<AuthFiles> {
        let src = compose_nats_dir();
        let dir = tempfile::Builder::new().prefix("shoal-auth-").tempdir()?;
        std::fs::copy(src.join("auth.conf"), dir.path().join("auth.conf"))
            .context("copying compose/nats/auth.conf")?;
        let compose_passwords = std::fs::read_to_string(src.join("passwords.conf"))?;
        let nonce = format!(
            "{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos()
        );
        let mut passwords = BTreeMap::new();
        let mut conf = String::new();
        for line in compose_passwords.lines() {
            let line = line.trim();
            let Some((name, _)) = line.split_once(':') else {
                continue;
            };
            if line.starts_with('#') || name.trim().is_empty() {
                continue;
            }
            // Quoted and not all digits: NATS would read a bare number as an integer.
            let password = format!("pw-{}-{nonce}", name.trim().to_lowercase());
            conf.push_str(&format!("{}: \"{password}\"\n", name.trim()));
            passwords.insert(name.trim().to_string(), password);
        }
        if passwords.len() < 5 {
            bail!("compose/nats/passwords.conf defines only {passwords:?}");
        }
        std::fs::write(dir.path().join("passwords.conf"), conf)?;
        Ok(AuthFiles { dir, passwords })
    }

    /// The server config line including our auth.conf. nats-server joins an
    /// include path to the including file's directory even when it is absolute,
    /// and clamps `..` at the root: climbing far enough reaches any absolute path.
    fn include_line(&self) -> String {
        let path = self.dir.path().join("auth.conf");
        let from_root = path.to_string_lossy().trim_start_matches('/').to_string();
        format!("include \"{}{from_root}\"", "../".repeat(64))
    }

    /// `node-1` → the value of `NODE_1_PASSWORD`.
    fn password(&self, user: &str) -> String {
        let var = format!("{}_PASSWORD", user.to_uppercase().replace('-', "_"));
        self.passwords
            .get(&var)
            .unwrap_or_else(|| panic!("passwords.conf defines no {var}"))
            .clone()
    }
}

async fn connect(
    url: &str,
    auth: &AuthFiles,
    user: &str,
) -> Result<(async_nats::Client, ServerErrors)> {
    let errors = ServerErrors::default();
    let options = ConnectOptions::with_user_and_password(user.to_string(), auth.password(user))
        .name(format!("auth-test:{user}"));
    let client = errors
        .collect(options)
        .connect(url)
        .await
        .with_context(|| format!("connecting as {user}"))?;
    Ok((client, errors))
}

fn env(url: &str, auth: &AuthFiles, user: &str, instance: &str) -> Vec<(String, String)> {
    vec![
        ("SHOAL_NATS_URL".into(), url.into()),
        ("SHOAL_NATS_USER".into(), user.into()),
        ("SHOAL_NATS_PASSWORD".into(), auth.password(user)),
        ("SHOAL_INSTANCE_ID".into(), instance.into()),
        ("SHOAL_LOG_LEVEL".into(), "info".into()),
    ]
}

struct Plane {
    _registry: ServiceProcess,
    _balancer: ServiceProcess,
    coordinators: Vec<ServiceProcess>,
    nodes: BTreeMap<String, ServiceProcess>,
}

async fn start_plane(url: &str, auth: &AuthFiles, database_url: &str) -> Result<Plane> {
    let mut registry_env = env(url, auth, "registry", "registry");
    registry_env.push(("SHOAL_SYS_NATS_USER".into(), "registry-sys".into()));
    registry_env.push((
        "SHOAL_SYS_NATS_PASSWORD".into(),
        auth.password("registry-sys"),
    ));
    let registry =
        ServiceProcess::spawn("registry", &binary("shoal-registry")?, &[], &registry_env)?;
    let balancer = ServiceProcess::spawn(
        "balancer",
        &binary("shoal-balancer")?,
        &[],
        &env(url, auth, "balancer", "balancer"),
    )?;
    let mut coordinators = Vec::new();
    for i in 1..=2 {
        let name = format!("coordinator-{i}");
        let mut e = env(url, auth, "coordinator", &name);
        e.push(("SHOAL_DATABASE_URL".into(), database_url.into()));
        e.push(("SHOAL_SYS_NATS_USER".into(), "coordinator-sys".into()));
        e.push((
            "SHOAL_SYS_NATS_PASSWORD".into(),
            auth.password("coordinator-sys"),
        ));
        // Compact after every few records, so snapshots and purges run as this user.
        e.push(("SHOAL_SNAPSHOT_INTERVAL".into(), "200ms".into()));
        e.push(("SHOAL_SNAPSHOT_MIN_RECORDS".into(), "3".into()));
        coordinators.push(ServiceProcess::spawn(
            &name,
            &binary("shoal-coordinator")?,
            &[],
            &e,
        )?);
    }
    let mut nodes = BTreeMap::new();
    for i in 1..=3 {
        let id = format!("node-{i}");
        let mut e = env(url, auth, &id, &id);
        e.push(("SHOAL_NODE_ID".into(), id.clone()));
        nodes.insert(
            id.clone(),
            ServiceProcess::spawn(&id, &binary("shoal-announcer")?, &[], &e)?,
        );
    }
    registry
        .wait_for_log(
            "following nats connection advisories",
            Duration::from_secs(30),
        )
        .await?;
    for coordinator in &coordinators {
        coordinator
            .wait_for_log(
                "following nats connection advisories",
                Duration::from_secs(30),
            )
            .await?;
    }
    Ok(Plane {
        _registry: registry,
        _balancer: balancer,
        coordinators,
        nodes,
    })
}

fn violations(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.to_lowercase().contains("violation"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_role_users_run_the_flow_and_confine_nodes() -> Result<()> {
    let started = Instant::now();
    let auth = AuthFiles::new()?;
    let server = NatsServer::start_with(NatsOptions {
        extra_config: auth.include_line(),
        ..NatsOptions::default()
    })
    .await?;
    let url = server.url();
    let pg = Postgres::start().await?;
    let database_url = pg.create_database().await?;

    // Without credentials nobody gets in: the include really turned auth on.
    let anonymous = async_nats::connect(url.as_str()).await;
    assert!(anonymous.is_err(), "an anonymous client must be refused");

    let mut plane = start_plane(&url, &auth, &database_url).await?;
    let subjects = Subjects::default();
    let (operator_nats, operator_errors) = connect(&url, &auth, "operator").await?;
    let ops =
        ShoalClient::new(operator_nats, subjects.clone()).with_timeout(Duration::from_secs(5));

    // --- the flow, every role with its own user ---
    let nodes = wait_for("3 online nodes", DEADLINE, || async {
        let list = ops.list_nodes(&ListNodesRequest::default()).await.ok()?;
        let online: Vec<String> = list
            .nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Online)
            .map(|n| n.id.clone())
            .collect();
        (online.len() == 3).then_some(online)
    })
    .await?;
    assert_eq!(nodes, ["node-1", "node-2", "node-3"]);
    let first_leader = wait_for("a coordinator leader", DEADLINE, || async {
        ops.leader().await.ok()?.leader
    })
    .await?;
    println!(
        "auth: 3 nodes online and a leader after {:?}",
        started.elapsed()
    );

    let strategy = ops.set_strategy(Strategy::LeastAgents).await?;
    assert_eq!(strategy.strategy, Strategy::LeastAgents);

    let mut placed = Vec::new();
    for name in ["auth-a1", "auth-a2", "auth-a3"] {
        let a = wait_for("an assign to succeed", DEADLINE, || async {
            ops.assign(&AssignRequest {
                agent_name: name.to_string(),
                service: None,
                labels: BTreeMap::new(),
                node_id: None,
                request_id: None,
                resources: None,
                ..AssignRequest::default()
            })
            .await
            .ok()
        })
        .await?;
        placed.push(a);
    }
    let pinned = ops
        .assign(&AssignRequest {
            agent_name: "auth-pinned".into(),
            service: None,
            labels: BTreeMap::new(),
            node_id: Some("node-3".into()),
            request_id: None,
            resources: None,
            ..AssignRequest::default()
        })
        .await?;
    assert_eq!(pinned.node_id, "node-3");
    // An operator's move, and back (both nodes must be allowed their notices).
    let moved = ops
        .move_agent(&shoal_protocol::MoveRequest {
            agent_name: "auth-pinned".into(),
            node_id: Some("node-1".into()),
            request_id: None,
        })
        .await?;
    assert_eq!(moved.node_id, "node-1");
    let back = ops
        .move_agent(&shoal_protocol::MoveRequest {
            agent_name: "auth-pinned".into(),
            node_id: Some("node-3".into()),
            request_id: None,
        })
        .await?;
    assert_eq!(back.node_id, "node-3");

    // Draining exercises the coordinator's migrations (events, node agents subjects).
    ops.drain_node("node-3").await?;
    wait_for("node-3 to have no agents", DEADLINE, || async {
        let on3 = ops
            .list_assignments(&ListAssignmentsRequest {
                node_id: Some("node-3".into()),
                ..Default::default()
            })
            .await
            .ok()?;
        (on3.count == 0).then_some(())
    })
    .await?;

    // Rebalance settings: written by a coordinator into `shoal_config`, read back by
    // any replica; a dry run is a leader request.
    let enabled = ops
        .set_rebalance(&shoal_protocol::RebalanceUpdate {
            enabled: Some(true),
            ..Default::default()
        })
        .await?;
    assert!(enabled.settings.enabled);
    let plan = ops.rebalance_now(true).await?;
    assert!(plan.dry_run);
    let disabled = ops
        .set_rebalance(&shoal_protocol::RebalanceUpdate {
            enabled: Some(false),
            ..Default::default()
        })
        .await?;
    assert!(!disabled.settings.enabled);

    // History rows come through the durable consumer into Postgres.
    let rows = wait_for("the pinned agent's history", DEADLINE, || async {
        let h = ops
            .history(&HistoryRequest {
                agent_name: Some("auth-pinned".into()),
                ..HistoryRequest::default()
            })
            .await
            .ok()?;
        let actions: Vec<AssignmentAction> = h.history.iter().map(|r| r.action).collect();
        (actions.contains(&AssignmentAction::Assigned)
            && actions.contains(&AssignmentAction::Migrated))
        .then_some(h.history)
    })
    .await?;
    assert!(
        rows.iter()
            .any(|r| r.action == AssignmentAction::Assigned
                && r.node_id.as_deref() == Some("node-3"))
    );

    // The leader snapshotted and purged the log as its user (before the promotion
    // below: a term that ends mid-compaction leaves the purge to the next leader,
    // which compacts only once enough new records arrive).
    wait_for("the leader to have compacted the log", DEADLINE, || {
        let logs: String = plane.coordinators.iter().map(|c| c.log()).collect();
        async move { logs.contains("log compacted").then_some(()) }
    })
    .await?;

    // Promotion: coordinator to coordinator, over the per-instance subjects.
    let other = if first_leader.coordinator_id == "coordinator-1" {
        "coordinator-2"
    } else {
        "coordinator-1"
    };
    let promoted = wait_for("a promotion", DEADLINE, || async {
        ops.promote(other).await.ok()
    })
    .await?;
    assert_eq!(promoted.leader.coordinator_id, other);
    ops.undrain_node("node-3").await?;
    // The follower, started again, loads the snapshot the first leader wrote.
    let follower = &mut plane.coordinators[usize::from(other == "coordinator-1")];
    follower.kill()?;
    follower.respawn()?;
    follower
        .wait_for_log("state loaded from the snapshot", DEADLINE)
        .await?;
    println!("auth: flow done after {:?}", started.elapsed());

    // Nothing in that flow was refused: the permissions are complete for it.
    let log = server.log();
    let refused = violations(&log);
    assert!(
        refused.is_empty(),
        "the server refused part of the flow:\n{}",
        refused.join("\n")
    );
    assert!(
        operator_errors.all().is_empty(),
        "{:?}",
        operator_errors.all()
    );

    // --- a node user trying what only others may do ---
    let (node1, node1_errors) = connect(&url, &auth, "node-1").await?;
    let forged_subject = subjects.node_heartbeat("node-2");
    node1.publish(forged_subject.clone(), "{}".into()).await?;
    node1_errors
        .wait_for(&format!(
            "Permissions Violation for Publish to \"{forged_subject}\""
        ))
        .await?;

    let assign_subject = subjects.endpoint(Endpoint::CoordinatorAssign);
    let forged_assign = serde_json::to_vec(&AssignRequest {
        agent_name: "forged-agent".into(),
        service: None,
        labels: BTreeMap::new(),
        node_id: Some("node-1".into()),
        request_id: None,
        resources: None,
        ..AssignRequest::default()
    })?;
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        node1.request(assign_subject.clone(), forged_assign.into()),
    )
    .await;
    assert!(
        !matches!(reply, Ok(Ok(_))),
        "a node got a reply to an assign request"
    );
    node1_errors
        .wait_for(&format!(
            "Permissions Violation for Publish to \"{assign_subject}\""
        ))
        .await?;
    // A node makes no requests, so it may not read any inbox either.
    node1_errors
        .wait_for("Permissions Violation for Subscription to \"_INBOX.")
        .await?;
    let missing = ops.get_assignment("forged-agent").await.unwrap_err();
    assert_eq!(missing.code(), "not_found", "{missing}");

    let lease_subject = format!("$KV.{LEADER_BUCKET}.{LEADER_KEY}");
    let leader_before = ops.leader().await?.leader;
    node1
        .publish(
            lease_subject.clone(),
            r#"{"coordinator_id":"node-1"}"#.into(),
        )
        .await?;
    node1_errors
        .wait_for(&format!(
            "Permissions Violation for Publish to \"{lease_subject}\""
        ))
        .await?;
    let leader_after = ops.leader().await?.leader;
    assert_eq!(
        leader_after.as_ref().map(|l| &l.coordinator_id),
        leader_before.as_ref().map(|l| &l.coordinator_id),
        "the lease changed hands after a node wrote to it"
    );

    let other_agents = subjects.node_agents("node-2");
    let _sub = node1.subscribe(other_agents.clone()).await?;
    node1_errors
        .wait_for(&format!(
            "Permissions Violation for Subscription to \"{other_agents}\""
        ))
        .await?;

    // --- the registry never saw the forged heartbeat ---
    // node-2 goes silent; a heartbeat in its name would then stand out.
    plane
        .nodes
        .get_mut("node-2")
        .context("node-2 announcer")?
        .kill()?;
    wait_for("node-2 to be no longer online", DEADLINE, || async {
        let n = ops.get_node("node-2").await.ok()?;
        (n.status != NodeStatus::Online).then_some(())
    })
    .await?;
    let forged = Heartbeat {
        id: "node-2".into(),
        seq: 1,
        cpu_usage: 42.42,
        memory_usage: 10.0,
        disk_usage: 10.0,
        load_average: 0.5,
        active_agents: 0,
        uptime_s: 1,
        sent_at: chrono::Utc::now(),
        agents_digest: None,
    };
    let forged_payload = serde_json::to_vec(&forged)?;
    let rejected_before = ops.registry_stats().await?.rejected_messages;
    let violations_before = node1_errors.all().len();
    node1
        .publish(forged_subject.clone(), forged_payload.clone().into())
        .await?;
    // A malformed heartbeat on node-1's own subject, published after the forged one
    // on the same connection: once the registry has counted it as rejected, it has
    // handled everything that came before on its heartbeat subscription.
    node1
        .publish(subjects.node_heartbeat("node-1"), "{}".into())
        .await?;
    wait_for("the registry to reject the probe", DEADLINE, || async {
        let stats = ops.registry_stats().await.ok()?;
        (stats.rejected_messages > rejected_before).then_some(())
    })
    .await?;
    let node2 = ops.get_node("node-2").await?;
    assert_ne!(
        node2.cpu_usage, 42.42,
        "the forged heartbeat reached the registry"
    );
    assert_ne!(node2.status, NodeStatus::Online);
    wait_for("the second refusal", Duration::from_secs(10), || {
        let n = node1_errors.all().len();
        async move { (n > violations_before).then_some(()) }
    })
    .await?;

    // The same heartbeat from node-2's own user is accepted: the check above could fail.
    let (node2_client, node2_errors) = connect(&url, &auth, "node-2").await?;
    node2_client
        .publish(forged_subject.clone(), forged_payload.into())
        .await?;
    node2_client.flush().await?;
    wait_for("node-2's own heartbeat to arrive", DEADLINE, || async {
        let n = ops.get_node("node-2").await.ok()?;
        (n.cpu_usage == 42.42).then_some(())
    })
    .await?;
    assert!(node2_errors.all().is_empty(), "{:?}", node2_errors.all());

    // Only node-1's attempts were refused.
    // The server logs each refusal too (so the clean log of the flow above means
    // something), and only node-1's.
    let log = server.log();
    let refused = violations(&log);
    for subject in [
        &forged_subject,
        &assign_subject,
        &lease_subject,
        &other_agents,
    ] {
        assert!(
            refused.iter().any(|l| l.contains(subject.as_str())),
            "no refusal of {subject} in the server log:\n{}",
            refused.join("\n")
        );
    }
    for line in &refused {
        assert!(
            line.contains("/user:node-1\""),
            "unexpected refusal: {line}"
        );
    }
    println!(
        "auth: done after {:?}; node-1 refusals: {:?}",
        started.elapsed(),
        node1_errors.all()
    );
    Ok(())
}
