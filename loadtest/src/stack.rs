//! The stack under test: a running one (by URL) or a private one started here with
//! the testkit's real processes (`--spawn`), plus simulated nodes heartbeating
//! through the announcer's simulation entry.

use std::time::Duration;

use anyhow::Context;
use shoal_announcer::sim::{SimConfig, SimMetrics, SimulatedCluster};
use shoal_protocol::{ShoalClient, Subjects};
use shoal_testkit::{NatsCluster, NatsServer, NetNs, Postgres, ServiceProcess, binary, wait_for};

use crate::args::Args;

pub struct Coordinator {
    pub id: String,
    pub process: ServiceProcess,
}

pub struct Stack {
    pub nats_url: String,
    pub database_url: Option<String>,
    /// Held so the private servers stop when the stack is dropped.
    _nats: Option<NatsServer>,
    /// The private routed servers with `--nats-servers` above 1.
    pub cluster: Option<NatsCluster>,
    /// Replicas of the KV buckets and the log the spawned services create.
    kv_replicas: usize,
    _postgres: Option<Postgres>,
    pub registry: Option<ServiceProcess>,
    /// Registry replicas past the first (`--registries`).
    pub more_registries: Vec<ServiceProcess>,
    /// Heartbeat partitions of the spawned registries (`--heartbeat-partitions`).
    heartbeat_partitions: u32,
    pub balancer: Option<ServiceProcess>,
    pub coordinators: Vec<Coordinator>,
    pub nodes: Option<SimulatedCluster>,
    /// A real node (`shoal-announcer`), where a scenario starts one.
    pub real_node: Option<ServiceProcess>,
    pub client: ShoalClient,
    pub subjects: Subjects,
    /// The services' log level (`--service-log-level`).
    pub log_level: String,
    /// Where the services' logs are copied when the stack is dropped (`--keep-logs`),
    /// whether the run passed or failed.
    keep_logs_in: Option<std::path::PathBuf>,
}

/// What to start in `--spawn` mode.
pub struct Spawn {
    pub registry: bool,
    pub balancer: bool,
    pub coordinators: usize,
}

impl Spawn {
    pub const ALL: Spawn = Spawn {
        registry: true,
        balancer: true,
        coordinators: 2,
    };
    /// Membership and selection only.
    pub const NO_COORDINATOR: Spawn = Spawn {
        registry: true,
        balancer: true,
        coordinators: 0,
    };
    pub const REGISTRY_ONLY: Spawn = Spawn {
        registry: true,
        balancer: false,
        coordinators: 0,
    };
}

impl Stack {
    pub async fn open(args: &Args, spawn: Spawn) -> anyhow::Result<Stack> {
        let subjects = Subjects::new(&args.prefix)?;
        let servers = usize::from(args.nats_servers);
        let (nats, cluster, postgres, nats_url, database_url) = if args.spawn {
            eprintln!("starting a private stack ({servers} nats-server, postgres, services)…");
            let partitions = args.heartbeat_partitions;
            let (nats, cluster, url) = if servers > 1 {
                if partitions > 1 {
                    anyhow::bail!(
                        "--heartbeat-partitions above 1 needs --nats-servers 1: the private cluster has no mapping"
                    );
                }
                let cluster = NatsCluster::start(servers).await?;
                let url = cluster.urls();
                (None, Some(cluster), url)
            } else {
                let extra_config = if partitions > 1 {
                    shoal_protocol::partition::heartbeat_mapping_config(&subjects, partitions)
                } else {
                    String::new()
                };
                let nats = NatsServer::start_with(shoal_testkit::NatsOptions {
                    extra_config,
                    ..Default::default()
                })
                .await?;
                let url = nats.url();
                (Some(nats), None, url)
            };
            let postgres = Postgres::start().await?;
            let db = postgres.create_database().await?;
            (nats, cluster, Some(postgres), url, Some(db))
        } else {
            let url = args.nats_url.clone();
            (None, None, None, url, args.database_url.clone())
        };
        let nats_client = connect(&nats_url).await.with_context(|| {
            format!("cannot reach NATS at {nats_url}: is the stack running? (or use --spawn)")
        })?;
        let client =
            ShoalClient::new(nats_client, subjects.clone()).with_timeout(Duration::from_secs(5));
        let mut stack = Stack::unstarted(args, nats_url, client, subjects);
        stack.database_url = database_url;
        stack._nats = nats;
        stack.cluster = cluster;
        stack.kv_replicas = servers.min(3);
        stack._postgres = postgres;
        if args.spawn {
            if spawn.registry {
                stack.registry = Some(stack.service("shoal-registry", "registry-1")?);
                for i in 2..=args.registries {
                    let replica = stack.service("shoal-registry", &format!("registry-{i}"))?;
                    stack.more_registries.push(replica);
                }
            }
            if spawn.balancer {
                stack.balancer = Some(stack.service("shoal-balancer", "balancer-1")?);
            }
            for i in 1..=spawn.coordinators {
                let id = format!("coordinator-{i}");
                let process = stack.service("shoal-coordinator", &id)?;
                stack.coordinators.push(Coordinator { id, process });
            }
        }
        Ok(stack)
    }

