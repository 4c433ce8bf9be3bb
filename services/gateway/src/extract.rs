//! What handlers take from a request, decoded through the protocol's types and their
//! [`Validate`] checks, every refusal an error envelope: a JSON body
//! ([`Body`], [`OptionalBody`]), a query string ([`Query`]) and an id in the path
//! ([`PathId`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use shoal_protocol::{ShoalError, Validate};

use crate::error::Rejection;

/// A JSON body, decoded and validated as the services decode a NATS request
/// ([`shoal_protocol::decode`]). An empty body reads as `{}`.
pub struct Body<T>(pub T);

/// As [`Body`], for routes where the body may be left out: an empty body is `None`.
pub struct OptionalBody<T>(pub Option<T>);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let bytes = json_bytes(req, state).await?;
        Ok(Body(shoal_protocol::decode(&bytes)?))
    }
}

impl<T, S> FromRequest<S> for OptionalBody<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let bytes = json_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(None));
        }
        Ok(OptionalBody(Some(shoal_protocol::decode(&bytes)?)))
    }
}

/// The body's bytes (at most [`shoal_protocol::MAX_PAYLOAD_BYTES`], the router's
/// body limit), which must be JSON when there are any.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Rejection> {
    let json = is_json(req.headers());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = Bytes::from_request(req, state).await?;
    if !bytes.is_empty() && !json {
        let got = content_type.map_or_else(|| "none".to_string(), |c| format!("{c:?}"));
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body must be JSON with Content-Type: application/json (got {got})"),
        ));
    }
    Ok(bytes)
}

/// `application/json`, or another `…+json` type, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A query string decoded into a protocol type and validated.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        Ok(Query(decode_query(parts.uri.query().unwrap_or_default())?))
    }
}

/// Decodes `query` (`a=1&b=x`) into `T` and validates it; a failure names the
/// parameter.
pub fn decode_query<T: DeserializeOwned + Validate>(query: &str) -> Result<T, ShoalError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ShoalError::bad_request(format!("query string: {inner}"))
        } else {
            ShoalError::bad_request(format!("query parameter `{path}`: {inner}"))
                .with_details(serde_json::json!({ "field": path }))
        }
    })?;
    value.validate()?;
    Ok(value)
}

/// The one id in a route's path (`/nodes/{id}`, `/assignments/{agent}`), checked as
/// Shoal checks every id: 1 to 128 ASCII letters, digits, `-` and `_`.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        let [(name, value)] = <[(String, String); 1]>::try_from(params).map_err(|params| {
            Rejection::from(ShoalError::internal(format!(
                "the route has {} path parameters, not one",
                params.len()
            )))
        })?;
        shoal_protocol::validate::id(&name, &value)?;
        Ok(PathId(value))
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocol::{ErrorCode, ListNodesRequest, NodeRole, NodeStatus};

    use super::*;

    #[test]
    fn queries_decode_into_protocol_types() {
        let q: ListNodesRequest = decode_query("role=leader&limit=5&label=a%3Db").unwrap();
        assert_eq!(q.role, Some(NodeRole::Leader));
        assert_eq!(q.status, None::<NodeStatus>);
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.label.as_deref(), Some("a=b"));
        assert_eq!(
            decode_query::<ListNodesRequest>("").unwrap(),
            ListNodesRequest::default()
        );
    }

    #[test]
    fn a_bad_query_parameter_is_named() {
        let e = decode_query::<ListNodesRequest>("role=captain").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message.starts_with("query parameter `role`"),
            "{}",
            e.message
        );
        assert_eq!(e.details.unwrap()["field"], "role");
        let e = decode_query::<ListNodesRequest>("limit=0").unwrap_err();
        assert!(e.message.contains("limit must be 1 to"), "{}", e.message);
        let e = decode_query::<ListNodesRequest>("limit=1&limit=2").unwrap_err();
        assert!(e.message.contains("duplicate"), "{}", e.message);
        // Given empty is given: an empty status is no status.
        let e = decode_query::<ListNodesRequest>("status=").unwrap_err();
        assert!(
            e.message.starts_with("query parameter `status`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
