//! `pvbus-bench`: whole-system benchmarks of the release `pvbus` binary (docs/performance.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pvbus_bench::stack::BrokerKind;
use pvbus_bench::{broker, footprint, latency, report};

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
        Bench::Footprint { seconds, settle } => (
            format!("footprint_{}.json", broker_name(cli.broker)),
            footprint::run(
                &pvbus,
                Duration::from_secs(settle),
                Duration::from_secs(seconds),
                cli.broker,
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
