//! The client-facing listeners. Each MQTT connection is relayed to rumqttd's loopback
//! listener packet by packet, and the relay takes over what rumqttd 0.20 gets wrong for us:
//! - retained messages: the relay keeps them (retain flag cleared before rumqttd sees a
//!   publish or a will, so rumqttd's own store stays empty), and after each SUBACK it sends
//!   the subscriber every matching retained message itself, with no count limit (rumqttd
//!   sends at most 100 at QoS 1 and drops the rest);
//! - login on the LAN listener, checked against Argon2 hashes, optionally over TLS;
//! - a connection limit that refuses politely instead of queueing.
//!
//! Packet identifiers: rumqttd numbers its outgoing QoS 1/2 publishes 1..=100 (MAX_PKID in
//! its iobufs.rs), so the relay numbers the retained publishes it injects from 1001 up and
//! swallows the client's PUBACKs for those, which rumqttd would treat as unsolicited.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::BrokerUser;
use crate::packet::{self, Frame, PacketError};
use crate::retained::{RetainedStore, StoreOutcome};

/// Highest packet identifier rumqttd 0.20 uses for its own outgoing publishes.
const RUMQTTD_MAX_PKID: u16 = 100;
/// First packet identifier of the retained publishes the relay injects.
const INJECTED_FIRST_PKID: u16 = 1001;
/// A client has this long to finish the TLS handshake, then as long again to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may connect on a listener.
#[derive(Debug, Clone)]
pub enum Access {
    /// Loopback: no login (any given is ignored).
    Local,
    /// LAN: user name and password checked against these hashes.
    Login(Arc<Vec<BrokerUser>>),
}

#[derive(Debug)]
pub struct Relay {
    pub upstream: SocketAddr,
    pub store: Arc<RetainedStore>,
    pub max_packet_size: usize,
    pub connections: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Packet(#[from] PacketError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    #[error("first packet is not CONNECT (type {0})")]
    NotConnect(u8),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no TLS handshake within {0:?}")]
    HandshakeTimeout(Duration),
}

/// Accepts connections on `listener` until the task is dropped; with `tls`, each connection
/// is a TLS session first (the loopback listener has none).
pub async fn serve(
    listener: TcpListener,
    access: Access,
    tls: Option<TlsAcceptor>,
    relay: Arc<Relay>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&relay.connections).try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: broker.max_connections reached");
            continue;
        };
        let relay = Arc::clone(&relay);
        let access = access.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match relay.accept(socket, tls, &access).await {
                Ok(()) => {}
                // The peer's fault (bad packet, no CONNECT): worth a line in the log.
                Err(
                    error @ (SessionError::Packet(
                        PacketError::Malformed { .. }
                        | PacketError::TooLarge { .. }
                        | PacketError::BadRemainingLength,
                    )
                    | SessionError::NotConnect(_)
                    | SessionError::Handshake(_)
                    | SessionError::HandshakeTimeout(_)),
                ) => tracing::warn!(%peer, %error, "connection closed"),
                Err(error) => tracing::debug!(%peer, %error, "connection ended"),
            }
            drop(permit);
        });
    }
}

/// Subscriptions sent upstream whose SUBACK has not come back yet, by packet identifier.
type PendingSubscriptions = Arc<Mutex<HashMap<u16, Vec<String>>>>;

