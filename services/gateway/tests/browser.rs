//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/deps.sh) opens the page a real
//! `shoal-gateway` serves for a real stack (nats-server, Postgres, registry,
//! balancer, coordinator, three announcer processes), and sees what a user would:
//! the nodes online, agents placed, a node killed with -9 turning offline while its
//! agents move, the reasons behind a placement, the strategy switched, a node
//! drained from the page with its agents waiting for room, and those agents placed
//! once the killed node is back. A screenshot is left in target/test-artefacts/.

mod browser_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use browser_support::browser::{Browser, artefact};
use browser_support::stack::{DEADLINE, Gateway, Stack};
use fantoccini::Locator;
use shoal_protocol::{AssignRequest, Strategy};
use shoal_testkit::{NatsServer, wait_for};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const AGENTS: usize = 6;
/// Each node's agent slots: after one node is lost the other two are full, so a
/// node drained then has agents waiting for room.
const SLOTS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_cluster_live() {
    let browser = Browser::start().await.unwrap();
    let mut stack = Stack::start(&NODES, SLOTS).await.unwrap();
    let outcome = scenario(&browser, &mut stack).await;
    let name = if outcome.is_ok() {
        "dashboard.png"
    } else {
        "dashboard-failed.png"
    };
    let path = artefact(name).unwrap();
    match browser.screenshot(&path).await {
        Ok(()) => println!("screenshot of the dashboard: {}", path.display()),
        Err(e) => println!("no screenshot of the dashboard: {e:#}"),
    }
    if let Err(e) = browser.close().await {
        println!("closing the browser session failed: {e:#}");
    }
    outcome.unwrap();
}

