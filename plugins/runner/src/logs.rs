//! A plugin's output, logged under its name and rate-limited: a plugin that floods its
//! output costs us a counter, not the SD card or the journal.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};

/// Longer lines are cut (a binary blob printed by mistake is not a log line).
const MAX_LINE: usize = 1000;

struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
    /// Dropped since the last "dropped" notice.
    dropped_now: u64,
    dropped_total: u64,
}

/// A token bucket of `rate` lines per second with a burst of twice that, shared by the
/// stdout and stderr of one plugin (and across its restarts). Cheap to clone.
#[derive(Clone)]
pub struct LineBudget {
    inner: Arc<Mutex<Bucket>>,
    /// Fired when lines start being dropped (a flood begins), so that the plugin's health
    /// says so without anyone polling the counter.
    flooding: Arc<tokio::sync::Notify>,
}

impl LineBudget {
    pub fn new(lines_per_sec: u32) -> LineBudget {
        let rate = f64::from(lines_per_sec.max(1));
        LineBudget {
            inner: Arc::new(Mutex::new(Bucket {
                rate,
                tokens: rate * 2.0,
                at: Instant::now(),
                dropped_now: 0,
                dropped_total: 0,
            })),
            flooding: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Logs `line` of `plugin`'s `stream` if the budget allows; counts it otherwise.
    pub fn log(&self, plugin: &str, stream: &'static str, line: &str) {
        let mut b = self.inner.lock().expect("budget lock");
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * b.rate;
        b.tokens = (b.tokens + refill).min(b.rate * 2.0);
        b.at = now;
        if b.tokens < 1.0 {
            if b.dropped_now == 0 {
                self.flooding.notify_one();
            }
            b.dropped_now += 1;
            b.dropped_total += 1;
            return;
        }
        b.tokens -= 1.0;
        if b.dropped_now > 0 {
            warn!(
                plugin,
                "{} output lines dropped: more than {} per second", b.dropped_now, b.rate
            );
            b.dropped_now = 0;
        }
        drop(b);
        let line = line.trim_end();
        let line = match line.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => &line[..cut],
            None => line,
        };
        info!(plugin, stream, "{line}");
    }

    /// Completes when lines start being dropped.
    pub async fn flooding(&self) {
        self.flooding.notified().await;
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().expect("budget lock").dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_counted_not_logged() {
        let b = LineBudget::new(5);
        for i in 0..1000 {
            b.log("flood", "stdout", &format!("line {i}"));
        }
        // The burst (2 x 5) plus what refilled during the loop, which takes far less
        // than a second.
        let dropped = b.dropped();
        assert!((985..=990).contains(&dropped), "{dropped}");
    }
}