impl Relay {
    async fn accept(
        &self,
        socket: TcpStream,
        tls: Option<TlsAcceptor>,
        access: &Access,
    ) -> Result<(), SessionError> {
        socket.set_nodelay(true)?;
        let Some(tls) = tls else {
            return self.session(socket, access).await;
        };
        let started = std::time::Instant::now();
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.accept(socket))
            .await
            .map_err(|_| SessionError::HandshakeTimeout(CONNECT_TIMEOUT))?
            .map_err(SessionError::Handshake)?;
        tracing::debug!(
            handshake_us = started.elapsed().as_micros() as u64,
            "TLS session established"
        );
        self.session(stream, access).await
    }

    /// One client connection, plain TCP or TLS.
    async fn session<S>(&self, socket: S, access: &Access) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (client_read, mut client_write) = tokio::io::split(socket);
        let mut client_read = BufReader::new(client_read);

        let first = tokio::time::timeout(
            CONNECT_TIMEOUT,
            packet::read_frame(&mut client_read, self.max_packet_size),
        )
        .await
        .map_err(|_| SessionError::ConnectTimeout(CONNECT_TIMEOUT))??;
        let Some(mut first) = first else {
            return Ok(());
        };
        if first.kind() != packet::CONNECT {
            return Err(SessionError::NotConnect(first.kind()));
        }
        let connect = packet::parse_connect(&first)?;
        if connect.protocol_level >= 5 {
            tracing::info!("MQTT 5 client refused: the embedded broker speaks MQTT 3.1.1");
            let refusal = packet::encode_connack(packet::CONNACK_UNACCEPTABLE_PROTOCOL);
            client_write.write_all(&refusal).await?;
            client_write.flush().await?;
            return Ok(());
        }
        if let Access::Login(users) = access
            && let Some(code) = check_login(users, &connect).await
        {
            tracing::warn!(
                client_id = connect.client_id,
                username = connect.username.as_deref().unwrap_or(""),
                "LAN login refused"
            );
            client_write
                .write_all(&packet::encode_connack(code))
                .await?;
            client_write.flush().await?;
            return Ok(());
        }
        if connect.keep_alive == 0 {
            // MQTT allows 0 (no keep alive); rumqttd closes such a connection without a
            // CONNACK. The longest keep alive is the nearest it accepts.
            packet::set_keep_alive(&mut first, &connect, u16::MAX);
        }
        let will = connect.will.clone().filter(|will| will.retain);
        if will.is_some() {
            packet::clear_will_retain(&mut first, &connect);
        }

        let upstream = TcpStream::connect(self.upstream).await?;
        upstream.set_nodelay(true)?;
        let (upstream_read, mut upstream_write) = upstream.into_split();
        upstream_write.write_all(&first.raw).await?;

        let pending = PendingSubscriptions::default();
        let mut accepted = false;
        let mut clean_disconnect = false;
        let to_broker = self.client_to_broker(
            &mut client_read,
            &mut upstream_write,
            &pending,
            &mut clean_disconnect,
        );
        let to_client = self.broker_to_client(
            BufReader::new(upstream_read),
            &mut client_write,
            &pending,
            &mut accepted,
        );
        let result = tokio::select! {
            result = to_broker => result,
            result = to_client => result,
        };
        // Both sockets close when this function returns; rumqttd then publishes the will
        // (unless the client said DISCONNECT), and the relay records it if it is retained.
        if accepted
            && !clean_disconnect
            && let Some(will) = will
        {
            self.retain(&will.topic, will.payload, will.qos);
        }
        result
    }

    async fn client_to_broker<S: AsyncRead + AsyncWrite>(
        &self,
        client: &mut BufReader<ReadHalf<S>>,
        upstream: &mut OwnedWriteHalf,
        pending: &PendingSubscriptions,
        clean_disconnect: &mut bool,
    ) -> Result<(), SessionError> {
        while let Some(mut frame) = packet::read_frame(client, self.max_packet_size).await? {
            match frame.kind() {
                packet::PUBLISH => {
                    let publish = packet::parse_publish(&frame)?;
                    if publish.retain {
                        self.retain(&publish.topic, publish.payload, publish.qos);
                        packet::clear_publish_retain(&mut frame);
                    }
                }
                packet::SUBSCRIBE => {
                    let subscribe = packet::parse_subscribe(&frame)?;
                    let filters = subscribe.filters.into_iter().map(|(filter, _)| filter);
                    lock(pending).insert(subscribe.pkid, filters.collect());
                }
                // Ack of a retained publish the relay injected: not rumqttd's.
                packet::PUBACK if packet::parse_packet_id(&frame, "PUBACK")? > RUMQTTD_MAX_PKID => {
                    continue;
                }
                packet::DISCONNECT => {
                    *clean_disconnect = true;
                    upstream.write_all(&frame.raw).await?;
                    return Ok(());
                }
                _ => {}
            }
            upstream.write_all(&frame.raw).await?;
        }
        Ok(())
    }

    async fn broker_to_client<S: AsyncRead + AsyncWrite>(
        &self,
        mut upstream: BufReader<OwnedReadHalf>,
        client: &mut WriteHalf<S>,
        pending: &PendingSubscriptions,
        accepted: &mut bool,
    ) -> Result<(), SessionError> {
        let mut next_pkid = INJECTED_FIRST_PKID;
        // rumqttd's packets were checked by rumqttd; only the relay's own limit applies.
        let limit = self.max_packet_size + 1024;
        while let Some(frame) = packet::read_frame(&mut upstream, limit).await? {
            ack_at_once(upstream.get_ref());
            client.write_all(&frame.raw).await?;
            match frame.kind() {
                packet::CONNACK => *accepted = packet::parse_connack(&frame)? == 0,
                packet::SUBACK => {
                    let batch = self.retained_for(&frame, pending, &mut next_pkid)?;
                    if !batch.is_empty() {
                        client.write_all(&batch).await?;
                    }
                }
                _ => {}
            }
            // TLS keeps what did not fit the socket buffer until flushed (no-op on TCP).
            client.flush().await?;
        }
        Ok(())
    }

    /// The retained publishes owed to a subscriber after this SUBACK, encoded.
    fn retained_for(
        &self,
        suback: &Frame,
        pending: &PendingSubscriptions,
        next_pkid: &mut u16,
    ) -> Result<BytesMut, PacketError> {
        let (pkid, codes) = packet::parse_suback(suback)?;
        let filters = lock(pending).remove(&pkid).unwrap_or_default();
        let mut batch = BytesMut::new();
        for (filter, granted) in filters.iter().zip(codes) {
            // 0x80 is a refused filter; shared subscriptions get no retained messages.
            if granted > 2 || filter.starts_with("$share/") {
                continue;
            }
            for (topic, message) in self.store.matching(filter) {
                // QoS 2 is delivered as QoS 1: the relay does not run the QoS 2 handshake.
                let qos = granted.min(message.qos).min(1);
                let pkid = if qos > 0 { take_pkid(next_pkid) } else { 0 };
                packet::encode_publish(&mut batch, &topic, &message.payload, qos, true, pkid);
            }
        }
        Ok(batch)
    }

    fn retain(&self, topic: &str, payload: bytes::Bytes, qos: u8) {
        if topic.is_empty() || topic.contains(['+', '#']) {
            // rumqttd refuses such a publish itself; nothing to keep.
            return;
        }
        if self.store.apply(topic, payload, qos) == StoreOutcome::RefusedFull {
            tracing::warn!(
                topic,
                "retained message not kept: broker.max_retained_topics or \
                 broker.max_retained_bytes reached"
            );
        }
    }
}

