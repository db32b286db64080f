//! `pvbus watch [filter]`: every message on the bus (or part of it), one line each,
//! `topic payload`, as `mosquitto_sub -v` prints them, retained state first.

use std::io::Write;

use pvbus_bus::{Shutdown, Topics};

use crate::session::Session;
use crate::{CliError, ConfigArg, bus_config};

/// Prints the bus live, one `topic payload` line per message.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// What to watch: nothing for everything; a word (`relays`, `mppt_roof`, `rules`) for
    /// that process or device; or an MQTT filter below the base (`relays/+/state`).
    pub filter: Option<String>,
    /// Print what the bus holds now (its retained state) and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// The MQTT filters for what the user typed.
pub fn filters(topics: &Topics, filter: Option<&str>) -> Vec<String> {
    let base = topics.base();
    match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => vec![topics.all()],
        Some(f) if f.contains(['/', '+', '#']) => {
            if f == base || f.starts_with(&format!("{base}/")) {
                vec![f.to_string()]
            } else {
                vec![format!("{base}/{f}")]
            }
        }
        // A word: a process or bridge (`relays`), or a device or relay id.
        Some(word) => vec![format!("{base}/{word}/#"), format!("{base}/+/{word}/#")],
    }
}

/// Writes lines to `out` until `shutdown` fires or `out` is closed (a pipe into `head`).
pub async fn run(
    args: WatchArgs,
    out: &mut impl Write,
    mut shutdown: Shutdown,
) -> Result<(), CliError> {
    let bus = bus_config(args.config.config.as_deref())?;
    let mut session = Session::connect(&bus).await?;
    let filters = filters(session.topics(), args.filter.as_deref());
    if args.once {
        for m in session.subscribe_and_sync(&filters).await? {
            if m.retain && !m.payload.is_empty() {
                let _ = writeln!(out, "{} {}", m.topic, m.text());
            }
        }
        let _ = out.flush();
        session.close().await;
        return Ok(());
    }
    session.subscribe(&filters);
    loop {
        let m = tokio::select! {
            _ = shutdown.wait() => break,
            m = session.next() => m?,
        };
        let line = format!("{} {}", m.topic, m.text());
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away: not an error
        }
    }
    session.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_for_words_and_topics() {
        let t = Topics::new("home/pv");
        assert_eq!(filters(&t, None), ["home/pv/#"]);
        assert_eq!(
            filters(&t, Some("relays")),
            ["home/pv/relays/#", "home/pv/+/relays/#"]
        );
        assert_eq!(
            filters(&t, Some("relays/+/state")),
            ["home/pv/relays/+/state"]
        );
        assert_eq!(filters(&t, Some("home/pv/site/#")), ["home/pv/site/#"]);
    }
}
