//! pvbus rules: readable on/off conditions per relay, evaluated when readings arrive.
//!
//! Layout:
//! - [`expr`]: the rule language's tokens, syntax tree and parser (with spans).
//! - [`value`]: values, readings with timestamps, and how values read in reasons.
//! - [`eval`]: typed three-valued evaluation with reasons and wake-up hints.
//! - [`history`]: relay modes, states and on-periods for the history helpers.
//! - [`config`]: the `[rules]`/`[site]` TOML sections and includes, checked, with file:line:col errors.
//! - [`clock`]: real or virtual clock, local civil time, sunrise and sunset.
//! - [`engine`]: the pass scheduler: decisions (one switch-on per pass, settle delay,
//!   priorities, load power vs surplus, min on/off, daily budgets, unknown → off) and statuses.
//! - [`surplus`]: the off-grid surplus estimate from charger states, battery and sun.
//! - [`script`]: the Rhai escape hatch (sandboxed, same values and helpers, strict types).
//! - [`scenario`]: the scenario file format (timed readings, relay events, expectations).
//! - [`simulate`]: `rules check` and `rules simulate` as functions.
//! - [`sun`]: NOAA solar equations (sunrise, sunset, elevation).
//! - [`process`]: `pvbus rules` on the bus ([`Cli`], [`main`]): subscriptions, `auto/set`,
//!   statuses, decisions, surplus and heartbeat.

pub mod clock;
pub mod config;
pub mod engine;
pub mod eval;
pub mod expr;
pub mod history;
pub mod process;
pub mod scenario;
pub mod script;
pub mod simulate;
pub mod sun;
pub mod surplus;
pub mod value;

pub use config::{RuleSet, RulesSection};
pub use engine::{Command, Decision, Engine};
pub use process::{Cli, RulesCommand, main};
