//! Serving a process's metrics over a real nats-server and HTTP, and gathering
//! them: the metrics subject is a micro endpoint standard tooling lists, HTTP
//! answers GET and refuses the rest, an address in use is refused by name, and a
//! gather survives an instance that answers nonsense or nothing.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::service::{Service, endpoint::Endpoint};
use futures::StreamExt;
use shoal_protocol::{ClientError, ServiceKind, ShoalClient, ShoalError, Subjects};
use shoal_runtime::Endpoints;
use shoal_runtime::metrics::{GatherOptions, Metrics, MetricsError, ScrapeError, gather};
use shoal_testkit::{NatsServer, http, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Raw HTTP: the status line of the answer to `request`.
async fn status_line(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn metrics_are_served_on_nats_and_http_and_a_taken_address_is_refused() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let subjects = Subjects::default();
    let service = shoal_runtime::start_service(&client, ServiceKind::Registry, "r1")
        .await
        .unwrap();
    let mut metrics = Metrics::new(ServiceKind::Registry, &client);
    metrics.counter("things", "Things").inc_by(3);
    let outcomes = metrics.outcomes("requests", "Requests by outcome");
    outcomes.count::<()>(&Ok(()));
    outcomes.count::<()>(&Err(ShoalError::no_node("n9")));
    let port = ports::free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
    Endpoints::new(&service, &subjects, "r1", &tasks)
        .serve_metrics(metrics, Some(addr), &shutdown)
        .await
        .unwrap();

    let shoal = ShoalClient::new(client.clone(), subjects.clone());
    let text = shoal.metrics(ServiceKind::Registry, "r1").await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in [
        "shoal_registry_things_total 3",
        "shoal_registry_requests_total{outcome=\"ok\"} 1",
        "shoal_registry_requests_total{outcome=\"not_found\"} 1",
        "shoal_registry_requests_total{outcome=\"conflict\"} 0",
        "shoal_registry_nats_connected 1",
        "shoal_registry_nats_reconnects_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    // Standard tooling (`nats micro info`) lists the endpoint.
    let info = client
        .request("$SRV.INFO.shoal-registry", "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let listed = info["endpoints"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e["subject"] == subjects.metrics(ServiceKind::Registry, "r1")),
        "{info}"
    );

    let over_http = http::get(port, "/metrics").await.unwrap();
    assert_eq!(over_http.status, 200);
    assert!(over_http.body.contains("shoal_registry_things_total 3"));
    assert_eq!(http::get(port, "/other").await.unwrap().status, 404);
    let post = status_line(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(post, "HTTP/1.1 405 Method Not Allowed");
    let garbage = status_line(addr, "hello\r\n\r\n").await;
    assert_eq!(garbage, "HTTP/1.1 400 Bad Request");

    // A second process on the same address is told which flag to change.
    let other = shoal_runtime::start_service(&client, ServiceKind::Registry, "r2")
        .await
        .unwrap();
    let refused = Endpoints::new(&other, &subjects, "r2", &tasks)
        .serve_metrics(
            Metrics::new(ServiceKind::Registry, &client),
            Some(addr),
            &shutdown,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, MetricsError::Listen { .. }), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("--metrics-listen") && message.contains(&addr.to_string()),
        "{message}"
    );

    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}

/// A micro service named like a balancer whose metrics endpoint answers `body`.
async fn balancer_answering(client: &async_nats::Client, id: &str, body: &'static str) -> Service {
    let service = shoal_runtime::start_service(client, ServiceKind::Balancer, id)
        .await
        .unwrap();
    let mut endpoint: Endpoint = service
        .endpoint_builder()
        .name("metrics")
        .add(Subjects::default().metrics(ServiceKind::Balancer, id))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let _ = request.respond(Ok(body.into())).await;
        }
    });
    service
}

#[tokio::test]
async fn a_gather_reports_instances_that_answer_nonsense_or_nothing_and_serves_the_rest() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let good = "# TYPE shoal_balancer_things counter\nshoal_balancer_things_total 2\n# EOF\n";
    let _good = balancer_answering(&client, "b-good", good).await;
    let _bad = balancer_answering(&client, "b-bad", "not metrics at all").await;
    // Found through $SRV.PING, but no metrics endpoint.
    let _mute = shoal_runtime::start_service(&client, ServiceKind::Balancer, "b-mute")
        .await
        .unwrap();

    let options = GatherOptions {
        timeout: Duration::from_millis(500),
        ..GatherOptions::default()
    };
    let gathered = gather(&client, &Subjects::default(), &options)
        .await
        .unwrap();
    let text = &gathered.text;
    for line in [
        "shoal_balancer_things_total{instance=\"b-good\",service=\"balancer\"} 2",
        "shoal_up{instance=\"b-good\",service=\"balancer\"} 1",
        "shoal_up{instance=\"b-bad\",service=\"balancer\"} 0",
        "shoal_up{instance=\"b-mute\",service=\"balancer\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert_eq!(text.matches("# TYPE shoal_up gauge").count(), 1, "{text}");
    assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
    let outcome = |id: &str| {
        &gathered
            .scrapes
            .iter()
            .find(|s| s.instance_id == id)
            .unwrap()
            .outcome
    };
    assert!(outcome("b-good").is_ok());
    assert!(matches!(
        outcome("b-bad"),
        Err(ScrapeError::NotOpenMetrics(_))
    ));
    assert!(
        matches!(
            outcome("b-mute"),
            Err(ScrapeError::Request(ClientError::NoResponders { .. }))
        ),
        "{:?}",
        outcome("b-mute")
    );
}
