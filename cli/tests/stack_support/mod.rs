//! What the compose stack test uses to drive and read the running stack from the
//! host: clients on every NATS server's container address, as the users of
//! compose/nats/auth.conf with the passwords of compose/.env; the log's stream
//! leader from the monitoring port; the nodes' own agent sets. The background
//! writer is in [`writer`], the checks on Postgres history in [`history`].

pub mod history;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::{ConnectOptions, ServerAddr};
use futures::StreamExt;
use shoal_protocol::{
    AgentsDigest, ClientError, Heartbeat, LeaderReply, NodeStatus, ShoalClient, Subjects,
};
use shoal_testkit::{ComposeStack, ServerErrors, http, wait_for};
use tokio::time::Instant;

const SERVERS: [&str; 3] = ["nats-1", "nats-2", "nats-3"];
const COORDINATORS: [&str; 2] = ["coordinator-1", "coordinator-2"];

/// The operator client's per-request timeout. An acknowledgement can come this much
/// later than the moment writes became possible: the writer asks again only after
/// it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

pub fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

pub struct Cluster {
    servers: Vec<ServerAddr>,
    env: BTreeMap<String, String>,
    operator: ShoalClient,
}

impl Cluster {
    pub async fn connect(stack: &ComposeStack) -> Result<Cluster> {
        let mut servers = Vec::new();
        for s in SERVERS {
            servers.push(format!("nats://{}:4222", stack.ip(s).await?).parse()?);
        }
        let env = shoal_testkit::compose::dotenv(&compose_dir().join(".env"))?;
        let (client, _) = connect_as(&servers, &env, "operator").await?;
        let operator = ShoalClient::new(client, Subjects::default())
            .with_timeout(REQUEST_TIMEOUT)
            .with_retry_for(Duration::from_secs(10));
        Ok(Cluster {
            servers,
            env,
            operator,
        })
    }

    pub fn operator(&self) -> ShoalClient {
        self.operator.clone()
    }

    /// The server leading the assignment log's stream, from the monitoring port of
    /// the first server not in `skip` that knows.
    pub async fn stream_leader(&self, stack: &ComposeStack, skip: &[&str]) -> Result<String> {
        for s in SERVERS.iter().filter(|s| !skip.contains(s)) {
            let Ok(ip) = stack.ip(s).await else { continue };
            let Ok(jsz) = monitor(ip, "/jsz?streams=true").await else {
                continue;
            };
            if let Some(leader) = stream_cluster(&jsz)
                .and_then(|c| c["leader"].as_str().map(str::to_string))
                .filter(|l| !l.is_empty())
            {
                return Ok(leader);
            }
        }
        bail!("no server names a leader of {}", shoal_protocol::LOG_STREAM)
    }

    /// Waits until `server` is back: the log's stream leader sees both its other
    /// replicas current.
    pub async fn wait_js_current(&self, stack: &ComposeStack, server: &str) -> Result<()> {
        wait_for(
            &format!("{server} to rejoin and the assignment log to be current on it"),
            Duration::from_secs(60),
            || async {
                let leader = self.stream_leader(stack, &[]).await.ok()?;
                let jsz = monitor(stack.ip(&leader).await.ok()?, "/jsz?streams=true")
                    .await
                    .ok()?;
                let replicas = stream_cluster(&jsz)?["replicas"].as_array()?.clone();
                (replicas.len() == 2 && replicas.iter().all(|r| r["current"] == true)).then_some(())
            },
        )
        .await
    }

    pub async fn leader(&self) -> Result<String> {
        let reply = self.operator.leader().await?;
        reply
            .leader
            .map(|l| l.coordinator_id)
            .context("no coordinator leads")
    }

    /// Waits until a coordinator other than `old` leads; returns it.
    pub async fn wait_leader_other_than(&self, old: &str) -> Result<String> {
        wait_for(
            &format!("a coordinator other than {old} to lead"),
            Duration::from_secs(30),
            || async {
                for id in COORDINATORS.into_iter().filter(|c| *c != old) {
                    if self.leader_of(id).await.ok()?.is_leader {
                        return Some(id.to_string());
                    }
                }
                None
            },
        )
        .await
    }

    /// Waits until `old` answers that `successor` leads and it does not.
    pub async fn wait_follower(&self, old: &str, successor: &str) -> Result<()> {
        wait_for(
            &format!("{old} to follow {successor}"),
            Duration::from_secs(30),
            || async {
                let reply = self.leader_of(old).await.ok()?;
                (!reply.is_leader && reply.leader.is_some_and(|l| l.coordinator_id == successor))
                    .then_some(())
            },
        )
        .await
    }

    /// `leader.get` of one replica, asked once: a paused one does not answer.
    async fn leader_of(&self, id: &str) -> Result<LeaderReply, ClientError> {
        self.operator
            .clone()
            .with_retry_for(Duration::ZERO)
            .with_timeout(Duration::from_millis(300))
            .leader_of(id)
            .await
    }

