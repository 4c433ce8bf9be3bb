//! The OpenAPI 3.1 document, built from the route table ([`crate::routes::table`])
//! and the schemas of the protocol types the handlers decode and answer (schemars
//! emits JSON Schema 2020-12, which OpenAPI 3.1 takes as it is). Served at
//! `/api/openapi.json`, committed as `schemas/openapi.json` and checked for drift
//! by `shoal-openapi check`.

use std::path::Path;
use std::sync::LazyLock;

use axum::http::StatusCode;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use shoal_protocol::ErrorEnvelope;

use crate::routes::spec::{Reply, Route};
use crate::routes::table;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
    &DOCUMENT
}

/// Builds the document from the route table.
pub fn build() -> Value {
    let mut generator = shoal_protocol::catalogue::schema_settings()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let envelope = generator.subschema_for::<ErrorEnvelope>();
    let mut paths = Map::new();
    let mut error_statuses = Vec::new();
    for route in table() {
        error_statuses.extend(route.error_statuses());
        let operation = operation(&route, &mut generator);
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    error_statuses.sort_unstable();
    error_statuses.dedup();
    let responses: Map<String, Value> = error_statuses
        .into_iter()
        .map(|status| (error_name(status), error_response(status, &envelope)))
        .collect();
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Shoal HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Shoal's control plane over HTTP, served by shoal-gateway (default \
                http://127.0.0.1:8151): the REST API of the systems Shoal replaces \
                (`/api/cluster/...`), health, live events and this document. Every failure is \
                `{\"error\": {\"code\", \"message\", \"details\"}}` with the HTTP status its \
                code stands for; 503 answers carry Retry-After.",
        },
        "tags": [
            { "name": "nodes", "description": "membership: nodes, registration, heartbeats, draining" },
            { "name": "assignments", "description": "agents placed on nodes, and the history of every change" },
            { "name": "cluster", "description": "statistics, the coordinator leader, the balancing strategy" },
            { "name": "health", "description": "the control plane's health" },
            { "name": "events", "description": "live events" },
            { "name": "meta", "description": "this document" },
        ],
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "responses": responses,
        },
    })
}

fn operation(route: &Route, g: &mut SchemaGenerator) -> Value {
    let doc = &route.doc;
    let mut parameters: Vec<Value> = route
        .path_params()
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": path_param_description(name),
                "schema": {
                    "type": "string",
                    "pattern": shoal_protocol::validate::ID_PATTERN,
                },
            })
        })
        .collect();
    if let Some(query) = doc.query {
        let schema = query(g);
        parameters.extend(query_parameters(&schema, g));
    }
    let mut responses = Map::new();
    responses.insert("200".into(), reply(&doc.reply, doc.summary, g));
    for (status, schema) in &doc.other_replies {
        responses.insert(
            status.as_u16().to_string(),
            json!({
                "description": status.canonical_reason().unwrap_or_default(),
                "content": { "application/json": { "schema": schema(g) } },
            }),
        );
    }
    for status in route.error_statuses() {
        responses.insert(
            status.as_u16().to_string(),
            json!({ "$ref": format!("#/components/responses/{}", error_name(status)) }),
        );
    }
    let mut op = json!({
        "operationId": doc.operation_id,
        "tags": [doc.tag],
        "summary": doc.summary,
        "responses": responses,
    });
    if let Some(description) = doc.description {
        op["description"] = description.into();
    }
    if !parameters.is_empty() {
        op["parameters"] = parameters.into();
    }
    if let Some((schema, optional)) = doc.body {
        op["requestBody"] = json!({
            "required": !optional,
            "content": { "application/json": { "schema": schema(g) } },
        });
    }
    op
}

fn path_param_description(name: &str) -> String {
    match name {
        "id" => "the node's id".into(),
        "agent" => "the agent's name".into(),
        other => format!("the {other}"),
    }
}

fn reply(reply: &Reply, summary: &str, g: &mut SchemaGenerator) -> Value {
    match reply {
        Reply::Json(schema) => json!({
            "description": summary,
            "content": { "application/json": { "schema": schema(g) } },
        }),
        Reply::Text {
            content_type,
            description,
        } => json!({
            "description": description,
            "content": { *content_type: { "schema": { "type": "string" } } },
        }),
    }
}