fn row_of(agent: &str) -> String {
    format!(r#"[data-testid="assignment-row"][data-agent="{agent}"] [data-testid="agent-link"]"#)
}

fn drain_button_of(node: &str) -> String {
    format!(r#"[data-testid="node-row"][data-node-id="{node}"] [data-testid="drain-button"]"#)
}

/// The agents a node's row says it runs (`active/max`).
fn active(agents: &str) -> Option<usize> {
    agents.split('/').next()?.parse().ok()
}

async fn scenario(browser: &Browser, stack: &mut Stack) -> Result<()> {
    let leader = stack
        .shoal
        .leader()
        .await?
        .leader
        .context("the coordinator leads")?;
    browser
        .client
        .goto(&format!("{}/", stack.gateway.url))
        .await?;
    browser
        .wait(
            "every node online, the leader, its term and the strategy, live, no error",
            DEADLINE,
            |p| {
                let online = NODES
                    .iter()
                    .all(|id| p.node(id).is_some_and(|n| n.status == "online"));
                (online
                    && p.nodes.len() == NODES.len()
                    && p.leader == leader.coordinator_id
                    && p.term == leader.epoch.to_string()
                    && p.strategy == "least_agents"
                    && p.live == "live"
                    && p.errors.is_empty())
                .then_some(())
            },
        )
        .await?;

    // Agents assigned over NATS appear on the page where the coordinator put them.
    let mut placed = BTreeMap::new();
    for i in 1..=AGENTS {
        let req = AssignRequest {
            agent_name: format!("agent-{i}"),
            ..AssignRequest::default()
        };
        let a = stack.shoal.assign_acknowledged(&req, DEADLINE).await?;
        placed.insert(a.agent_name, a.node_id);
    }
    browser
        .wait(
            "every agent listed on its node, and the nodes' slots in use",
            DEADLINE,
            |p| {
                let listed = p.assignments.len() == AGENTS
                    && placed.iter().all(|(agent, node)| {
                        p.assignments
                            .iter()
                            .any(|r| &r.agent == agent && &r.node == node && r.status == "running")
                    });
                let slots: Option<usize> = p.nodes.iter().map(|n| active(&n.agents)).sum();
                (listed && slots == Some(AGENTS)).then_some(())
            },
        )
        .await?;

    // The gateway serves /metrics: the throughput chart is drawn from it.
    browser
        .wait("the throughput chart drawn from /metrics", DEADLINE, |p| {
            p.throughput_points.is_some_and(|n| n >= 1).then_some(())
        })
        .await?;

    // kill -9 of a node: the page shows it offline and its agents elsewhere.
    let victim = placed["agent-1"].clone();
    let moved: Vec<&String> = placed
        .iter()
        .filter(|(_, node)| **node == victim)
        .map(|(agent, _)| agent)
        .collect();
    stack.kill_node(&victim)?;
    let page = browser
        .wait(
            &format!("{victim} offline and its agents moved"),
            DEADLINE,
            |p| {
                let offline = p.node(&victim).is_some_and(|n| n.status == "offline");
                let elsewhere = p.assignments.len() == AGENTS
                    && p.assignments
                        .iter()
                        .all(|r| r.node != victim && r.status == "running" && !r.waiting);
                (offline && elsewhere).then(|| p.clone())
            },
        )
        .await?;
    ensure!(
        page.events
            .iter()
            .any(|e| e.contains(&format!("node {victim} offline"))),
        "the event feed shows no offline event for {victim}: {:?}",
        page.events
    );
    for row in &page.assignments {
        let truth = stack.shoal.get_assignment(&row.agent).await?;
        ensure!(
            truth.node_id == row.node,
            "the page shows {} on {}, the coordinator has it on {}",
            row.agent,
            row.node,
            truth.node_id
        );
    }

    // "why this node": a moved agent's history, with the candidates of its placement.
    let agent = moved.first().context("agent-1 was on the victim")?;
    browser.click(&row_of(agent)).await?;
    browser
        .wait(
            &format!("{agent}'s history: placed on {victim} among every node, then moved"),
            DEADLINE,
            |p| {
                let rows = p.history.as_ref()?;
                let first = rows.iter().find(|r| r.action == "assigned")?;
                let why = first.candidates.len() == NODES.len()
                    && first
                        .text
                        .contains(&format!("why {victim}: least_agents chose it of 3"));
                let away = rows.iter().any(|r| {
                    matches!(r.action.as_str(), "orphaned" | "reassigned")
                        && r.text.contains(&format!("{victim} → "))
                });
                (why && away).then_some(())
            },
        )
        .await?;

    // The strategy, switched from the page, is the balancer's.
    browser
        .client
        .find(Locator::Css(r#"[data-testid="strategy"]"#))
        .await?
        .select_by_value(Strategy::LeastLoaded.as_str())
        .await?;
    wait_for("the balancer to use least_loaded", DEADLINE, || async {
        (stack.shoal.get_strategy().await.ok()?.strategy == Strategy::LeastLoaded).then_some(())
    })
    .await?;

    // Draining from the page while the other node is full: the node is shown
    // draining and its agents wait, highlighted, for room elsewhere.
    let drained = NODES
        .iter()
        .copied()
        .find(|n| *n != victim)
        .context("a node besides the victim")?;
    let on_drained = page
        .assignments
        .iter()
        .filter(|r| r.node == drained)
        .count();
    browser.click(&drain_button_of(drained)).await?;
    browser
        .wait(
            &format!("{drained} shown draining, its {on_drained} agents waiting"),
            DEADLINE,
            |p| {
                let node = p.node(drained)?;
                let waiting: Vec<_> = p.assignments.iter().filter(|r| r.waiting).collect();
                (node.status == "draining"
                    && node.button == "Undrain"
                    && waiting.len() == on_drained
                    && waiting.iter().all(|r| r.status == "migrating")
                    && p.strategy == "least_loaded"
                    && p.errors.is_empty())
                .then_some(())
            },
        )
        .await?;

    let shot = artefact("dashboard-draining.png")?;
    browser.screenshot(&shot).await?;
    println!(
        "screenshot of the dashboard, agents waiting: {}",
        shot.display()
    );

    // The killed node comes back: the waiting agents go to it.
    stack.restart_node(&victim)?;
    browser
        .wait(
            &format!("{victim} online again, no agent waiting or left on {drained}"),
            DEADLINE,
            |p| {
                let back = p.node(&victim).is_some_and(|n| n.status == "online");
                let settled = p.assignments.len() == AGENTS
                    && p.assignments
                        .iter()
                        .all(|r| r.node != drained && r.status == "running" && !r.waiting);
                (back && settled).then_some(())
            },
        )
        .await?;

    // A crashed service shows in the page's health: the goal is 2 s; the page asks
    // every 500 ms and the test reads the page every poll, hence the margin.
    browser
        .wait(
            "the page to show the control plane healthy",
            DEADLINE,
            |p| (p.health == "healthy").then_some(()),
        )
        .await?;
    let killed = Instant::now();
    stack.kill_service("balancer")?;
    let page = browser
        .wait(
            "the page to show the balancer's crash",
            Duration::from_secs(3),
            |p| {
                (p.health.starts_with("unhealthy") && p.health.contains("balancer"))
                    .then(|| p.clone())
            },
        )
        .await?;
    println!(
        "balancer crash shown on the page after {:?}: {}",
        killed.elapsed(),
        page.health
    );
    Ok(())
}

/// With no service behind the gateway, every part of the page that cannot load says
/// why, in the words of the API's error envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_api_errors() {
    let browser = Browser::start().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let gateway = Gateway::start(&nats.url()).await.unwrap();
    browser
        .client
        .goto(&format!("{}/", gateway.url))
        .await
        .unwrap();
    // The envelope as the API answers it, fetched beside the page.
    let script = r#"
        const done = arguments[arguments.length - 1];
        fetch('/api/cluster/nodes').then(async (r) => done({ status: r.status, body: await r.json() }),
          (e) => done({ error: String(e) }));
    "#;
    let reply = browser
        .client
        .execute_async(script, Vec::new())
        .await
        .unwrap();
    assert_eq!(reply["status"], 503, "{reply}");
    let expected = format!(
        "GET /api/cluster/nodes: {} ({})",
        reply["body"]["error"]["message"].as_str().unwrap(),
        reply["body"]["error"]["code"].as_str().unwrap()
    );
    let page = browser
        .wait("the nodes' error on the page", DEADLINE, |p| {
            p.errors.contains(&expected).then(|| p.clone())
        })
        .await
        .unwrap();
    assert!(page.nodes.is_empty(), "{page:#?}");
    for path in ["/api/cluster/assignments", "/api/cluster/balance"] {
        assert!(
            page.errors
                .iter()
                .any(|e| e.starts_with(&format!("GET {path}: "))),
            "no error shown for {path}: {:?}",
            page.errors
        );
    }
    browser.close().await.unwrap();
}

/// The charts' arithmetic, run in the browser on two scrapes in the gateway's
/// `/metrics` form: assigns/s from the `ok` counter's growth (a restarted instance's
/// counter counts from zero), p99 from the histogram buckets' growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_compute_rate_and_p99_from_two_scrapes() {
    let browser = Browser::start().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let gateway = Gateway::start(&nats.url()).await.unwrap();
    browser
        .client
        .goto(&format!("{}/", gateway.url))
        .await
        .unwrap();
    let scrape = |ok1: u32, conflicts: u32, ok2: u32, buckets: [u32; 4]| {
        let les = ["0.001", "0.01", "0.1", "+Inf"];
        let mut text = String::from("# TYPE shoal_coordinator_assigns counter\n");
        text +=
            &format!("shoal_coordinator_assigns_total{{instance=\"c1\",outcome=\"ok\"}} {ok1}\n");
        text += &format!(
            "shoal_coordinator_assigns_total{{instance=\"c1\",outcome=\"conflict\"}} {conflicts}\n"
        );
        text +=
            &format!("shoal_coordinator_assigns_total{{instance=\"c2\",outcome=\"ok\"}} {ok2}\n");
        for (le, n) in les.iter().zip(buckets) {
            text += &format!(
                "shoal_coordinator_assign_duration_seconds_bucket{{instance=\"c1\",le=\"{le}\"}} {n}\n"
            );
        }
        text + "# EOF\n"
    };
    // 2 s apart: c1 made 30 ok assigns, c2 restarted and made 2; 100 assigns timed,
    // 90 within 10 ms and 10 between 10 and 100 ms.
    let before = scrape(10, 3, 5, [0, 5, 10, 10]);
    let after = scrape(40, 13, 2, [0, 95, 110, 110]);
    let script = r#"
        const [before, after, done] = arguments;
        import('/ui/metrics.js').then((m) => {
          const a = m.parse(before);
          const b = m.parse(after);
          const q = m.METRICS.latencyQuantile;
          done({
            rate: m.rate(a, b, m.METRICS.assigns, 2, m.METRICS.assignsLabels),
            p99: m.quantileBetween(a, b, m.METRICS.assignLatency, q),
            idle: m.quantileBetween(a, a, m.METRICS.assignLatency, q),
          });
        }, (e) => done({ error: String(e) }));
    "#;
    let got = browser
        .client
        .execute_async(script, vec![before.into(), after.into()])
        .await
        .unwrap();
    assert_eq!(got["rate"], 16.0, "{got}");
    // The 99th of 100 observations is the 9th of the 10 in (0.01, 0.1]: 0.01 + 0.09 × 9/10.
    let p99 = got["p99"].as_f64().unwrap_or(f64::NAN);
    assert!((p99 - 0.091).abs() < 1e-9, "{got}");
    assert!(
        got["idle"].is_null(),
        "nothing observed gives no p99: {got}"
    );
    browser.close().await.unwrap();
}