    /// Opens the stack and starts `--nodes` simulated nodes with `--max-agents` each,
    /// reporting `--node-metrics`.
    pub async fn with_nodes(args: &Args, spawn: Spawn) -> anyhow::Result<Stack> {
        let mut stack = Stack::open(args, spawn).await?;
        stack
            .start_nodes(args.nodes, args.max_agents, args.node_metrics.sim())
            .await?;
        Ok(stack)
    }

    /// (name, pid, whether its children count too) of every process started here,
    /// this one included (it runs the simulated nodes); empty for a stack elsewhere.
    pub fn process_ids(&self) -> Vec<(String, u32, bool)> {
        let mut ids = Vec::new();
        let servers = self
            .cluster
            .iter()
            .flat_map(|c| c.servers.iter())
            .chain(self._nats.iter());
        for server in servers {
            if let Some(pid) = server.pid() {
                ids.push(("nats_server".to_string(), pid, false));
            }
        }
        if ids.is_empty() {
            return ids;
        }
        if let Some(pid) = self._postgres.as_ref().and_then(Postgres::pid) {
            ids.push(("postgres".to_string(), pid, true));
        }
        for (name, p) in [("registry", &self.registry), ("balancer", &self.balancer)] {
            if let Some(p) = p {
                ids.push((name.to_string(), p.pid(), false));
            }
        }
        for (i, p) in self.more_registries.iter().enumerate() {
            ids.push((format!("registry_{}", i + 2), p.pid(), false));
        }
        for c in &self.coordinators {
            ids.push(("coordinators".to_string(), c.process.pid(), false));
        }
        ids.push(("loadtest".to_string(), std::process::id(), false));
        ids
    }

    /// The registry replicas started here: `registry-1`, then `--registries` more.
    pub fn registries(&self) -> impl Iterator<Item = &ServiceProcess> {
        self.registry.iter().chain(&self.more_registries)
    }

    /// Monitoring ports of the nats-servers started here.
    pub fn monitor_ports(&self) -> Vec<u16> {
        self.cluster
            .iter()
            .flat_map(|c| c.servers.iter())
            .chain(self._nats.iter())
            .map(NatsServer::monitor_port)
            .collect()
    }

    /// Starts one more coordinator replica, named `id`.
    pub fn add_coordinator(&mut self, id: &str) -> anyhow::Result<()> {
        let process = self.service("shoal-coordinator", id)?;
        self.coordinators.push(Coordinator {
            id: id.to_string(),
            process,
        });
        Ok(())
    }

    /// Starts a service binary configured through its `SHOAL_…` environment.
    fn service(&self, bin: &str, instance: &str) -> anyhow::Result<ServiceProcess> {
        self.service_at(None, &self.nats_url, bin, instance, &[])
    }

    /// Starts a service binary on the host or inside `netns`, connecting to `urls`
    /// (what it can reach from there), with `extra` settings of its own.
    pub fn service_at(
        &self,
        netns: Option<&NetNs>,
        urls: &str,
        bin: &str,
        instance: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut env = vec![
            ("SHOAL_NATS_URL".to_string(), urls.to_string()),
            ("SHOAL_INSTANCE_ID".to_string(), instance.to_string()),
            (
                "SHOAL_PREFIX".to_string(),
                self.subjects.prefix().to_string(),
            ),
            ("SHOAL_LOG_LEVEL".to_string(), self.log_level.clone()),
            (
                "SHOAL_KV_REPLICAS".to_string(),
                self.kv_replicas.to_string(),
            ),
        ];
        if let Some(db) = &self.database_url {
            env.push(("SHOAL_DATABASE_URL".to_string(), db.clone()));
        }
        if bin == "shoal-registry" {
            env.push((
                "SHOAL_HEARTBEAT_PARTITIONS".to_string(),
                self.heartbeat_partitions.to_string(),
            ));
        }
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        match netns {
            Some(netns) => ServiceProcess::spawn_in(netns, instance, &binary(bin)?, &[], &env),
            None => ServiceProcess::spawn(instance, &binary(bin)?, &[], &env),
        }
    }

    /// A private stack on `cluster` (started by the caller, so it may place its
    /// servers in network namespaces) with its own Postgres and no service yet:
    /// the caller starts each where it belongs ([`Self::service_at`]). The
    /// run's own client, and the simulated nodes, connect to `urls`.
    pub async fn on_cluster(
        args: &Args,
        cluster: NatsCluster,
        urls: String,
    ) -> anyhow::Result<Stack> {
        let subjects = Subjects::new(&args.prefix)?;
        let postgres = Postgres::start().await?;
        let database_url = postgres.create_database().await?;
        let nats_client = connect(&urls).await?;
        let client =
            ShoalClient::new(nats_client, subjects.clone()).with_timeout(Duration::from_secs(5));
        let mut stack = Stack::unstarted(args, urls, client, subjects);
        stack.database_url = Some(database_url);
        stack.kv_replicas = cluster.servers.len().min(3);
        stack.cluster = Some(cluster);
        stack._postgres = Some(postgres);
        Ok(stack)
    }

