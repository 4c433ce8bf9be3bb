//! Bad input on every route answers a 4xx error envelope that names the problem:
//! bad JSON, wrong types, unknown enum values, bad ids, bad query parameters, the
//! wrong content type, a body too large, unknown routes and methods, and things
//! that do not exist.

mod common;

use common::{Stack, envelope_message, read};
use reqwest::{Method, StatusCode};

/// One bad request and what it must answer.
struct Case {
    method: Method,
    path: &'static str,
    /// Content type and body.
    body: Option<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
    /// Words the message must contain.
    says: &'static str,
}

fn case(
    method: Method,
    path: &'static str,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        method,
        path,
        body: None,
        status: StatusCode::from_u16(status).unwrap(),
        code,
        says,
    }
}

fn json_case(
    method: Method,
    path: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Case {
    Case {
        body: Some(("application/json", body.to_string())),
        ..case(method, path, status, code, says)
    }
}

fn cases() -> Vec<Case> {
    use Method as M;
    let too_big = format!(
        r#"{{"id":"n1","hostname":"{}","max_agents":1}}"#,
        "x".repeat(shoal_protocol::MAX_PAYLOAD_BYTES)
    );
    vec![
        // Query strings.
        case(
            M::GET,
            "/api/cluster/nodes?role=captain",
            400,
            "bad_request",
            "`role`",
        ),
        case(
            M::GET,
            "/api/cluster/nodes?status=asleep",
            400,
            "bad_request",
            "unknown variant",
        ),
        case(
            M::GET,
            "/api/cluster/nodes?limit=0",
            400,
            "bad_request",
            "limit",
        ),
        case(
            M::GET,
            "/api/cluster/nodes?limit=lots",
            400,
            "bad_request",
            "`limit`",
        ),
        case(
            M::GET,
            "/api/cluster/nodes?after=a.b",
            400,
            "bad_request",
            "after",
        ),
        case(
            M::GET,
            "/api/cluster/assignments?status=lost",
            400,
            "bad_request",
            "`status`",
        ),
        case(
            M::GET,
            "/api/cluster/assignments?node_id=a%20b",
            400,
            "bad_request",
            "node_id",
        ),
        case(
            M::GET,
            "/api/cluster/assignments?group=a%20b",
            400,
            "bad_request",
            "group",
        ),
        case(
            M::GET,
            "/api/cluster/history?since=yesterday",
            400,
            "bad_request",
            "RFC 3339",
        ),
        case(
            M::GET,
            "/api/cluster/history?limit=10001",
            400,
            "bad_request",
            "limit",
        ),
        case(
            M::GET,
            "/api/cluster/history?agent=a*",
            400,
            "bad_request",
            "agent",
        ),
        case(
            M::GET,
            "/api/cluster/history?before=2.x",
            400,
            "bad_request",
            "before",
        ),
        case(
            M::GET,
            "/api/cluster/history?before=0",
            400,
            "bad_request",
            "log_seq at least 1",
        ),
        case(
            M::POST,
            "/api/cluster/balance?strategy=fastest",
            400,
            "bad_request",
            "round_robin",
        ),
        case(
            M::POST,
            "/api/cluster/balance",
            400,
            "bad_request",
            "missing field `strategy`",
        ),
        // Bodies.
        json_case(
            M::POST,
            "/api/cluster/nodes",
            r#"{"id": "n1""#,
            400,
            "bad_request",
            "malformed JSON",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes",
            r#"["n1"]"#,
            400,
            "bad_request",
            "JSON object",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes",
            r#"{"hostname":"h","max_agents":1}"#,
            400,
            "bad_request",
            "missing field `id`",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes",
            r#"{"id":"a.b","hostname":"h","max_agents":1}"#,
            400,
            "bad_request",
            "id \"a.b\"",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes",
            r#"{"id":"n1","hostname":"h","max_agents":-1}"#,
            400,
            "bad_request",
            "`max_agents`",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes",
            r#"{"id":"n1","hostname":"h","max_agents":1,"role":"boss"}"#,
            400,
            "bad_request",
            "`role`",
        ),
        Case {
            body: Some((
                "text/plain",
                r#"{"id":"n1","hostname":"h","max_agents":1}"#.into(),
            )),
            ..case(
                M::POST,
                "/api/cluster/nodes",
                415,
                "bad_request",
                "Content-Type: application/json",
            )
        },
        Case {
            body: Some(("application/json", too_big)),
            ..case(
                M::POST,
                "/api/cluster/nodes",
                413,
                "bad_request",
                "over the limit",
            )
        },
        json_case(
            M::POST,
            "/api/cluster/nodes/n1",
            r#"{"cpu_usage":101,"memory_usage":1,"disk_usage":1,"load_average":1}"#,
            400,
            "bad_request",
            "cpu_usage",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes/n1",
            r#"{"cpu_usage":1}"#,
            400,
            "bad_request",
            "missing field",
        ),
        json_case(
            M::POST,
            "/api/cluster/assignments",
            r#"{"agent_name":""}"#,
            400,
            "bad_request",
            "agent_name",
        ),
        json_case(
            M::POST,
            "/api/cluster/assignments",
            r#"{"agent_name":"a1","resources":{"cpu":150}}"#,
            400,
            "bad_request",
            "resources.cpu",
        ),
        json_case(
            M::POST,
            "/api/cluster/assignments",
            r#"{"agent_name":"a1","spread_by":"zone"}"#,
            400,
            "bad_request",
            "spread_by needs a group",
        ),
        json_case(
            M::POST,
            "/api/cluster/assignments",
            r#"{"agent_name":"a1","group":"g 1","anti_affinity":true}"#,
            400,
            "bad_request",
            "group",
        ),
        json_case(
            M::POST,
            "/api/cluster/assignments/a1/move",
            r#"{"node_id":7}"#,
            400,
            "bad_request",
            "`node_id`",
        ),
        json_case(
            M::POST,
            "/api/cluster/leader",
            r#"{"coordinator_id":"a b"}"#,
            400,
            "bad_request",
            "coordinator_id",
        ),
        // Ids in the path.
        case(
            M::GET,
            "/api/cluster/nodes/a.b",
            400,
            "bad_request",
            "id \"a.b\"",
        ),
        case(
            M::GET,
            "/api/cluster/nodes/%FF",
            400,
            "bad_request",
            "UTF-8",
        ),
        case(
            M::DELETE,
            "/api/cluster/nodes/a*b",
            400,
            "bad_request",
            "id",
        ),
        case(
            M::POST,
            "/api/cluster/nodes/n%20x/drain",
            400,
            "bad_request",
            "id",
        ),
        case(
            M::GET,
            "/api/cluster/assignments/a%2Eb",
            400,
            "bad_request",
            "agent",
        ),
        case(
            M::DELETE,
            "/api/cluster/assignments/a+b",
            400,
            "bad_request",
            "agent",
        ),
        // Things that do not exist.
        case(
            M::GET,
            "/api/cluster/nodes/ghost",
            404,
            "not_found",
            "ghost",
        ),
        case(
            M::DELETE,
            "/api/cluster/nodes/ghost",
            404,
            "not_found",
            "ghost",
        ),
        case(
            M::POST,
            "/api/cluster/nodes/ghost/undrain",
            404,
            "not_found",
            "ghost",
        ),
        json_case(
            M::POST,
            "/api/cluster/nodes/ghost",
            r#"{"cpu_usage":1,"memory_usage":1,"disk_usage":1,"load_average":1}"#,
            404,
            "not_found",
            "ghost",
        ),
        case(
            M::GET,
            "/api/cluster/assignments/ghost",
            404,
            "not_found",
            "ghost",
        ),
        case(
            M::DELETE,
            "/api/cluster/assignments/ghost",
            404,
            "not_found",
            "ghost",
        ),
        // Routes and methods.
        case(
            M::GET,
            "/api/cluster/nope",
            404,
            "not_found",
            "no route GET /api/cluster/nope",
        ),
        case(
            M::PUT,
            "/api/cluster/nodes",
            405,
            "bad_request",
            "does not take PUT",
        ),
        case(M::DELETE, "/", 405, "bad_request", "does not take DELETE"),
        case(
            M::DELETE,
            "/api/cluster/stats",
            405,
            "bad_request",
            "does not take DELETE",
        ),
    ]
}

#[tokio::test]
async fn every_route_refuses_bad_input_with_an_envelope() {
    let stack = Stack::start().await.unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let mut request = stack
            .http
            .request(case.method.clone(), stack.url(case.path));
        if let Some((content_type, body)) = &case.body {
            request = request
                .header("content-type", *content_type)
                .body(body.clone());
        }
        let what = format!("{} {}", case.method, case.path);
        let response = request.send().await.unwrap();
        let allow = response.headers().get("allow").cloned();
        let json_type = response
            .headers()
            .get("content-type")
            .is_some_and(|t| t == "application/json");
        let (status, body) = read(response).await.unwrap();
        if status != case.status || body["error"]["code"] != case.code || !json_type {
            failures.push(format!("{what}: {status} {body}"));
            continue;
        }
        let message = envelope_message(&body, case.code);
        if !message.contains(case.says) {
            failures.push(format!(
                "{what}: message {message:?} does not say {:?}",
                case.says
            ));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED && allow.is_none() {
            failures.push(format!("{what}: 405 without an Allow header"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
