//! A minimal HTTP/1.0 GET for the servers' monitoring endpoints, so the
//! testkit needs no HTTP client crate.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a single request may take; readiness loops call this many times and
/// must not hang on a server that accepted the connection but never answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `127.0.0.1:port`.
pub async fn get(port: u16, path: &str) -> Result<HttpResponse> {
    get_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), path).await
}

/// `GET path` on `addr` (a container's address, say).
pub async fn get_at(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    tokio::time::timeout(REQUEST_TIMEOUT, get_inner(addr, path))
        .await
        .map_err(|_| anyhow!("GET {addr}{path}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("GET {addr}{path}"))
}

async fn get_inner(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // HTTP/1.0 without keep-alive: the server closes after the body.
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {status_line:?}"))?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r =
            parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: x\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "{\"a\":1}");
        assert!(parse(b"garbage").is_err());
    }

    #[tokio::test]
    async fn talks_to_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            socket
                .write_all(b"HTTP/1.0 200 OK\r\n\r\nok")
                .await
                .unwrap();
            request
        });
        let response = get(port, "/healthz?x=1").await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "ok");
        assert!(
            server
                .await
                .unwrap()
                .starts_with("GET /healthz?x=1 HTTP/1.0\r\n")
        );
    }
}
