//! A short-lived MQTT session for one shell command, over [`Bus::connect_tool`]: not a
//! process of the bus (no status topic, no last will: a `pvbus get` in a loop would
//! otherwise flood `<base>/cli/status`), a client id of its own (two commands run at once
//! must not kick each other off the broker), and a broker that is not there is an error
//! at once, not a wait.

use std::time::Duration;

use pvbus_bus::config::BusConfig;
use pvbus_bus::{Bus, Event, Inbox, LinkError, Topics};

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
    bus: Bus,
    inbox: Inbox,
    endpoint: String,
}

/// How long a command waits for the broker to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// Connects; the error says where it tried and what to check.
    pub async fn connect(cfg: &BusConfig) -> Result<Session, CliError> {
        let (host, port) = cfg.endpoint();
        let endpoint = format!("{host}:{port}");
        match Bus::connect_tool_or_fail(cfg, "cli", CONNECT_TIMEOUT).await {
            Ok((bus, inbox)) => Ok(Session {
                bus,
                inbox,
                endpoint,
            }),
            Err(LinkError::Refused(reason)) => Err(CliError::Refused { endpoint, reason }),
            Err(e) => Err(CliError::Unreachable {
                endpoint,
                reason: e.to_string(),
            }),
        }
    }

    pub fn topics(&self) -> &Topics {
        self.bus.topics()
    }

    /// Subscribes to `filters` and returns every message received until the broker has
    /// delivered all their retained messages (see [`Topics::sync`]).
    pub async fn subscribe_and_sync(
        &mut self,
        filters: &[String],
    ) -> Result<Vec<Received>, CliError> {
        let sync_topic = self
            .topics()
            .sync(&self.bus.client_id().replace(['/', '+', '#'], "_"));
        self.subscribe(filters);
        self.bus.subscribe(sync_topic.clone());
        self.bus.publish(sync_topic.clone(), "sync");
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
    pub fn subscribe(&self, filters: &[String]) {
        for filter in filters {
            self.bus.subscribe(filter.clone());
        }
    }

    /// Publishes a command (QoS 1, never retained).
    pub fn publish(&self, topic: &str, payload: &str) {
        self.bus.publish(topic.to_string(), payload.to_string());
    }

    /// The next message; losing the broker is an error (a command does not wait for it).
    pub async fn next(&mut self) -> Result<Received, CliError> {
        loop {
            match self.inbox.recv().await {
                Some(Event::Message(m)) => {
                    return Ok(Received {
                        topic: m.topic,
                        payload: m.payload.to_vec(),
                        retain: m.retain,
                    });
                }
                Some(Event::Connected) => {}
                Some(Event::Disconnected) | None => {
                    return Err(CliError::Lost {
                        endpoint: self.endpoint.clone(),
                        reason: self
                            .bus
                            .link_error()
                            .map_or_else(|| "the connection closed".into(), |e| e.to_string()),
                    });
                }
            }
        }
    }

    /// Sends the publishes still queued and says goodbye to the broker.
    pub async fn close(self) {
        self.bus.shutdown().await;
    }
}