    pub async fn wait_node_status(&self, node: &str, status: NodeStatus) -> Result<()> {
        wait_for(
            &format!("{node} to be {status:?}"),
            Duration::from_secs(60),
            || async { (self.operator.get_node(node).await.ok()?.status == status).then_some(()) },
        )
        .await
    }

    /// The agents the coordinator has running on `node`.
    pub async fn agents_on(&self, node: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .operator
            .running_by_node()
            .await?
            .remove(node)
            .unwrap_or_default())
    }

    /// Publishes, as `as_node`, a heartbeat in `victim`'s name: the server must
    /// refuse it, and the registry's record of `victim` must not take its figures.
    pub async fn forged_heartbeat_refused(&self, as_node: &str, victim: &str) -> Result<()> {
        let (client, errors) = connect_as(&self.servers, &self.env, as_node).await?;
        let subject = Subjects::default().node_heartbeat(victim);
        // A heartbeat the registry would take, were it let through, with an uptime
        // (134 years) no real node reports.
        let forged = Heartbeat {
            id: victim.to_string(),
            seq: u64::MAX / 2,
            cpu_usage: 1.0,
            memory_usage: 1.0,
            disk_usage: 1.0,
            load_average: 1.0,
            active_agents: 0,
            uptime_s: 4_242_424_242,
            sent_at: chrono::Utc::now(),
            agents_digest: None,
        };
        client
            .publish(subject.clone(), serde_json::to_vec(&forged)?.into())
            .await?;
        client.flush().await?;
        errors
            .wait_for(&format!(
                "Permissions Violation for Publish to \"{subject}\""
            ))
            .await?;
        let record = self.operator.get_node(victim).await?;
        if record.uptime_s == forged.uptime_s {
            bail!("{victim}'s record took the forged heartbeat's figures: {record:?}");
        }
        Ok(())
    }

    /// Postgres, over the container's address, as the compose file's user.
    pub async fn postgres(&self, stack: &ComposeStack) -> Result<tokio_postgres::Client> {
        let password = self
            .env
            .get("POSTGRES_PASSWORD")
            .context("compose/.env has no POSTGRES_PASSWORD")?;
        let ip = stack.ip("postgres").await?;
        let config = format!("host={ip} port=5432 user=shoal dbname=shoal password={password}");
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to postgres at {ip}"))?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// A connection to the stack's servers as `user` of compose/nats/auth.conf, with
/// its password from compose/.env (`node-1` → `NODE_1_NATS_PASSWORD`), keeping the
/// server errors it is told of.
async fn connect_as(
    servers: &[ServerAddr],
    env: &BTreeMap<String, String>,
    user: &str,
) -> Result<(async_nats::Client, ServerErrors)> {
    let var = format!("{}_NATS_PASSWORD", user.to_uppercase().replace('-', "_"));
    let password = env
        .get(&var)
        .with_context(|| format!("compose/.env has no {var}"))?;
    let errors = ServerErrors::default();
    let options = ConnectOptions::with_user_and_password(user.into(), password.clone())
        .name(format!("compose-test:{user}"));
    let client = errors
        .collect(options)
        .connect(servers)
        .await
        .with_context(|| format!("connecting to {servers:?} as {user}"))?;
    Ok((client, errors))
}

/// The `cluster` object of the assignment log's stream in a `/jsz` answer.
fn stream_cluster(jsz: &serde_json::Value) -> Option<&serde_json::Value> {
    jsz["account_details"]
        .as_array()?
        .iter()
        .filter_map(|a| a["stream_detail"].as_array())
        .flatten()
        .find(|s| s["name"] == shoal_protocol::LOG_STREAM)
        .map(|s| &s["cluster"])
}

async fn monitor(ip: std::net::Ipv4Addr, path: &str) -> Result<serde_json::Value> {
    let response = http::get_at(SocketAddr::from((ip, 8222)), path).await?;
    serde_json::from_str(&response.body).context("monitoring answer is not JSON")
}

/// The agent sets the nodes themselves report: the digest of their next heartbeat,
/// heard as the registry's user (the one allowed to).
pub async fn node_digests(
    cluster: &Cluster,
    nodes: &[&str],
) -> Result<BTreeMap<String, AgentsDigest>> {
    let (client, _) = connect_as(&cluster.servers, &cluster.env, "registry").await?;
    let mut heartbeats = client
        .subscribe(Subjects::default().node_heartbeat_all())
        .await?;
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < nodes.len() {
        let msg = tokio::time::timeout_at(deadline, heartbeats.next())
            .await
            .context("not every node heartbeated within 10 s")?
            .context("heartbeat subscription ended")?;
        let hb: Heartbeat = shoal_protocol::decode(&msg.payload)?;
        if nodes.contains(&hb.id.as_str())
            && let Some(d) = hb.agents_digest
        {
            seen.insert(hb.id, d);
        }
    }
    Ok(seen)
}
