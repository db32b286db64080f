//! Structured logs with `tracing`, on stderr. The level comes from `PVBUS_LOG` (or
//! `RUST_LOG`), default `info`; `PVBUS_LOG_FORMAT=json` switches to one JSON object per
//! line, for log collectors. Under the supervisor, children log plain lines and the
//! supervisor prefixes them with the child's name. rumqttd is silenced by default: it
//! logs ERROR for ordinary client disconnects, and the broker crate reports its real
//! failures itself.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(process: &str) {
    let filter = std::env::var("PVBUS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,rumqttd=off,rumqttc=warn".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PVBUS_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // A failed write to stderr (the supervisor gone, a closed pipe) must not panic:
        // tracing-subscriber would report it with eprintln!, which panics and can hang a
        // process on its way out.
        .log_internal_errors(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
    if result.is_ok() {
        tracing::debug!(process, "logging started");
    }
}
