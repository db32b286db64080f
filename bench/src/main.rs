//! `pvbus-bench`: whole-system benchmarks of the release `pvbus` binary (docs/performance.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pvbus_bench::stack::BrokerKind;
use pvbus_bench::{broker, footprint, growth, latency, report};

#[derive(Parser)]
#[command(
    about = "Whole-system benchmarks of pvbus: decision latency and the footprint of the demo stack",
    long_about = "Whole-system benchmarks of pvbus. Each starts the real `pvbus run` (the \
    release build beside this binary, or --pvbus) on a temp dir and free ports, measures it \
    from outside, prints JSON and writes it to target/bench/. Build first: \
    `cargo build --release --bin pvbus -p pvbus-bench`."
)]
struct Cli {
    /// The pvbus binary to measure (default: `pvbus` beside this binary).
    #[arg(long, global = true)]
    pvbus: Option<PathBuf>,
    /// The broker: pvbus's embedded one, or a mosquitto started beside the stack.
    #[arg(long, global = true, value_enum, default_value = "embedded")]
    broker: BrokerKind,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// VE.Direct block on a pty -> bridge -> broker -> rules -> relays -> GPIO pin edge.
    Latency {
        /// Decisions to time (each flips the relay).
        #[arg(long, default_value_t = 1000)]
        events: usize,
    },
    /// The embedded broker and a mosquitto side by side: retained catch-up, fan-out, a
    /// reconnect storm of every process at once.
    Broker,
    /// Memory, CPU and wake-ups of every process of the demo stack, with and without data.
    Footprint {
        /// Seconds each measurement lasts.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds to settle before each measurement (start-up, then devices going stale).
        #[arg(long, default_value_t = 15)]
        settle: u64,
        /// The simulated devices' virtual seconds per real second. They write one block
        /// per real second at any scale: 1 (the default) measures what a real Pi with
        /// real devices spends per hour; the demo runs at 60.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
    },
    /// Memory of one broker (alone) under the demo's message pattern at full speed, with
    /// a subscriber leaving and coming back at every sample: does it level off?
    BrokerGrowth {
        /// Messages to publish in all (the first tenth is the warm-up).
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Messages between two samples of the broker's memory.
        #[arg(long, default_value_t = 20_000)]
        sample_every: u64,
        /// Messages a second (0: as fast as the broker takes them). At a low rate each
        /// message reaches the broker in a read of its own, as from real devices.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Drive the broker already listening at this address (with --pid) instead of
        /// starting one, e.g. rumqttd's private port behind the relay.
        #[arg(long, requires = "pid")]
        connect: Option<std::net::SocketAddr>,
        /// The pid of the broker at --connect, whose memory is sampled.
        #[arg(long, requires = "connect")]
        pid: Option<u32>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let exe = std::env::current_exe().context("where is this binary?")?;
    let pvbus = match cli.pvbus {
        Some(p) => p,
        None => exe.with_file_name("pvbus"),
    };
    if !pvbus.is_file() {
        bail!(
            "no pvbus binary at {}: build it (`cargo build --release --bin pvbus`) or pass --pvbus",
            pvbus.display()
        );
    }
    let dir = report::bench_dir(&exe);
    let (name, result) = match cli.bench {
        Bench::Latency { events } => (
            format!("decision_latency_{}.json", broker_name(cli.broker)),
            latency::run(&pvbus, events, cli.broker)?,
        ),
        Bench::Broker => ("broker.json".to_string(), broker::run(&pvbus)?),
        Bench::Footprint {
            seconds,
            settle,
            time_scale,
        } => (
            format!("footprint_{}.json", broker_name(cli.broker)),
            footprint::run(
                &pvbus,
                Duration::from_secs(settle),
                Duration::from_secs(seconds),
                time_scale,
                cli.broker,
            )?,
        ),
        Bench::BrokerGrowth {
            messages,
            sample_every,
            rate,
            connect,
            pid,
        } => (
            match connect {
                Some(_) => "broker_growth_given.json".to_string(),
                None => format!("broker_growth_{}.json", broker_name(cli.broker)),
            },
            growth::run(
                &pvbus,
                cli.broker,
                messages,
                sample_every,
                match rate {
                    0 => growth::Rate::Flat,
                    r => growth::Rate::PerSecond(r),
                },
                connect.zip(pid),
            )?,
        ),
    };
    let path = report::write_json(&dir, &name, &result)?;
    eprintln!("written to {}", path.display());
    Ok(())
}

fn broker_name(broker: BrokerKind) -> &'static str {
    match broker {
        BrokerKind::Embedded => "embedded",
        BrokerKind::Mosquitto => "mosquitto",
    }
}
