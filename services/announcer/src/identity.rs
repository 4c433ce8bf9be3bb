//! Who this node is: configured values, or what the host says.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use chrono::{DateTime, Utc};
use shoal_protocol::{Announce, NodeRole};

/// Everything an announce carries. `hostname` and `ip_address` are re-detected while
/// the node runs unless they were configured, so a changed address is re-announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub id: String,
    pub hostname: String,
    pub ip_address: String,
    pub port: u16,
    pub role: NodeRole,
    pub services: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub max_agents: u32,
    pub version: String,
    pub features: Vec<String>,
    pub started_at: DateTime<Utc>,
}

impl Identity {
    pub fn announce(&self) -> Announce {
        Announce {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            ip_address: self.ip_address.clone(),
            port: self.port,
            role: self.role,
            services: self.services.clone(),
            labels: self.labels.clone(),
            max_agents: self.max_agents,
            version: self.version.clone(),
            features: self.features.clone(),
            started_at: self.started_at,
            // Judged at the registry's --heartbeat-interval, which this one's must match.
            heartbeat_interval: None,
        }
    }
}

/// A node id usable as a subject token and a KV key: characters other than ASCII
/// letters, digits, `-` and `_` become `-` (a host name `a.example.com` gives
/// `a-example-com`).
pub fn id_from_hostname(hostname: &str) -> String {
    let id: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() {
        "localhost".to_string()
    } else {
        id
    }
}

/// The address other hosts would reach this one on: the source address the kernel
/// picks for an outside route (no packet is sent), or loopback without a route.
pub fn detect_ip() -> String {
    let probe = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect("10.255.255.255:1")?;
        Ok(socket.local_addr()?.ip())
    };
    probe()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .to_string()
}

/// A `--labels` or `--role` value that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("label {0:?} is not key=value")]
    Label(String),
    #[error("unknown role {0:?}: expected one of leader, worker, replica, standby")]
    Role(String),
}

/// Parses `key=value` label flags.
pub fn parse_label(text: &str) -> Result<(String, String), FlagError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(FlagError::Label(text.to_string())),
    }
}

/// Parses a role name (`leader`, `worker`, `replica`, `standby`).
pub fn parse_role(text: &str) -> Result<NodeRole, FlagError> {
    NodeRole::ALL
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| FlagError::Role(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_valid_ids() {
        assert_eq!(id_from_hostname("a.example.com"), "a-example-com");
        assert_eq!(id_from_hostname("node_7"), "node_7");
        assert_eq!(id_from_hostname(""), "localhost");
        assert!(shoal_protocol::validate::id("id", &id_from_hostname("x y*z>")).is_ok());
    }

    #[test]
    fn labels_and_roles_parse() {
        assert_eq!(parse_label("zone=eu-1"), Ok(("zone".into(), "eu-1".into())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
        assert_eq!(parse_role("standby"), Ok(NodeRole::Standby));
        assert!(
            parse_role("boss")
                .unwrap_err()
                .to_string()
                .contains("unknown role")
        );
    }

    #[test]
    fn detected_ip_parses() {
        assert!(detect_ip().parse::<IpAddr>().is_ok());
    }
}
