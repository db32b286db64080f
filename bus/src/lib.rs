//! How a pvbus process joins the bus.
//!
//! Layout:
//! - [`topics`]: the topic contract — every topic name of pvbus is built here and nowhere
//!   else (`docs/topics.md` is its public description).
//! - [`contract`]: the payloads that travel on those topics: relay modes and mode requests,
//!   reasons, availability, error reports, durations, timestamps.
//! - [`client`]: [`Bus`], the MQTT connection every process uses: last will, `online`,
//!   resubscribe and republish of its own retained state after every reconnect, backoff,
//!   and a publish path that can never deadlock against the receive path; shell commands
//!   use it too, as tools (no last will, no `online`, a client id per run).
//! - [`config`]: the layered TOML configuration (defaults, file, `PVBUS_...` environment),
//!   the [`config::Section`] trait every process's section implements, and the `[bus]`
//!   section.
//! - [`shutdown`]: one signal (SIGTERM, Ctrl-C, or programmatic) that every task watches.
//! - [`logging`]: structured logs with `tracing`, plain or JSON.

pub mod backoff;
pub mod client;
pub mod config;
pub mod contract;
pub mod logging;
pub mod shutdown;
pub mod topics;

pub use client::{Bus, BusError, Event, Inbox, LinkError, Message};
pub use config::{BusConfig, ConfigError};
pub use contract::{ModeRequest, Reason, ReasonSource, RelayMode};
pub use shutdown::Shutdown;
pub use topics::Topics;
