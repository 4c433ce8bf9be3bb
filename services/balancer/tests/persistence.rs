//! The cluster strategy lives in the `shoal_config` bucket: it survives restarts of
//! the balancers and of nats-server, and replicas keep following it afterwards.

mod common;

use anyhow::Result;
use common::{Cluster, DEADLINE, spawn_balancer, ten_nodes};
use shoal_protocol::{SelectRequest, Strategy};
use shoal_testkit::wait_for;

#[tokio::test]
async fn strategy_survives_restarts_of_balancers_and_nats() -> Result<()> {
    let mut cluster = Cluster::start(2, &ten_nodes()).await?;
    let a = cluster.ids[0].clone();
    cluster.set_strategy_on(&a, Strategy::Weighted).await?;
    cluster.wait_strategy_everywhere(Strategy::Weighted).await?;

    // nats-server restarts (file storage): the replicas keep the setting, their
    // watches come back, and a new setting still reaches both.
    cluster.nats.restart().await?;
    cluster.wait_strategy_everywhere(Strategy::Weighted).await?;
    let c = &cluster;
    let a_ref = &a;
    wait_for(
        "strategy.set to work after the nats restart",
        DEADLINE,
        || async move { c.set_strategy_on(a_ref, Strategy::LeastAgents).await.ok() },
    )
    .await?;
    cluster
        .wait_strategy_everywhere(Strategy::LeastAgents)
        .await?;
    let shoal = &cluster.shoal;
    let reply = wait_for(
        "selection after the nats restart",
        DEADLINE,
        || async move { shoal.select(&SelectRequest::default()).await.ok() },
    )
    .await?;
    assert_eq!(reply.strategy, Strategy::LeastAgents);

    // Both balancers crash and come back: they read the setting, not the default.
    for b in &mut cluster.balancers {
        b.kill()?;
    }
    for b in &mut cluster.balancers {
        b.respawn()?;
    }
    cluster.wait_loaded(10).await?;
    for id in &cluster.ids {
        assert_eq!(
            cluster.strategy_of(id).await?,
            Strategy::LeastAgents,
            "{id} after restart"
        );
    }

    // nats-server and the balancers all stop; everything starts again.
    for b in &mut cluster.balancers {
        b.kill()?;
    }
    cluster.nats.restart().await?;
    let url = cluster.nats.url();
    cluster.balancers = cluster
        .ids
        .iter()
        .map(|id| spawn_balancer(&url, id))
        .collect::<Result<Vec<_>>>()?;
    cluster.wait_loaded(10).await?;
    cluster
        .wait_strategy_everywhere(Strategy::LeastAgents)
        .await?;
    Ok(())
}
