//! Free loopback ports for the processes a test starts.
//!
//! A port found free here can still be taken by someone else before the server
//! binds it; the starters in this crate retry with new ports when that happens.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports this process has already handed out. The kernel readily gives a
/// just-released port to the next `bind(0)`, and tests in one `cargo test`
/// process run side by side, so without this two servers of one process could
/// be told the same port.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free TCP ports on 127.0.0.1 (a cluster needs them all at once).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Every listener stays bound until all `n` ports are chosen, so the kernel
    // cannot give the same port twice within this call.
    let mut held = Vec::new();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 for a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        held.push(listener);
        assert!(held.len() < 10_000, "no free loopback port found");
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(20);
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 20);
        assert!(!distinct.contains(&free_port()));
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("a free port is bindable");
        }
    }
}
