//! Wake-on-LAN and presence, for rules such as PvMonit's "keep the internet box on until
//! no computer answers after 19 h", and for the cold backup (waking a backup machine
//! that does not start on power).
//!
//! Layout:
//! - [`Mac`] and [`magic_packet`]/[`wake`]: the wake-on-LAN magic packet, sent by UDP
//!   broadcast;
//! - [`ping`]: whether a host answers ICMP echo — what PvMonit's rule asked ("while a
//!   computer answers ping"), and what answers for a laptop whose firewall drops every
//!   TCP port — on an unprivileged ICMP datagram socket, else a raw one (root);
//! - [`knock`]: whether a host answers a TCP connection attempt, where a refusal counts
//!   as an answer (the host is up, the port closed): no privileges needed, for hosts that
//!   drop ping, and the fallback when this process may not send ICMP;
//! - `main.rs`: the `pvbus-wol` plugin (hosts' presence as devices, `wake/set` commands).

pub mod ping;

pub use ping::{IcmpNotAllowed, IcmpSocket, Pinger};

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A MAC address (`aa:bb:cc:dd:ee:ff` or with `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a MAC address such as aa:bb:cc:dd:ee:ff")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let bad = || BadMac(s.to_string());
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Six 0xFF bytes, then the MAC sixteen times.
pub fn magic_packet(mac: Mac) -> [u8; 102] {
    let mut p = [0xFFu8; 102];
    for chunk in p[6..].chunks_mut(6) {
        chunk.copy_from_slice(&mac.0);
    }
    p
}

/// Sends the magic packet to `broadcast` (usually `255.255.255.255:9`, or the LAN's
/// broadcast address).
pub fn wake(mac: Mac, broadcast: SocketAddr) -> std::io::Result<()> {
    let bind: SocketAddr = if broadcast.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_broadcast(true)?;
    socket.send_to(&magic_packet(mac), broadcast)?;
    Ok(())
}

/// What a knock found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Presence {
    /// The host answered (accepted or refused the connection) after this long.
    Up(Duration),
    Down,
}

/// Knocks on `addr` (TCP): up when the connection is accepted or refused before
/// `timeout`; down on timeout, unreachable host or network.
pub async fn knock(addr: SocketAddr, timeout: Duration) -> Presence {
    let start = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Presence::Up(start.elapsed()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Presence::Up(start.elapsed())
        }
        _ => Presence::Down,
    }
}

/// A local address that never answers a connection attempt, for tests: a listener with
/// a backlog of 0 whose queue is full, so that the kernel drops further SYNs (as a host
/// that is off, or firewalled to silence, does). Silent while the value lives.
#[doc(hidden)]
pub struct SilentHost {
    pub addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _held: Vec<std::net::TcpStream>,
}

#[doc(hidden)]
pub async fn silent_host() -> SilentHost {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("address");
    let mut held = Vec::new();
    // Fill the queue: connections complete until it is full, then hang.
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    SilentHost {
        addr,
        _listener: listener,
        _held: held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_the_magic_packet() {
        let mac: Mac = "AA-bb-cc-00-11-22".parse().unwrap();
        assert_eq!(mac.to_string(), "aa:bb:cc:00:11:22");
        for bad in [
            "aa:bb:cc:00:11",
            "aa:bb:cc:00:11:2g",
            "aabbcc001122",
            "a:bb:cc:00:11:223",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        let p = magic_packet(mac);
        assert_eq!(&p[..6], &[0xFF; 6]);
        assert_eq!(&p[6..12], &mac.0);
        assert_eq!(&p[96..], &mac.0);
    }

    // A real UDP socket receives the packet (sent to a local port instead of broadcast).
    #[test]
    fn the_packet_goes_out() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mac: Mac = "01:02:03:04:05:06".parse().unwrap();
        wake(mac, rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 200];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &magic_packet(mac)[..]);
    }

    #[tokio::test]
    async fn knocks_tell_up_from_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert!(matches!(
            knock(open, Duration::from_secs(1)).await,
            Presence::Up(_)
        ));
        drop(listener);
        // Refused: the host is there.
        assert!(matches!(
            knock(open, Duration::from_secs(1)).await,
            Presence::Up(_)
        ));
        // A host that does not answer: a listener whose accept queue is full drops new
        // SYNs, as a host that is off (or firewalled to silence) does.
        let silent = silent_host().await;
        let nobody = silent.addr;
        assert_eq!(
            knock(nobody, Duration::from_millis(300)).await,
            Presence::Down
        );
    }
}
