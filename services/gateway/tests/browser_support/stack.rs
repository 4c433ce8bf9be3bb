//! A whole control plane for the browser test, every part a real process: nats-server,
//! Postgres, a registry, a balancer, a coordinator, announcer nodes and the gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_protocol::{ListNodesRequest, NodeStatus, ShoalClient, Subjects};
use shoal_testkit::{NatsServer, Postgres, ServiceProcess, binary, wait_for};

/// For what must happen on a loaded 2-core machine (processes start, nodes turn
/// offline, agents move).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The running stack. Fields drop in order: the processes first, the servers last.
pub struct Stack {
    pub gateway: Gateway,
    pub nodes: BTreeMap<String, ServiceProcess>,
    /// registry, balancer, coordinator, by name.
    services: BTreeMap<String, ServiceProcess>,
    /// Talks to the services over NATS, as the gateway does: the test's own view.
    pub shoal: ShoalClient,
    _pg: Postgres,
    _nats: NatsServer,
}

fn spawn(
    nats_url: &str,
    bin: &str,
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<ServiceProcess> {
    let mut all = vec![
        ("SHOAL_NATS_URL".to_string(), nats_url.to_string()),
        ("SHOAL_INSTANCE_ID".to_string(), name.to_string()),
    ];
    all.extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    ServiceProcess::spawn(name, &binary(bin)?, &args, &all)
}

impl Stack {
    /// Starts everything, with one announcer per id in `node_ids` (`max_agents` slots
    /// each), and returns once the coordinator leads and every node is online.
    pub async fn start(node_ids: &[&str], max_agents: u32) -> Result<Stack> {
        let nats = NatsServer::start().await?;
        let pg = Postgres::start().await?;
        let db = pg.create_database().await?;
        let url = nats.url();
        let services = vec![
            spawn(&url, "shoal-registry", "registry", &[], &[])?,
            spawn(
                &url,
                "shoal-balancer",
                "balancer",
                &[],
                &[("SHOAL_BALANCER_STRATEGY", "least_agents")],
            )?,
            spawn(
                &url,
                "shoal-coordinator",
                "coordinator",
                &[],
                &[("SHOAL_DATABASE_URL", &db)],
            )?,
        ];
        let max = max_agents.to_string();
        let mut nodes = BTreeMap::new();
        for id in node_ids {
            let envs = [
                ("SHOAL_NODE_ID", *id),
                ("SHOAL_NODE_MAX_AGENTS", max.as_str()),
            ];
            nodes.insert(
                id.to_string(),
                spawn(&url, "shoal-announcer", &format!("node-{id}"), &[], &envs)?,
            );
        }
        let gateway = Gateway::start(&url).await?;

        let shoal = ShoalClient::new(nats.client().await?, Subjects::default())
            .with_timeout(Duration::from_secs(2))
            .with_retry_for(Duration::from_secs(10));
        wait_for("the coordinator to lead", DEADLINE, || async {
            shoal.leader().await.ok()?.leader.map(|_| ())
        })
        .await?;
        let want = node_ids.len();
        wait_for("every node online in the registry", DEADLINE, || async {
            let req = ListNodesRequest {
                status: Some(NodeStatus::Online),
                ..Default::default()
            };
            (shoal.list_nodes(&req).await.ok()?.count == want).then_some(())
        })
        .await?;
        Ok(Stack {
            gateway,
            nodes,
            services: ["registry", "balancer", "coordinator"]
                .into_iter()
                .map(String::from)
                .zip(services)
                .collect(),
            shoal,
            _pg: pg,
            _nats: nats,
        })
    }

    fn node(&mut self, id: &str) -> Result<&mut ServiceProcess> {
        match self.nodes.get_mut(id) {
            Some(node) => Ok(node),
            None => bail!("no node {id} in this stack"),
        }
    }

    /// kill -9 of node `id`'s announcer.
    pub fn kill_node(&mut self, id: &str) -> Result<()> {
        self.node(id)?.kill()
    }

    /// kill -9 of a service (`registry`, `balancer` or `coordinator`).
    pub fn kill_service(&mut self, name: &str) -> Result<()> {
        match self.services.get_mut(name) {
            Some(service) => service.kill(),
            None => bail!("no service {name} in this stack"),
        }
    }

    /// Starts node `id`'s announcer again (after [`Stack::kill_node`]).
    pub fn restart_node(&mut self, id: &str) -> Result<()> {
        self.node(id)?.respawn()
    }
}

/// A `shoal-gateway` process on a port of its choosing.
pub struct Gateway {
    _process: ServiceProcess,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Gateway {
    pub async fn start(nats_url: &str) -> Result<Gateway> {
        let args = ["--http-listen", "127.0.0.1:0"];
        let process = spawn(nats_url, "shoal-gateway", "gateway", &args, &[])?;
        process.wait_for_log("gateway ready", DEADLINE).await?;
        let url = ready_url(&process.log())?;
        Ok(Gateway {
            _process: process,
            url,
        })
    }
}

/// The base URL in the gateway's "gateway ready" log line (`url=http://host:port/`).
fn ready_url(log: &str) -> Result<String> {
    let line = log
        .lines()
        .find(|l| l.contains("gateway ready"))
        .context("no \"gateway ready\" line in the gateway's log")?;
    let start = line
        .find("url=http://")
        .context("no url= in the gateway's ready line")?
        + 4;
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Ok(url.trim_end_matches('/').to_string())
}

#[test]
fn reads_the_url_from_the_ready_line() {
    let log = "x\n2026-01-01T00:00:00Z  INFO shoal_gateway: gateway ready url=http://127.0.0.1:4321/ instance_id=g\n";
    assert_eq!(ready_url(log).unwrap(), "http://127.0.0.1:4321");
    assert!(ready_url("nothing").is_err());
}
