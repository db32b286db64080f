//! ICMP echo ("ping"), which answers for a machine whose firewall drops every TCP port (a
//! laptop), without a setuid binary and without `unsafe`:
//!
//! - an **ICMP datagram socket** (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`), which
//!   Linux allows any process whose group is in `net.ipv4.ping_group_range` (systemd
//!   ≥ 243 opens it to every group: Raspberry Pi OS, Debian, Ubuntu); the kernel sets the
//!   identifier, computes the checksum and hands this socket only its own replies;
//! - else a **raw ICMP socket**, for root or a process with `CAP_NET_RAW`; it sees every
//!   ICMP packet of the host, so replies are matched by identifier, sequence and sender.
//!
//! Both are IPv4 (an IPv6-only host is knocked by TCP instead, see `main.rs`).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::Presence;

/// How ICMP is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpSocket {
    /// `SOCK_DGRAM`: no privileges, when `ping_group_range` allows the process's group.
    Datagram,
    /// `SOCK_RAW`: root or `CAP_NET_RAW`.
    Raw,
}

impl IcmpSocket {
    fn socket_type(self) -> Type {
        match self {
            IcmpSocket::Datagram => Type::DGRAM,
            IcmpSocket::Raw => Type::RAW,
        }
    }
}

/// Why this process may not send ICMP echo at all, with what to change.
#[derive(Debug, thiserror::Error)]
#[error(
    "ICMP echo is not allowed for this process: an ICMP datagram socket was refused ({datagram}; {range}) and a raw socket too ({raw}; it needs root or CAP_NET_RAW)"
)]
pub struct IcmpNotAllowed {
    pub datagram: io::Error,
    pub raw: io::Error,
    /// `net.ipv4.ping_group_range` and this process's groups, in words.
    pub range: String,
}

/// Sends ICMP echo requests and waits for their replies, one at a time.
#[derive(Debug)]
pub struct Pinger {
    socket: tokio::net::UdpSocket,
    kind: IcmpSocket,
    /// Ours on a raw socket; on a datagram socket the kernel replaces it with its own.
    ident: u16,
    seq: AtomicU16,
}

/// Echo request and reply types (RFC 792).
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// What follows the header in our requests (echoed back).
const PAYLOAD: &[u8; 16] = b"pvbus presence\0\0";

impl Pinger {
    /// A datagram socket if allowed, else a raw one; neither: why, in words.
    pub fn open() -> Result<Pinger, IcmpNotAllowed> {
        let datagram = match Pinger::open_with(IcmpSocket::Datagram) {
            Ok(p) => return Ok(p),
            Err(e) => e,
        };
        let raw = match Pinger::open_with(IcmpSocket::Raw) {
            Ok(p) => return Ok(p),
            Err(e) => e,
        };
        Err(IcmpNotAllowed {
            datagram,
            raw,
            range: ping_group_range_in_words(),
        })
    }

    /// A pinger on this kind of socket only.
    pub fn open_with(kind: IcmpSocket) -> io::Result<Pinger> {
        let socket = Socket::new(Domain::IPV4, kind.socket_type(), Some(Protocol::ICMPV4))?;
        socket.set_nonblocking(true)?;
        // An ICMP socket reads and writes datagrams with IPv4 addresses, as a UDP socket
        // does; tokio's UdpSocket is the async wrapper for that, with no unsafe code.
        let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        Ok(Pinger {
            socket,
            kind,
            ident: (std::process::id() as u16) ^ 0x5076, // "Pv"
            seq: AtomicU16::new(0),
        })
    }

    pub fn kind(&self) -> IcmpSocket {
        self.kind
    }

    /// One echo request to `host`: up when its reply comes within `timeout`; down on
    /// timeout, or when the request cannot be sent (no route, host unreachable).
    pub async fn ping(&self, host: Ipv4Addr, timeout: Duration) -> Presence {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let request = echo_request(self.ident, seq);
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        if let Err(e) = tokio::time::timeout_at(
            deadline,
            self.socket.send_to(&request, SocketAddr::from((host, 0))),
        )
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        {
            tracing::debug!("ping {host}: cannot send: {e}");
            return Presence::Down;
        }
        let mut buf = [0u8; 1500];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await;
            match received {
                Err(_) => return Presence::Down,
                // An error queued on the socket (an earlier host unreachable): keep
                // waiting for this request's reply until the deadline.
                Ok(Err(e)) => tracing::debug!("ping {host}: {e}"),
                Ok(Ok((n, from))) => {
                    if from.ip() == host && self.is_our_reply(&buf[..n], seq) {
                        return Presence::Up(start.elapsed());
                    }
                }
            }
        }
    }

    /// Whether `packet` is the echo reply to our request `seq`.
    fn is_our_reply(&self, packet: &[u8], seq: u16) -> bool {
        let icmp = match self.kind {
            IcmpSocket::Datagram => packet,
            // A raw socket hands over the IPv4 header too.
            IcmpSocket::Raw => {
                let header = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
                packet.get(header..).unwrap_or_default()
            }
        };
        if icmp.len() < 8 || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
            return false;
        }
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        let reply_seq = u16::from_be_bytes([icmp[6], icmp[7]]);
        // On a datagram socket the kernel chose the identifier and only gives us our
        // own replies.
        reply_seq == seq && (self.kind == IcmpSocket::Datagram || ident == self.ident)
    }
}

/// An echo request: type, code, checksum, identifier, sequence, payload.
fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
/// the 16-bit words.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `net.ipv4.ping_group_range` and this process's groups, to say why a datagram socket
/// was refused.
fn ping_group_range_in_words() -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".into());
    let groups = process_groups();
    format!(
        "net.ipv4.ping_group_range is \"{range}\" and this process's groups are {groups:?}; allow them with sysctl net.ipv4.ping_group_range=\"0 2147483647\""
    )
}

/// The effective group and the supplementary groups of this process, from /proc.
pub fn process_groups() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // `Gid:` is real, effective, saved, filesystem.
    let mut groups: Vec<u32> = field("Gid:").into_iter().skip(1).take(1).collect();
    for g in field("Groups:") {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_has_a_valid_checksum() {
        let p = echo_request(0x1234, 7);
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        // Summing a packet with its checksum in place gives 0xffff, i.e. 0 complemented.
        assert_eq!(checksum(&p), 0);
        // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }
}
