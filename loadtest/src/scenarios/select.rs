//! `select`: balancer selections with --nodes nodes in the view — the selection
//! engine in-process (the ≥ 100k/s, p99 < 1 ms goal at 10,000 nodes) and through NATS
//! against a running balancer, set against raw request/reply in the same run.

use shoal_protocol::{SelectRequest, Strategy};

use crate::args::Args;
use crate::measure::run as measure;
use crate::report::Report;
use crate::stack::{Spawn, Stack};

pub async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    // The engine alone, for every strategy.
    for strategy in Strategy::ALL {
        let (nodes, selections) = (args.nodes, args.engine_selections);
        let bench = tokio::task::spawn_blocking(move || {
            shoal_balancer::bench::select_throughput(nodes, selections, strategy)
        })
        .await?;
        eprintln!("in-process {bench}");
        report.figure(
            &format!("engine_{}", strategy.as_str()),
            serde_json::json!({
                "nodes": bench.nodes,
                "per_sec": bench.per_sec.round(),
                "p50_us": bench.p50.as_secs_f64() * 1e6,
                "p99_us": bench.p99.as_secs_f64() * 1e6,
                "max_us": bench.max.as_secs_f64() * 1e6,
            }),
        );
        report.goal(
            &format!("engine {} ≥ 100k/s and p99 < 1 ms", strategy.as_str()),
            bench.per_sec >= 100_000.0 && bench.p99.as_micros() < 1_000,
            format!(
                "{:.0}/s, p99 {:?} at {} nodes",
                bench.per_sec, bench.p99, bench.nodes
            ),
        );
    }

    // The engine taking in every node in random id order.
    let nodes = args.nodes;
    let join = tokio::task::spawn_blocking(move || shoal_balancer::bench::join_time(nodes)).await?;
    eprintln!("in-process join of {nodes} nodes: {join:?}");
    report.figure(
        "engine_join",
        serde_json::json!({ "nodes": nodes, "seconds": join.as_secs_f64() }),
    );

    // Through NATS against the balancer service.
    let stack = Stack::with_nodes(args, Spawn::NO_COORDINATOR).await?;
    let (load, limit) = (args.load(), args.limit());
    let base = super::baselines(args, &stack.nats_url, load, limit, report).await?;
    let client = stack.client.clone();
    let m = measure("select over nats", load, limit, move |_| {
        let client = client.clone();
        async move {
            client
                .select(&SelectRequest::default())
                .await
                .map(|_| ())
                .map_err(|e| e.code().to_string())
        }
    })
    .await;
    if let Some((rr, _)) = &base {
        report.ratio(
            "select/s ÷ nats request-reply/s",
            m.per_sec / rr.per_sec,
            None,
        );
    }
    report.measurements.push(m);
    Ok(())
}
