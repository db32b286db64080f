//! A short-lived MQTT session for one shell command.
//!
//! Not [`pvbus_bus::Bus`]: a command is not a process of the bus. It has no status
//! topic and no last will (a `pvbus get` in a loop would otherwise flood
//! `<base>/cli/status`), and a client id of its own (two commands run at once must not
//! kick each other off the broker).

use std::time::Duration;

use pvbus_bus::Topics;
use pvbus_bus::config::BusConfig;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::CliError;

/// One message received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

pub struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
    topics: Topics,
    endpoint: String,
    client_id: String,
    /// Messages that arrived while waiting for something else.
    pending: std::collections::VecDeque<Received>,
}

/// How long a command waits for the broker to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// Connects; the error says where it tried and what to check.
    pub async fn connect(cfg: &BusConfig) -> Result<Session, CliError> {
        let (host, port) = cfg.endpoint();
        let endpoint = format!("{host}:{port}");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let client_id = format!(
            "{}cli-{}-{nanos:x}",
            cfg.client_id_prefix,
            std::process::id()
        );
        let mut options = MqttOptions::new(client_id.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
        if let Some(user) = &cfg.username {
            options.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        return Err(CliError::Refused {
                            endpoint: endpoint.clone(),
                            reason: format!("{code:?}"),
                        });
                    }
                    Err(e) => {
                        return Err(CliError::Unreachable {
                            endpoint: endpoint.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => Ok(Session {
                client,
                eventloop,
                topics: Topics::new(cfg.base.clone()),
                endpoint,
                client_id,
                pending: Default::default(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CliError::Unreachable {
                endpoint,
                reason: "no answer within 5 s".into(),
            }),
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Subscribes to `filters` and returns every message received until the broker has
    /// delivered all their retained messages (see [`Topics::sync`]).
    pub async fn subscribe_and_sync(
        &mut self,
        filters: &[String],
    ) -> Result<Vec<Received>, CliError> {
        let sync_topic = self
            .topics
            .sync(&self.client_id.replace(['/', '+', '#'], "_"));
        let mut all = filters.to_vec();
        all.push(sync_topic.clone());
        self.subscribe(&all).await?;
        let client = self.client.clone();
        let topic = sync_topic.clone();
        self.request(async move { client.publish(topic, QoS::AtLeastOnce, false, "sync").await })
            .await?;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let m = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| CliError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    reason: "the broker did not deliver our own message back within 5 s".into(),
                })??;
            if m.topic == sync_topic {
                return Ok(seen);
            }
            seen.push(m);
        }
    }

    /// Subscribes without waiting for anything.
    pub async fn subscribe(&mut self, filters: &[String]) -> Result<(), CliError> {
        let subs: Vec<_> = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        let client = self.client.clone();
        self.request(async move { client.subscribe_many(subs).await })
            .await
    }

    /// Publishes a command (QoS 1, never retained).
    pub async fn publish(&mut self, topic: &str, payload: &str) -> Result<(), CliError> {
        let client = self.client.clone();
        let (topic, payload) = (topic.to_string(), payload.to_string());
        self.request(async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
        })
        .await
    }

    /// The next message.
    pub async fn next(&mut self) -> Result<Received, CliError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        loop {
            if let Some(m) = self.poll_once().await? {
                return Ok(m);
            }
        }
    }

    /// Sends the publishes still queued and says goodbye to the broker.
    pub async fn close(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while self.eventloop.poll().await.is_ok() {}
        })
        .await;
    }

    /// Hands a request to rumqttc while keeping the event loop turning: the request
    /// channel is bounded, and only polling drains it.
    async fn request<F>(&mut self, request: F) -> Result<(), CliError>
    where
        F: std::future::Future<Output = Result<(), rumqttc::ClientError>>,
    {
        let mut request = std::pin::pin!(request);
        loop {
            tokio::select! {
                done = &mut request => {
                    return done.map_err(|e| CliError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        reason: e.to_string(),
                    });
                }
                polled = self.eventloop.poll() => {
                    if let Some(m) = self.received(polled)? {
                        self.pending.push_back(m);
                    }
                }
            }
        }
    }

    async fn poll_once(&mut self) -> Result<Option<Received>, CliError> {
        let polled = self.eventloop.poll().await;
        self.received(polled)
    }

    fn received(
        &mut self,
        polled: Result<Event, ConnectionError>,
    ) -> Result<Option<Received>, CliError> {
        match polled {
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(Some(Received {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            })),
            Ok(_) => Ok(None),
            Err(e) => Err(CliError::Lost {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            }),
        }
    }
}
