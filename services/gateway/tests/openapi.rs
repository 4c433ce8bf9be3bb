//! The OpenAPI document against the live gateway: the document served is the one
//! committed (`schemas/openapi.json`), and every operation it lists is served
//! (answered by its route, not by the unknown-route or wrong-method fallback).

mod common;

use std::time::Duration;

use common::Stack;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Fills a documented path's parameters with an id no test creates.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "probe-7" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_is_served_and_the_document_is_the_committed_one() {
    let stack = Stack::start().await.unwrap();
    let served = stack
        .ok(Method::GET, "/api/openapi.json", None)
        .await
        .unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        served == committed,
        "the served document differs from schemas/openapi.json: run cargo run -p shoal-gateway --bin shoal-openapi -- write"
    );
    assert_eq!(served["openapi"], "3.1.0");

    let mut operations = 0;
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            operations += 1;
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let url = stack.url(&concrete(path));
            let response = stack
                .http
                .request(method.clone(), &url)
                .timeout(Duration::from_secs(15))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let what = format!("{method} {path}");
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{what} is documented but not served"
            );
            if response
                .headers()
                .get("content-type")
                .is_some_and(|t| t == "text/event-stream")
            {
                continue;
            }
            let (_, body) = common::read(response).await.unwrap();
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.starts_with("no route"),
                "{what} is documented but not served: {body}"
            );
        }
    }
    assert_eq!(operations, shoal_gateway::routes::table().len());
}
