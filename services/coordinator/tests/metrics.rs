//! Prometheus metrics of a real control plane (nats-server, Postgres, registry,
//! balancer, coordinator, an announcer): each instance's metrics subject, the
//! merged text `gather` makes of them all, the same over HTTP with
//! `--metrics-listen`, and the numbers an operator watches moving as the cluster
//! works: assigns, selections, membership, detection of a dead node, history lag
//! through a Postgres outage.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow, bail, ensure};
use common::*;
use shoal_protocol::{AssignRequest, HistoryRequest, ServiceKind, ShoalClient};
use shoal_runtime::metrics::{GatherOptions, gather};
use shoal_testkit::{NatsServer, Postgres, http, ports, wait_for};

/// One sample of an OpenMetrics text.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `text`, after checking it is OpenMetrics: every sample belongs to
/// a family a `# TYPE` line declared before it (its name is the family's, or that
/// and a suffix its type allows), no family is declared twice, and the text ends
/// with its only `# EOF`.
fn parse(text: &str) -> Result<Vec<Sample>> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or_else(|| anyhow!("the text does not end with # EOF"))?;
    ensure!(!body.contains("# EOF"), "# EOF appears more than once");
    let mut declared = BTreeSet::new();
    let mut family: Option<(String, String)> = None;
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| anyhow!("TYPE line without a type: {line:?}"))?;
            ensure!(declared.insert(name.to_string()), "{name} declared twice");
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        ensure!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (name, rest) = line.split_at(line.find(['{', ' ']).context("a sample name")?);
        let (family, kind) = family
            .as_ref()
            .ok_or_else(|| anyhow!("sample {name} before any TYPE line"))?;
        let suffix = name
            .strip_prefix(family.as_str())
            .ok_or_else(|| anyhow!("sample {name} under the family {family}"))?;
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            "gauge" | "unknown" => &[""],
            other => bail!("unexpected type {other}"),
        };
        ensure!(
            allowed.contains(&suffix),
            "sample {name} is not a {kind} of {family}"
        );
        let (labels, value) = match rest.strip_prefix('{') {
            Some(rest) => {
                let (labels, value) = rest.split_once("} ").context("closing brace")?;
                (parse_labels(labels)?, value)
            }
            None => (BTreeMap::new(), rest.trim_start()),
        };
        let value = value.split(' ').next().unwrap_or_default();
        let value: f64 = value
            .parse()
            .with_context(|| format!("value of {line:?}"))?;
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// `a="x",b="y"` (values without escapes: Shoal's are ids, statuses, versions).
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').context("label without =")?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .with_context(|| format!("unquoted label value in {pair:?}"))?;
        ensure!(
            labels.insert(key.to_string(), value.to_string()).is_none(),
            "label {key} twice"
        );
    }
    Ok(labels)
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    match found.as_slice() {
        [one] => Some(one.value),
        _ => None,
    }
}

/// One instance's metrics, asked on its subject and checked.
async fn scrape(shoal: &ShoalClient, kind: ServiceKind, id: &str) -> Result<Vec<Sample>> {
    let text = shoal.metrics(kind, id).await?;
    parse(&text).with_context(|| format!("{kind} {id}'s metrics:\n{text}"))
}

