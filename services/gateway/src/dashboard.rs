//! The dashboard: `/` and `/ui/*`, static files embedded in the binary (no build
//! step, nothing fetched from elsewhere: the page works offline).
//!
//! The files' names carry no content hash, so every response says `no-cache` with an
//! `ETag` computed at compile time: a browser revalidates on each load and gets a
//! `304 Not Modified` while the binary is the same, and the new files as soon as the
//! gateway is upgraded.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shoal_protocol::ShoalError;

use crate::{ApiError, AppState};

/// One embedded file.
struct Asset {
    /// Its path under `/ui/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Quoted, as the `ETag` header carries it.
    etag: &'static str,
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../static/", $path)),
            etag: {
                const HEX: [u8; 18] = etag(include_bytes!(concat!("../static/", $path)));
                match std::str::from_utf8(&HEX) {
                    Ok(s) => s,
                    Err(_) => panic!("an etag is ASCII"),
                }
            },
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

static INDEX: Asset = asset!("index.html", HTML);

static ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("charts.js", JS),
    asset!("metrics.js", JS),
    asset!("views.js", JS),
    asset!("favicon.svg", SVG),
];

/// The page may load only the gateway's own files and talk only to the gateway.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// `/` (the page) and `/ui/{file}` (its scripts, styles and icon).
pub fn routes() -> Router<AppState> {
    router()
}

fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(ui_file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn ui_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset, &headers),
        None => ApiError(ShoalError::not_found(format!(
            "the dashboard has no file /ui/{path}"
        )))
        .into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_static(asset.etag);
    let mut response = if matches_etag(request, asset.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type == HTML {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

/// Whether the request's `If-None-Match` names `etag` (or `*`).
fn matches_etag(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// `"` + 16 hex digits of the FNV-1a hash of `bytes` + `"`, at compile time.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        out[1 + d] = digits[((hash >> (60 - 4 * d)) & 0xf) as usize];
        d += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    #[tokio::test]
    async fn the_page_is_html_revalidated_and_confined_to_the_gateway() {
        let response = get("/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, header::CONTENT_TYPE), HTML);
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header_of(&response, header::ETAG), INDEX.etag);
        assert!(
            header_of(&response, header::CONTENT_SECURITY_POLICY).contains("default-src 'self'")
        );
        assert!(text(response).await.contains("<title>Shoal</title>"));
    }

    #[tokio::test]
    async fn every_file_the_page_refers_to_is_served_with_its_type() {
        // What index.html links and what the modules import, by name.
        let mut referred = Vec::new();
        for asset in std::iter::once(&INDEX).chain(ASSETS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for (i, _) in text.match_indices("/ui/") {
                let name: String = text[i + 4..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                referred.push(name);
            }
            for (i, _) in text.match_indices("from './") {
                let name: String = text[i + 8..].chars().take_while(|c| *c != '\'').collect();
                referred.push(name);
            }
        }
        let served: std::collections::BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
        let named: std::collections::BTreeSet<&str> = referred.iter().map(String::as_str).collect();
        assert_eq!(named, served, "files served and files the page uses differ");
        for name in referred {
            let response = get(&format!("/ui/{name}"), None).await;
            assert_eq!(response.status(), StatusCode::OK, "/ui/{name}");
            let expected = match name.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                other => panic!("unexpected file type {other:?} of {name}"),
            };
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                expected,
                "{name}"
            );
            assert_eq!(
                header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
                "nosniff"
            );
        }
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_sent_again() {
        let first = get("/ui/app.js", None).await;
        let tag = header_of(&first, header::ETAG).to_string();
        assert_eq!(tag.len(), 18);
        let again = get("/ui/app.js", Some(&format!("\"x\", W/{tag}"))).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&again, header::ETAG), tag);
        assert!(text(again).await.is_empty());
        let other = get("/ui/app.js", Some("\"0000000000000000\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
        // Files differ, so do their tags.
        assert_ne!(get("/ui/app.css", None).await.headers()[header::ETAG], tag);
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_not_found_envelope() {
        let response = get("/ui/nope.js", None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(
            body["error"]["message"],
            "the dashboard has no file /ui/nope.js"
        );
    }
}
