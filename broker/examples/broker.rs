//! The `pvbus broker` process on its own, for working on this crate without the whole
//! binary: `cargo run -p pvbus-broker --example broker -- --listen 127.0.0.1:1883 --data-dir /tmp/b`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "broker")]
struct Args {
    #[command(flatten)]
    cli: pvbus_broker::Cli,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(pvbus_broker::main(args.cli))
}
