//! Where the partition scenario's processes run. Three network namespaces, each a
//! test host whose link can be cut:
//! - `minority`: nats-server s3 (a member of the 3-server cluster) and
//!   coordinator-1, attached to s3 only. Cutting this host puts the coordinator
//!   (which leads when it is cut) in the cluster's minority; cutting only s3's
//!   routes leaves a server in the minority with its clients still attached.
//! - `registry`: the registry, attached to s1 and s2.
//! - `node`: one real node (`shoal-announcer`, id [`CUT_NODE`]), attached to s1
//!   and s2.
//!
//! On the host: s1, s2, coordinator-2 (attached to s1 and s2), the balancer (given
//! s3 alone, so it starts in what becomes the minority, and learns the others from
//! the cluster), the simulated nodes and the run's own client (s1 and s2).

use std::time::Duration;

use anyhow::Context;
use shoal_testkit::{NatsCluster, NatsOptions, NetNs, wait_for};

use crate::args::Args;
use crate::stack::{Coordinator, Stack};

/// The real node cut off in the node scenario.
pub const CUT_NODE: &str = "cut-node";
/// The coordinator in the minority host: it leads when that host is cut.
pub const MINORITY_COORDINATOR: &str = "coordinator-1";
pub const MAJORITY_COORDINATOR: &str = "coordinator-2";
/// The one balancer, started on the minority host's server.
pub const BALANCER: &str = "balancer-1";
/// Index of the minority's nats-server in the cluster.
pub const MINORITY_SERVER: usize = 2;
const PATIENCE: Duration = Duration::from_secs(60);

/// The three test hosts. Declared before the stack in the scenario, so they are
/// dropped after the processes inside them.
pub struct Hosts {
    pub minority: NetNs,
    pub registry: NetNs,
    pub node: NetNs,
}

impl Hosts {
    pub fn new() -> anyhow::Result<Hosts> {
        let make = |what: &str| {
            NetNs::new().with_context(|| {
                format!("the partition scenario puts the {what} on a test host of its own (a network namespace): run it as root")
            })
        };
        Ok(Hosts {
            minority: make("minority")?,
            registry: make("registry")?,
            node: make("real node")?,
        })
    }

    /// Starts the cluster, Postgres and every service where it belongs, and waits
    /// until coordinator-1 leads and every node is online.
    pub async fn stack(&self, args: &Args) -> anyhow::Result<Stack> {
        eprintln!(
            "starting a partitioned stack (3 nats-servers, one in its own network namespace; postgres; services)…"
        );
        let cluster = NatsCluster::start_spread(
            NatsOptions::for_netns(),
            &[None, None, Some(&self.minority)],
        )
        .await?;
        let host_urls = cluster.servers[..MINORITY_SERVER]
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(",");
        let s3_url = cluster.servers[MINORITY_SERVER].url();
        let inside = |netns: &NetNs, servers: std::ops::Range<usize>| -> anyhow::Result<String> {
            let urls: anyhow::Result<Vec<String>> = cluster.servers[servers]
                .iter()
                .map(|s| netns.nats_url(s))
                .collect();
            Ok(urls?.join(","))
        };
        let registry_urls = inside(&self.registry, 0..MINORITY_SERVER)?;
        let node_urls = inside(&self.node, 0..MINORITY_SERVER)?;
        let minority_urls = inside(&self.minority, MINORITY_SERVER..MINORITY_SERVER + 1)?;

        let mut stack = Stack::on_cluster(args, cluster, host_urls).await?;
        stack.registry = Some(stack.service_at(
            Some(&self.registry),
            &registry_urls,
            "shoal-registry",
            "registry-1",
            &[],
        )?);
        stack.balancer = Some(stack.service_at(None, &s3_url, "shoal-balancer", BALANCER, &[])?);
        let c1 = stack.service_at(
            Some(&self.minority),
            &minority_urls,
            "shoal-coordinator",
            MINORITY_COORDINATOR,
            &[],
        )?;
        stack.coordinators.push(Coordinator {
            id: MINORITY_COORDINATOR.into(),
            process: c1,
        });
        // coordinator-1 first, so it holds the lease.
        let leader = stack.wait_for_leader().await?;
        anyhow::ensure!(
            leader == MINORITY_COORDINATOR,
            "{leader} leads, not {MINORITY_COORDINATOR}"
        );
        let c2 = stack.service_at(
            None,
            &stack.nats_url.clone(),
            "shoal-coordinator",
            MAJORITY_COORDINATOR,
            &[],
        )?;
        stack.coordinators.push(Coordinator {
            id: MAJORITY_COORDINATOR.into(),
            process: c2,
        });
        stack
            .start_nodes(args.nodes, args.max_agents, args.node_metrics.sim())
            .await?;
        stack.real_node = Some(stack.service_at(
            Some(&self.node),
            &node_urls,
            "shoal-announcer",
            CUT_NODE,
            &[
                ("SHOAL_NODE_ID", CUT_NODE.to_string()),
                ("SHOAL_NODE_MAX_AGENTS", args.max_agents.to_string()),
            ],
        )?);
        let client = stack.client.clone();
        wait_for(&format!("{CUT_NODE} to be online"), PATIENCE, || async {
            let node = client.get_node(CUT_NODE).await.ok()?;
            (node.status == shoal_protocol::NodeStatus::Online).then_some(())
        })
        .await?;
        Ok(stack)
    }
}