/// Waits until `check` holds for the samples of one instance.
async fn wait_metric(
    shoal: &ShoalClient,
    kind: ServiceKind,
    id: &str,
    what: &str,
    check: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    wait_for(what, LONG, || async {
        let samples = scrape(shoal, kind, id).await.ok()?;
        check(&samples).then_some(samples)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn every_instance_serves_its_metrics_and_gather_merges_them_all() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let url = nats.url();
    let registry_port = ports::free_port().to_string();
    let listen = format!("127.0.0.1:{registry_port}");
    let _registry = service(
        &url,
        "shoal-registry",
        "registry",
        &[("SHOAL_METRICS_LISTEN", &listen)],
    )
    .unwrap();
    let _balancer = balancer(&url);
    let _c1 = coordinator(&url, "c1", &[]).unwrap();
    let node_port = ports::free_port();
    let node_listen = format!("127.0.0.1:{node_port}");
    let mut node = announcer_with(&url, "n1", 10, &[("SHOAL_METRICS_LISTEN", &node_listen)]);
    let shoal = shoal(&client);
    wait_online(&shoal, 1).await;
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();

    const ASSIGNS: usize = 5;
    for i in 0..ASSIGNS {
        let req = AssignRequest {
            agent_name: format!("agent-{i}"),
            request_id: Some(format!("req-{i}")),
            ..AssignRequest::default()
        };
        assert_eq!(
            assign_acked(&shoal, &req, LONG).await.unwrap().node_id,
            "n1"
        );
    }
    let bad = AssignRequest {
        agent_name: "not a valid name".into(),
        ..AssignRequest::default()
    };
    shoal.assign(&bad).await.unwrap_err();

    // Each instance on its own subject.
    let coordinator = scrape(&shoal, ServiceKind::Coordinator, "c1")
        .await
        .unwrap();
    let ok = value(
        &coordinator,
        "shoal_coordinator_assigns_total",
        &[("outcome", "ok")],
    );
    assert!(ok >= Some(ASSIGNS as f64), "assigns ok: {ok:?}");
    let refused = value(
        &coordinator,
        "shoal_coordinator_assigns_total",
        &[("outcome", "bad_request")],
    );
    assert_eq!(refused, Some(1.0));
    let timed = value(
        &coordinator,
        "shoal_coordinator_assign_duration_seconds_count",
        &[],
    );
    assert!(
        timed >= Some(ASSIGNS as f64 + 1.0),
        "assigns timed: {timed:?}"
    );
    assert_eq!(
        value(&coordinator, "shoal_coordinator_leader", &[]),
        Some(1.0)
    );
    assert!(value(&coordinator, "shoal_coordinator_term", &[]) >= Some(1.0));
    assert_eq!(
        value(&coordinator, "shoal_coordinator_takeovers_total", &[]),
        Some(1.0)
    );
    let appended = value(
        &coordinator,
        "shoal_coordinator_log_append_batch_changes_sum",
        &[],
    );
    assert!(
        appended >= Some(ASSIGNS as f64),
        "changes appended: {appended:?}"
    );
    assert_eq!(
        value(&coordinator, "shoal_coordinator_nats_connected", &[]),
        Some(1.0)
    );

    let selected = scrape(&shoal, ServiceKind::Balancer, "balancer")
        .await
        .unwrap();
    let picks = value(
        &selected,
        "shoal_balancer_selections_total",
        &[("strategy", "least_agents")],
    );
    assert!(
        picks >= Some(ASSIGNS as f64),
        "least_agents picks: {picks:?}"
    );
    assert_eq!(
        value(
            &selected,
            "shoal_balancer_strategy",
            &[("strategy", "least_agents")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&selected, "shoal_balancer_nodes", &[]), Some(1.0));

    let registry = wait_metric(
        &shoal,
        ServiceKind::Registry,
        "registry",
        "the node's heartbeats counted",
        |s| value(s, "shoal_registry_heartbeats_received_total", &[]) >= Some(1.0),
    )
    .await;
    assert_eq!(
        value(&registry, "shoal_registry_nodes", &[("status", "online")]),
        Some(1.0)
    );
    assert!(value(&registry, "shoal_registry_announces_received_total", &[]) >= Some(1.0));

    // The whole control plane in one text, each sample labelled with its instance.
    let gathered = gather(&client, shoal.subjects(), &GatherOptions::default())
        .await
        .unwrap();
    let all = parse(&gathered.text).unwrap();
    for (service, instance) in [
        ("registry", "registry"),
        ("balancer", "balancer"),
        ("coordinator", "c1"),
    ] {
        let labels = [("instance", instance), ("service", service)];
        assert_eq!(
            value(&all, "shoal_up", &labels),
            Some(1.0),
            "{instance} up:\n{}",
            gathered.text
        );
        let build = format!("shoal_{service}_build_info");
        assert_eq!(
            value(&all, &build, &labels),
            Some(1.0),
            "{instance}'s build"
        );
        assert!(
            all.iter()
                .filter(|s| s.name.starts_with(&format!("shoal_{service}_")))
                .all(|s| s.labels.get("instance").map(String::as_str) == Some(instance)),
            "every {service} sample names its instance"
        );
    }
    assert!(
        gathered.scrapes.iter().all(|s| s.outcome.is_ok()),
        "{:?}",
        gathered.scrapes
    );
    assert_eq!(
        value(
            &all,
            "shoal_coordinator_assigns_total",
            &[("outcome", "ok")]
        ),
        ok,
        "the coordinator's own count, labelled"
    );

    // The same over HTTP: the same samples (their values move with heartbeats).
    let port: u16 = registry_port.parse().unwrap();
    let over_http = http::get(port, "/metrics").await.unwrap();
    assert_eq!(over_http.status, 200, "{}", over_http.body);
    let names = |samples: &[Sample]| -> BTreeSet<String> {
        samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    };
    let registry_now = scrape(&shoal, ServiceKind::Registry, "registry")
        .await
        .unwrap();
    assert_eq!(
        names(&parse(&over_http.body).unwrap()),
        names(&registry_now)
    );
    assert_eq!(http::get(port, "/").await.unwrap().status, 404);

    // The node's own count, over HTTP (its NATS user may be confined to its node).
    wait_for("the node to count its agents", LONG, || async {
        let answer = http::get(node_port, "/metrics").await.ok()?;
        let samples = parse(&answer.body).ok()?;
        let sent = value(&samples, "shoal_announcer_heartbeats_sent_total", &[])?;
        (sent >= 1.0 && value(&samples, "shoal_announcer_agents", &[]) == Some(ASSIGNS as f64))
            .then_some(())
    })
    .await
    .unwrap();

    // A node that dies: the registry's verdicts, timed from its last heartbeat.
    node.kill().unwrap();
    let registry = wait_metric(
        &shoal,
        ServiceKind::Registry,
        "registry",
        "the dead node counted offline",
        |s| value(s, "shoal_registry_nodes", &[("status", "offline")]) == Some(1.0),
    )
    .await;
    let suspect = [("status", "suspect")];
    let count = value(
        &registry,
        "shoal_registry_detection_seconds_count",
        &suspect,
    );
    let sum = value(&registry, "shoal_registry_detection_seconds_sum", &suspect);
    let (Some(count), Some(sum)) = (count, sum) else {
        panic!("no suspect verdict timed")
    };
    assert_eq!(count, 1.0);
    // Suspect after 2 missed intervals of 1 s; well within 5 s.
    assert!(
        (2.0..5.0).contains(&sum),
        "suspect {sum} s after the last heartbeat"
    );
    println!("MEASURED last heartbeat → suspect {sum:.2} s");
}

#[tokio::test]
async fn history_lag_and_postgres_errors_show_a_postgres_outage() {
    let nats = NatsServer::start().await.unwrap();
    let mut pg = Postgres::start().await.unwrap();
    let db = pg.create_database().await.unwrap();
    let client = nats.client().await.unwrap();
    let kv = members(&client).await.unwrap();
    put_node(&kv, &node("n1", 1000)).await.unwrap();
    let _c1 = coordinator(&nats.url(), "c1", &[("SHOAL_DATABASE_URL", &db)]).unwrap();
    let shoal = shoal(&client);
    wait_leader(&shoal, &["c1"], LONG).await.unwrap();
    let c1 = ServiceKind::Coordinator;
    let history = |s: &[Sample]| {
        (
            value(s, "shoal_coordinator_history_lag_seconds", &[]),
            value(s, "shoal_coordinator_history_records_behind", &[]),
        )
    };

    shoal.assign(&pinned("before", "n1")).await.unwrap();
    wait_for("the first change in postgres", LONG, || async {
        let rows = shoal.history(&HistoryRequest::default()).await.ok()?;
        (rows.count == 1).then_some(())
    })
    .await
    .unwrap();
    let caught_up = wait_metric(&shoal, c1, "c1", "history caught up", |s| {
        history(s) == (Some(0.0), Some(0.0))
    })
    .await;
    // Asked before the coordinator had made its table, history queries failed.
    let errors_before = value(&caught_up, "shoal_coordinator_postgres_errors_total", &[]);

    pg.stop().await.unwrap();
    for i in 0..3 {
        shoal
            .assign(&pinned(&format!("during-{i}"), "n1"))
            .await
            .unwrap();
    }
    let down = wait_metric(
        &shoal,
        c1,
        "c1",
        "history lagging a second",
        |s| matches!(history(s), (Some(lag), Some(behind)) if lag >= 1.0 && behind >= 1.0),
    )
    .await;
    let errors = value(&down, "shoal_coordinator_postgres_errors_total", &[]);
    assert!(
        errors > errors_before,
        "postgres errors: {errors_before:?} before, {errors:?} down"
    );

    pg.start_again().await.unwrap();
    wait_metric(&shoal, c1, "c1", "history caught up again", |s| {
        history(s) == (Some(0.0), Some(0.0))
    })
    .await;
    let rows = shoal.history(&HistoryRequest::default()).await.unwrap();
    assert_eq!(rows.count, 4, "every change written once the lag is gone");
}