fn take_pkid(next: &mut u16) -> u16 {
    let pkid = *next;
    *next = if pkid == u16::MAX {
        INJECTED_FIRST_PKID
    } else {
        pkid + 1
    };
    pkid
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `None` when the login is good, else the CONNACK code to refuse with.
async fn check_login(users: &Arc<Vec<BrokerUser>>, connect: &packet::Connect) -> Option<u8> {
    let (Some(username), Some(password)) = (&connect.username, &connect.password) else {
        return Some(packet::CONNACK_NOT_AUTHORISED);
    };
    let hash = users
        .iter()
        .find(|user| &user.username == username)
        .map(|user| user.password_hash.clone());
    let Some(hash) = hash else {
        return Some(packet::CONNACK_BAD_LOGIN);
    };
    let password = password.clone();
    // Argon2 takes milliseconds to hundreds of them: keep it off the relay's thread.
    let good =
        tokio::task::spawn_blocking(move || crate::password::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
    (!good).then_some(packet::CONNACK_BAD_LOGIN)
}

/// rumqttd never sets TCP_NODELAY on the connections it accepts, so when it writes two
/// small packets back to back (a PUBACK, then a forwarded publish) the second waits until
/// we acknowledge the first, and Linux delays that ACK by up to 40 ms. Asking for an
/// immediate ACK after every read removes that wait (measured: see docs/performance.md).
/// The flag is not sticky, hence after every read.
fn ack_at_once(upstream: &OwnedReadHalf) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let stream: &TcpStream = upstream.as_ref();
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = upstream;
}
