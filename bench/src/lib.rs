//! Whole-system benchmarks of pvbus, measured from outside the real binary.
//!
//! Layout:
//! - [`procfs`]: one process's resident memory, CPU time and context switches from `/proc`;
//! - [`stack`]: the measured `pvbus run` (a test kit `DemoStack`) on either broker;
//! - [`latency`]: decision latency, a VE.Direct block on a pty to a simulated relay pin;
//! - [`footprint`]: memory, CPU and wake-ups of every process of the demo stack, with data
//!   flowing and with the simulated devices stopped;
//! - [`broker`]: the embedded broker and mosquitto side by side: retained catch-up,
//!   fan-out, a reconnect storm;
//! - [`growth`]: one broker's memory under the demo's message pattern at full speed;
//! - [`report`]: percentiles and where results are written.

pub mod broker;
pub mod footprint;
pub mod growth;
pub mod latency;
pub mod procfs;
pub mod report;
pub mod stack;
