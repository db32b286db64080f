//! One shutdown signal for the whole process, after mini-redis: every task holds a
//! [`Shutdown`] and returns when it fires; nothing is killed from outside.

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Fires the shutdown (tests, or a process that decides to stop).
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown fired only through the returned trigger.
    pub fn manual() -> (Shutdown, ShutdownTrigger) {
        let (tx, rx) = watch::channel(false);
        (
            Shutdown { rx },
            ShutdownTrigger {
                tx: std::sync::Arc::new(tx),
            },
        )
    }

    /// A shutdown fired by SIGTERM or SIGINT (Ctrl-C), or through the trigger.
    /// Must be called inside a tokio runtime.
    pub fn on_signals() -> (Shutdown, ShutdownTrigger) {
        let (shutdown, trigger) = Shutdown::manual();
        let t = trigger.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            t.fire();
        });
        (shutdown, trigger)
    }

    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when the shutdown fires (at once if it already has).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|s| *s).await;
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
