//! A real nats-server, real `shoal-balancer` processes, and membership written the
//! way the registry writes it: `Node` JSON in the `shoal_members` KV bucket.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, kv};
use shoal_balancer::bench::synthetic_node;
use shoal_protocol::{
    BalancerStats, Empty, Endpoint, MEMBERS_BUCKET, Node, ShoalClient, Strategy, StrategyMessage,
    Subjects,
};
use shoal_testkit::{NatsServer, ServiceProcess, binary, wait_for};

/// Deadline for correctness waits (generous: a loaded 2-core machine).
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub shoal: ShoalClient,
    pub members: kv::Store,
    pub balancers: Vec<ServiceProcess>,
    pub ids: Vec<String>,
}

/// Ten nodes `n00`…`n09`, each labelled `slot=<i>`, with room for 10,000 agents
/// (picks in these tests never fill a node).
pub fn ten_nodes() -> Vec<Node> {
    (0..10)
        .map(|i| {
            let mut n = synthetic_node(&format!("n{i:02}"), 10_000, 0, 10.0, 10.0);
            n.labels = BTreeMap::from([("slot".to_string(), i.to_string())]);
            n
        })
        .collect()
}

/// The membership bucket, opened or created exactly as the services do.
pub async fn members_bucket(client: &async_nats::Client) -> Result<kv::Store> {
    let js = jetstream::new(client.clone());
    shoal_runtime::kv::open_or_create(&js, MEMBERS_BUCKET, 1)
        .await
        .map_err(anyhow::Error::msg)
}

pub async fn put_node(members: &kv::Store, node: &Node) -> Result<()> {
    members
        .put(node.id.as_str(), serde_json::to_vec(node)?.into())
        .await
        .with_context(|| format!("writing membership record of {}", node.id))?;
    Ok(())
}

pub fn spawn_balancer(url: &str, id: &str) -> Result<ServiceProcess> {
    spawn_balancer_with(url, id, &[])
}

pub fn spawn_balancer_with(
    url: &str,
    id: &str,
    envs: &[(String, String)],
) -> Result<ServiceProcess> {
    ServiceProcess::spawn(
        id,
        &binary("shoal-balancer")?,
        &[
            "--nats-url".to_string(),
            url.to_string(),
            "--instance-id".to_string(),
            id.to_string(),
        ],
        envs,
    )
}

impl Cluster {
    /// nats-server, `nodes` in the members bucket, and `replicas` balancers that have
    /// loaded them.
    pub async fn start(replicas: usize, nodes: &[Node]) -> Result<Cluster> {
        Cluster::start_with(replicas, nodes, &[]).await
    }

    /// As [`Cluster::start`], with extra `SHOAL_…` environment for the balancers.
    pub async fn start_with(
        replicas: usize,
        nodes: &[Node],
        envs: &[(String, String)],
    ) -> Result<Cluster> {
        let nats = NatsServer::start().await?;
        let client = nats.client().await?;
        let members = members_bucket(&client).await?;
        for node in nodes {
            put_node(&members, node).await?;
        }
        let ids: Vec<String> = (0..replicas).map(|i| format!("bal-{i}")).collect();
        let balancers = ids
            .iter()
            .map(|id| spawn_balancer_with(&nats.url(), id, envs))
            .collect::<Result<Vec<_>>>()?;
        let shoal = ShoalClient::new(client.clone(), Subjects::default());
        let cluster = Cluster {
            nats,
            client,
            shoal,
            members,
            balancers,
            ids,
        };
        cluster.wait_loaded(nodes.len()).await?;
        Ok(cluster)
    }

    /// Every replica's view holds `nodes` nodes.
    pub async fn wait_loaded(&self, nodes: usize) -> Result<()> {
        for id in &self.ids {
            wait_for(
                &format!("{id} to load {nodes} nodes"),
                DEADLINE,
                || async move {
                    let stats = self.stats(id).await.ok()?;
                    (stats.nodes == nodes).then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    pub async fn stats(&self, id: &str) -> Result<BalancerStats> {
        Ok(self
            .shoal
            .call_direct(Endpoint::BalancerStats, id, &Empty {})
            .await?)
    }

    pub async fn strategy_of(&self, id: &str) -> Result<Strategy> {
        let m: StrategyMessage = self
            .shoal
            .call_direct(Endpoint::BalancerStrategyGet, id, &Empty {})
            .await?;
        Ok(m.strategy)
    }

    pub async fn set_strategy_on(&self, id: &str, strategy: Strategy) -> Result<Strategy> {
        let m: StrategyMessage = self
            .shoal
            .call_direct(
                Endpoint::BalancerStrategySet,
                id,
                &StrategyMessage { strategy },
            )
            .await?;
        Ok(m.strategy)
    }

    /// Every replica answers `strategy.get` with `strategy`.
    pub async fn wait_strategy_everywhere(&self, strategy: Strategy) -> Result<()> {
        for id in &self.ids {
            wait_for(
                &format!("{id} to use {strategy}"),
                DEADLINE,
                || async move { (self.strategy_of(id).await.ok()? == strategy).then_some(()) },
            )
            .await?;
        }
        Ok(())
    }
}
