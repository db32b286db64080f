//! Who this test process is, to know what the kernel lets it do with ICMP.

#![allow(dead_code)] // each test file uses part of it

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap()
}

/// Whether `net.ipv4.ping_group_range` includes one of `groups`: then an ICMP datagram
/// socket is allowed.
pub fn range_includes(groups: &[u32]) -> bool {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let bounds: Vec<u32> = range
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    groups.iter().any(|g| (bounds[0]..=bounds[1]).contains(g))
}