/// One query parameter per property of the query type's schema (a `$ref` to its
/// definition), each optional unless the type requires it. A parameter is never
/// null: `Option`'s `null` alternative is left out.
fn query_parameters(schema: &Schema, g: &SchemaGenerator) -> Vec<Value> {
    let definition = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
        .and_then(|name| g.definitions().get(name))
        .unwrap_or(schema.as_value());
    let required: Vec<&str> = definition
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = definition.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = non_null(property.clone());
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"));
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// `schema` without its `null` alternative (`"type": ["string", "null"]` →
/// `"type": "string"`, `anyOf: [X, {"type": "null"}]` → X, keeping the schema's own
/// keywords such as its description).
fn non_null(schema: Value) -> Value {
    let Value::Object(mut object) = schema else {
        return schema;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(any_of)) = object.remove("anyOf") {
        let mut rest: Vec<Value> = any_of
            .into_iter()
            .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        match (rest.len(), rest.first()) {
            (1, Some(Value::Object(_))) => {
                if let Value::Object(only) = rest.remove(0) {
                    for (k, v) in only {
                        object.entry(k).or_insert(v);
                    }
                }
            }
            _ => {
                object.insert("anyOf".into(), Value::Array(rest));
            }
        }
    }
    Value::Object(object)
}

fn error_name(status: StatusCode) -> String {
    format!("Error{}", status.as_u16())
}

fn error_response(status: StatusCode, envelope: &Schema) -> Value {
    let description = match status {
        StatusCode::BAD_REQUEST => {
            "Bad input: a malformed id, query parameter or body; the message names it."
        }
        StatusCode::NOT_FOUND => "No such node, agent or coordinator (or no such route).",
        StatusCode::METHOD_NOT_ALLOWED => "The path does not take this method.",
        StatusCode::CONFLICT => {
            "The request contradicts the cluster's state (`conflict`), or no node can take \
             the agent (`no_capacity`)."
        }
        StatusCode::PAYLOAD_TOO_LARGE => "The body is over the limit (65,536 bytes).",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "The body is not JSON: send Content-Type: application/json."
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "A service, the coordinator leader or JetStream cannot be reached right now \
             (`unavailable`, `not_leader`): retry after Retry-After seconds."
        }
        _ => "An unexpected failure (`internal`).",
    };
    let mut response = json!({
        "description": description,
        "content": { "application/json": { "schema": envelope } },
    });
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response["headers"] = json!({
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": { "type": "integer" },
            },
        });
    }
    response
}

/// The document as committed: pretty JSON with a final newline.
pub fn text() -> String {
    let mut text = serde_json::to_string_pretty(document()).expect("JSON values serialise");
    text.push('\n');
    text
}

/// Writes the document to `path`.
pub fn write(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, text())
}

/// Whether `path` holds the document as the route table builds it now.
pub fn check(path: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_to_string(path)? == text())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_route_is_documented_once_and_nothing_else_is() {
        let doc = build();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                documented.insert((method.to_uppercase(), path.clone()));
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
        let routes: BTreeSet<(String, String)> = table()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(routes.len(), table().len(), "a route is in the table twice");
        assert_eq!(documented, routes);
        let ids: BTreeSet<&str> = table().iter().map(|r| r.doc.operation_id).collect();
        assert_eq!(ids.len(), table().len(), "operation ids must be unique");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = build();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let responses = doc["components"]["responses"].as_object().unwrap();
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = part.split('"').next().unwrap();
            let found = match target.rsplit_once('/') {
                Some(("#/components/schemas", name)) => schemas.contains_key(name),
                Some(("#/components/responses", name)) => responses.contains_key(name),
                _ => false,
            };
            assert!(found, "{target} does not resolve");
        }
    }

    #[test]
    fn query_parameters_come_from_the_protocol_types_without_null() {
        let doc = build();
        let params = doc["paths"]["/api/cluster/nodes"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let role = params.iter().find(|p| p["name"] == "role").unwrap();
        assert_eq!(role["in"], "query");
        assert_eq!(role["required"], false);
        assert_eq!(role["schema"]["$ref"], "#/components/schemas/NodeRole");
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["type"], "integer", "{limit}");
        assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
        let balance = &doc["paths"]["/api/cluster/balance"]["post"]["parameters"][0];
        assert_eq!(balance["name"], "strategy");
        assert_eq!(balance["required"], true);
    }

    #[test]
    fn non_null_drops_only_the_null_alternative() {
        assert_eq!(
            non_null(json!({ "type": ["integer", "null"], "minimum": 1 })),
            json!({ "type": "integer", "minimum": 1 })
        );
        assert_eq!(
            non_null(
                json!({ "anyOf": [{ "$ref": "#/x" }, { "type": "null" }], "description": "d" })
            ),
            json!({ "$ref": "#/x", "description": "d" })
        );
        let two = json!({ "anyOf": [{ "type": "string" }, { "type": "integer" }] });
        assert_eq!(non_null(two.clone()), two);
    }
}
