//! Shared setup for the gateway's tests: a real control plane (nats-server,
//! Postgres, registry, balancer, coordinator) with a real `shoal-gateway` in front
//! of it, and a small HTTP client that reads Shoal's JSON and error envelopes.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use shoal_testkit::ports::free_port;
use shoal_testkit::{NatsServer, Postgres, ServiceProcess, binary, wait_for};

/// For things that must happen on a loaded 2-core machine.
pub const LONG: Duration = Duration::from_secs(30);

/// A whole control plane and a gateway.
pub struct Stack {
    // Declared first, dropped first: the services go before their servers.
    pub gateway: ServiceProcess,
    pub registry: ServiceProcess,
    pub balancer: ServiceProcess,
    pub coordinator: ServiceProcess,
    pub pg: Postgres,
    pub nats: NatsServer,
    pub base: String,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Result<Stack> {
        let nats = NatsServer::start().await?;
        let pg = Postgres::start().await?;
        let db = pg.create_database().await?;
        let url = nats.url();
        let registry = service(&url, "shoal-registry", "registry-1", &[])?;
        let balancer = service(&url, "shoal-balancer", "balancer-1", &[])?;
        let coordinator = service(
            &url,
            "shoal-coordinator",
            "coordinator-1",
            &[("SHOAL_DATABASE_URL", db.as_str())],
        )?;
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let gateway = service(
            &url,
            "shoal-gateway",
            "gateway-1",
            &[("SHOAL_HTTP_LISTEN", listen.as_str())],
        )?;
        gateway.wait_for_log("gateway ready", LONG).await?;
        let stack = Stack {
            gateway,
            registry,
            balancer,
            coordinator,
            pg,
            nats,
            base: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?,
        };
        stack.wait_healthy().await?;
        Ok(stack)
    }

    /// Waits until `/api/cluster/health` answers 200: every service live, a leader,
    /// JetStream.
    pub async fn wait_healthy(&self) -> Result<Value> {
        wait_for(
            "the gateway to report the cluster healthy",
            LONG,
            || async {
                let (status, body) = self.get("/api/cluster/health").await.ok()?;
                (status == StatusCode::OK).then_some(body)
            },
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request (a JSON body, if any, with its content type) and reads the
    /// answer's status and JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        read(response).await
    }

    pub async fn get(&self, path: &str) -> Result<(StatusCode, Value)> {
        self.send(Method::GET, path, None).await
    }

    /// A request that must succeed (200): its JSON.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, json) = self.send(method.clone(), path, body).await?;
        if status != StatusCode::OK {
            bail!("{method} {path} answered {status}: {json}");
        }
        Ok(json)
    }
}

/// The status and JSON of a response; an answer that is not JSON is an error.
pub async fn read(response: reqwest::Response) -> Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response.text().await?;
    let json = serde_json::from_str(&text)
        .with_context(|| format!("a {status} answer that is not JSON: {text:?}"))?;
    Ok((status, json))
}

/// A Shoal service process named `id` against `nats_url`.
pub fn service(
    nats_url: &str,
    bin: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> Result<ServiceProcess> {
    let mut envs = vec![
        ("SHOAL_NATS_URL".to_string(), nats_url.to_string()),
        ("SHOAL_INSTANCE_ID".to_string(), id.to_string()),
    ];
    envs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ServiceProcess::spawn(id, &binary(bin)?, &[], &envs)
}

/// Asserts `json` is an error envelope with `code`, and returns its message.
pub fn envelope_message(json: &Value, code: &str) -> String {
    assert_eq!(json["error"]["code"], code, "not a {code} envelope: {json}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an envelope without a message: {json}");
    message.to_string()
}