    /// A stack reached at `nats_url` with nothing of its own started yet.
    fn unstarted(args: &Args, nats_url: String, client: ShoalClient, subjects: Subjects) -> Stack {
        Stack {
            nats_url,
            database_url: None,
            _nats: None,
            cluster: None,
            kv_replicas: 1,
            _postgres: None,
            registry: None,
            more_registries: Vec::new(),
            heartbeat_partitions: args.heartbeat_partitions,
            balancer: None,
            coordinators: Vec::new(),
            nodes: None,
            real_node: None,
            client,
            subjects,
            log_level: args.service_log_level.clone(),
            keep_logs_in: args.keep_logs.clone(),
        }
    }

    /// Copies the log of every service started here into `dir` (`--keep-logs`).
    fn keep_logs(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let services = self
            .registries()
            .chain(self.balancer.iter())
            .chain(self.coordinators.iter().map(|c| &c.process))
            .chain(self.real_node.iter());
        for p in services {
            let to = dir.join(format!("{}.log", p.name()));
            std::fs::copy(p.log_path(), &to).with_context(|| {
                format!("copying {} to {}", p.log_path().display(), to.display())
            })?;
        }
        eprintln!("service logs kept in {}", dir.display());
        Ok(())
    }

    /// Starts `count` simulated nodes (ids `lt-<i>`) and waits until the registry
    /// lists them all online.
    pub async fn start_nodes(
        &mut self,
        count: usize,
        max_agents: u32,
        metrics: SimMetrics,
    ) -> anyhow::Result<()> {
        if count == 0 {
            return Ok(());
        }
        // Stats, not nodes.list: a list of 10,000 nodes is larger than a NATS message.
        let before = self
            .client
            .registry_stats()
            .await
            .map(|s| s.online_nodes)
            .unwrap_or(0);
        // A balancer not answering yet has no node in its view.
        let unmeasured_before = self
            .client
            .clone()
            .with_retry_for(Duration::ZERO)
            .balancer_stats()
            .await
            .map(|s| s.unmeasured_nodes)
            .unwrap_or(0);
        let nats = connect(&self.nats_url).await?;
        let cfg = SimConfig {
            count,
            id_prefix: "lt".into(),
            max_agents,
            metrics,
            ..SimConfig::default()
        };
        self.nodes = Some(SimulatedCluster::start(nats, self.subjects.clone(), cfg).await?);
        let client = self.client.clone();
        let deadline = Duration::from_secs(30 + count as u64 / 500);
        wait_for(
            &format!("the registry to count {count} more online nodes"),
            deadline,
            || {
                let client = client.clone();
                async move {
                    let stats = client.registry_stats().await.ok()?;
                    (stats.online_nodes >= before + count).then_some(())
                }
            },
        )
        .await?;
        if self.balancer.is_none() {
            return Ok(());
        }
        // The balancer loads membership from KV on its own: measure from the moment
        // it can pick every node, not while it still answers `unavailable`, and has
        // had a heartbeat from each (until then least_loaded ranks a node as busy).
        let quick = self.client.clone().with_retry_for(Duration::ZERO);
        wait_for(
            &format!("the balancer to load and measure {count} more nodes"),
            deadline,
            || {
                let quick = quick.clone();
                async move {
                    let stats = quick.balancer_stats().await.ok()?;
                    (stats.nodes >= before + count && stats.unmeasured_nodes <= unmeasured_before)
                        .then_some(())
                }
            },
        )
        .await
    }

    /// Waits until a coordinator holds the lease.
    pub async fn wait_for_leader(&self) -> anyhow::Result<String> {
        let client = self.client.clone();
        wait_for("a coordinator leader", Duration::from_secs(30), || {
            let client = client.clone();
            async move { client.leader().await.ok()?.leader.map(|l| l.coordinator_id) }
        })
        .await
    }

    /// Waits until a coordinator other than `old` holds the lease.
    pub async fn wait_for_leader_other_than(&self, old: &str) -> anyhow::Result<String> {
        let client = self.client.clone();
        wait_for("a new coordinator leader", Duration::from_secs(30), || {
            let client = client.clone();
            async move {
                let id = client.leader().await.ok()?.leader?.coordinator_id;
                (id != old).then_some(id)
            }
        })
        .await
    }

    pub async fn postgres(&self) -> anyhow::Result<Option<tokio_postgres::Client>> {
        let Some(url) = &self.database_url else {
            return Ok(None);
        };
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {url} for verification"))?;
        tokio::spawn(connection);
        Ok(Some(client))
    }
}

/// Connects to a NATS URL or a comma-separated list of them (a cluster), so the
/// client reconnects to another server when one dies.
pub async fn connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    let addrs = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{urls:?} is not a NATS URL or a list of them"))?;
    Ok(async_nats::ConnectOptions::new().connect(addrs).await?)
}

impl Drop for Stack {
    /// The logs are kept before the processes and their directories go, on every way
    /// out of a scenario (a failed wait included).
    fn drop(&mut self) {
        if let Some(dir) = self.keep_logs_in.take()
            && let Err(e) = self.keep_logs(&dir)
        {
            eprintln!("service logs not kept: {e:#}");
        }
    }
}
