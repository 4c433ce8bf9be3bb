//! Shared setup for the registry's process tests: real nats-server, real
//! `shoal-registry` and `shoal-announcer` binaries, and an event recorder.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use shoal_protocol::{
    Endpoint, ListNodesRequest, Node, NodeEvent, NodeEventKind, NodeList, RegistryStats,
    ShoalClient, Subjects,
};
use shoal_testkit::{NatsOptions, NatsServer, ServiceProcess, binary, wait_for};

/// Correctness waits: generous, for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The accounts block for the two-signal test: an application account with
/// JetStream and the system account that sees connection advisories.
pub const ACCOUNTS: &str = r#"
accounts {
  SYS { users = [ { user: sys, password: sys } ] }
  APP { jetstream: enabled, users = [ { user: app, password: app } ] }
}
system_account: SYS
"#;

pub struct Auth {
    pub user: &'static str,
    pub password: &'static str,
}

pub const APP: Auth = Auth {
    user: "app",
    password: "app",
};

pub async fn nats() -> Result<NatsServer> {
    NatsServer::start().await
}

pub async fn nats_with_accounts() -> Result<NatsServer> {
    NatsServer::start_with(NatsOptions {
        extra_config: ACCOUNTS.to_string(),
        ..NatsOptions::default()
    })
    .await
}

pub async fn client(nats: &NatsServer, auth: Option<&Auth>) -> Result<ShoalClient> {
    let opts = match auth {
        Some(a) => {
            async_nats::ConnectOptions::with_user_and_password(a.user.into(), a.password.into())
        }
        None => async_nats::ConnectOptions::new(),
    };
    let nc = opts.connect(nats.url()).await.context("test client")?;
    Ok(ShoalClient::new(nc, Subjects::default()))
}

fn auth_args(auth: Option<&Auth>) -> Vec<String> {
    match auth {
        Some(a) => vec![
            "--nats-user".into(),
            a.user.into(),
            "--nats-password".into(),
            a.password.into(),
        ],
        None => Vec::new(),
    }
}

/// Starts a registry replica and waits until it serves.
pub async fn registry(
    nats: &NatsServer,
    instance: &str,
    auth: Option<&Auth>,
    extra: &[&str],
) -> Result<ServiceProcess> {
    start("registry", "--instance-id", instance, nats, auth, extra).await
}

/// The instance ids of [`two_replicas`].
pub const REPLICAS: [&str; 2] = ["r1", "r2"];

/// A nats-server, a client, and registry replicas `r1` and `r2` serving it.
pub struct TwoReplicas {
    pub nats: NatsServer,
    pub c: ShoalClient,
    pub registries: Vec<ServiceProcess>,
}

pub async fn two_replicas() -> Result<TwoReplicas> {
    let nats = nats().await?;
    let c = client(&nats, None).await?;
    let mut registries = Vec::new();
    for id in REPLICAS {
        registries.push(registry(&nats, id, None, &[]).await?);
    }
    Ok(TwoReplicas {
        nats,
        c,
        registries,
    })
}

/// Starts an announcer for node `id` and waits until it has announced.
pub async fn announcer(
    nats: &NatsServer,
    id: &str,
    auth: Option<&Auth>,
    extra: &[&str],
) -> Result<ServiceProcess> {
    start("announcer", "--node-id", id, nats, auth, extra).await
}

/// Spawns `shoal-<kind>` named by `name_flag`, and waits for its "<kind> ready" log.
async fn start(
    kind: &str,
    name_flag: &str,
    name: &str,
    nats: &NatsServer,
    auth: Option<&Auth>,
    extra: &[&str],
) -> Result<ServiceProcess> {
    let mut args = vec![
        "--nats-url".to_string(),
        nats.url(),
        name_flag.to_string(),
        name.to_string(),
    ];
    args.extend(auth_args(auth));
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = ServiceProcess::spawn(
        &format!("{kind} {name}"),
        &binary(&format!("shoal-{kind}"))?,
        &args,
        &[],
    )?;
    p.wait_for_log(&format!("{kind} ready"), DEADLINE).await?;
    Ok(p)
}

pub async fn list_on(
    c: &ShoalClient,
    instance: &str,
    filter: &ListNodesRequest,
) -> Option<NodeList> {
    c.call_direct(Endpoint::RegistryNodesList, instance, filter)
        .await
        .ok()
}

pub async fn stats_on(c: &ShoalClient, instance: &str) -> Option<RegistryStats> {
    c.call_direct(Endpoint::RegistryStats, instance, &shoal_protocol::Empty {})
        .await
        .ok()
}

pub fn ids(list: &NodeList) -> Vec<String> {
    list.nodes.iter().map(|n| n.id.clone()).collect()
}

/// Waits until every replica lists exactly `expected` (ids, sorted) and each node
/// passes `check`.
pub async fn wait_listed(
    c: &ShoalClient,
    instances: &[&str],
    expected: &[&str],
    what: &str,
    check: impl Fn(&Node) -> bool,
) -> Result<()> {
    wait_for(what, DEADLINE, || async {
        for instance in instances {
            let list = list_on(c, instance, &ListNodesRequest::default()).await?;
            if ids(&list) != expected || !list.nodes.iter().all(&check) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Every registry event, with the instant the test received it.
#[derive(Clone)]
pub struct Events {
    seen: Arc<Mutex<Vec<(Instant, NodeEvent)>>>,
}

impl Events {
    pub async fn record(c: &ShoalClient) -> Result<Events> {
        let mut sub = c
            .nats()
            .subscribe(c.subjects().registry_events_all())
            .await?;
        c.nats().flush().await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(e) = serde_json::from_slice::<NodeEvent>(&m.payload) {
                    sink.lock().unwrap().push((Instant::now(), e));
                }
            }
        });
        Ok(Events { seen })
    }

    pub fn of(&self, node: &str, kind: NodeEventKind) -> Vec<(Instant, NodeEvent)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.node_id == node && e.event == kind)
            .cloned()
            .collect()
    }

    /// Waits for the first `kind` event of `node` received after `since`.
    pub async fn wait(
        &self,
        node: &str,
        kind: NodeEventKind,
        since: Instant,
        deadline: Duration,
    ) -> Result<(Instant, NodeEvent)> {
        wait_for(&format!("{kind:?} event of {node}"), deadline, || {
            let found = self.of(node, kind).into_iter().find(|(at, _)| *at >= since);
            async move { found }
        })
        .await
    }

    /// Events of `kind`, any node.
    pub fn count_kind(&self, kind: NodeEventKind) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.event == kind)
            .count()
    }

    pub fn count(&self, node: &str, kind: NodeEventKind) -> usize {
        self.of(node, kind).len()
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
