//! One reader thread per serial port: blocking reads (no polling), the streaming parser,
//! the idle reset after 500 ms of silence inside a block, and reopening with a backoff
//! when the port goes away (USB cable unplugged, simulator closed).
//!
//! The thread owns the port and the parser; it hands parsed events to the bridge's async
//! loop through a bounded channel, and a second handle on the port (for HEX requests)
//! with every [`PortEvent::Opened`].

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, SerialPort, TTYPort};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use vedirect::text::{Event as ParsedEvent, HexFrame, Parser, Rejection, TextBlock};

/// VE.Direct is 19200 8N1, no flow control.
pub const BAUD_RATE: u32 = 19_200;

/// Silence after which an unfinished block is dropped: devices pause between blocks,
/// never inside one.
pub const IDLE_RESET: Duration = Duration::from_millis(500);

/// Read timeout when nothing is pending: only there so that the thread notices that the
/// bridge has stopped. Blocks arrive every second; nothing else needs waking.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Reopen backoff: the first retry soon (a simulator restarting), then up to 10 s (a
/// cable left unplugged), never a tight loop.
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(10);
/// An opening that lasted this long resets the backoff.
const STABLE_OPEN: Duration = Duration::from_secs(10);

/// What a port reader reports.
pub enum PortEvent {
    /// The port is open; `writer` is a second handle for HEX requests.
    Opened {
        writer: PortWriter,
    },
    Block(TextBlock),
    Hex(HexFrame),
    Rejected(Rejection),
    /// Partial block dropped after a silence.
    IdleDiscard,
    /// The port was lost or could not be opened; the reader retries by itself.
    Closed {
        error: String,
    },
}

/// The write half of an open port.
pub struct PortWriter {
    port: TTYPort,
}

impl PortWriter {
    /// Writes a whole HEX request. Frames are ~20 bytes; the kernel buffer takes them at
    /// once, so this does not hold up the caller's loop.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
    }
}

/// Starts the reader thread of `path`; events arrive tagged with `index`.
pub fn spawn(
    index: usize,
    path: PathBuf,
    events: mpsc::Sender<(usize, PortEvent)>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vedirect-{index}"))
        // The thread holds a parser (~1 KB) and a read buffer: a small stack is plenty.
        .stack_size(128 * 1024)
        .spawn(move || run(index, &path, &events))
}

fn run(index: usize, path: &Path, events: &mpsc::Sender<(usize, PortEvent)>) {
    let send = |event: PortEvent| events.blocking_send((index, event)).is_ok();
    let mut delay = REOPEN_FIRST;
    let mut failures = 0u32;
    loop {
        let opened_at = Instant::now();
        let error = match open(path) {
            Ok((port, writer)) => {
                info!(port = %path.display(), "serial port open");
                if !send(PortEvent::Opened { writer }) {
                    return;
                }
                failures = 0;
                match read_until_lost(port, &send, &|| events.is_closed()) {
                    ReadEnd::BridgeStopped => return,
                    ReadEnd::Lost(e) => {
                        warn!(port = %path.display(), error = %e, "serial port lost; reopening");
                        e
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(port = %path.display(), error = %e, "cannot open serial port; retrying");
                } else {
                    debug!(port = %path.display(), error = %e, failures, "serial port still unavailable");
                }
                e
            }
        };
        if !send(PortEvent::Closed { error }) {
            return;
        }
        if opened_at.elapsed() >= STABLE_OPEN {
            delay = REOPEN_FIRST;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(REOPEN_MAX);
        if events.is_closed() {
            return;
        }
    }
}

fn open(path: &Path) -> Result<(TTYPort, PortWriter), String> {
    let name = path.to_string_lossy();
    // Exclusive access keeps a second reader (an old PvMonit) off a real port. Not on a
    // pty: the simulator holds it open, so the flag would outlive a crashed bridge and
    // refuse its restart (for users without CAP_SYS_ADMIN).
    let is_pty = std::fs::canonicalize(path).is_ok_and(|p| p.starts_with("/dev/pts"));
    let port = serialport::new(name.as_ref(), BAUD_RATE)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(IDLE_WAIT)
        .exclusive(!is_pty)
        .open_native()
        .map_err(|e| e.to_string())?;
    // Bytes that waited in the kernel while nobody read are old: a reading published
    // now must be from now.
    port.clear(ClearBuffer::Input).map_err(|e| e.to_string())?;
    let mut writer = port.try_clone_native().map_err(|e| e.to_string())?;
    writer
        .set_timeout(Duration::from_millis(200))
        .map_err(|e| e.to_string())?;
    Ok((port, PortWriter { port: writer }))
}

enum ReadEnd {
    BridgeStopped,
    Lost(String),
}

fn read_until_lost(
    mut port: TTYPort,
    send: &impl Fn(PortEvent) -> bool,
    stopped: &impl Fn() -> bool,
) -> ReadEnd {
    let mut parser = Parser::new();
    let mut buf = [0u8; 256];
    let end = loop {
        match port.read(&mut buf) {
            Ok(0) => break ReadEnd::Lost("end of file".into()),
            Ok(n) => {
                for event in parser.feed(&buf[..n]) {
                    let event = match event {
                        ParsedEvent::Block(b) => PortEvent::Block(b),
                        ParsedEvent::Hex(h) => PortEvent::Hex(h),
                        ParsedEvent::Rejected(r) => PortEvent::Rejected(r),
                    };
                    if !send(event) {
                        return ReadEnd::BridgeStopped;
                    }
                }
                // Wake up for the idle reset only while a block is unfinished; between
                // blocks the thread sleeps until the next byte.
                let timeout = if parser.pending_text_len() > 0 {
                    IDLE_RESET
                } else {
                    IDLE_WAIT
                };
                let _ = port.set_timeout(timeout);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if (parser.idle_reset() && !send(PortEvent::IdleDiscard)) || stopped() {
                    return ReadEnd::BridgeStopped;
                }
                let _ = port.set_timeout(IDLE_WAIT);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break ReadEnd::Lost(e.to_string()),
        }
    };
    // TIOCEXCL outlives our descriptor when someone else keeps the tty open (a simulator
    // holds its pty slave): clear it so that our own reopen is not refused.
    let _ = port.set_exclusive(false);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next event, within 5 s.
    fn next(rx: &mut mpsc::Receiver<(usize, PortEvent)>) -> PortEvent {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (index, event) = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await })
            .expect("an event within 5 s")
            .expect("reader alive");
        assert_eq!(index, 3);
        event
    }

    fn block(v: &str) -> Vec<u8> {
        vedirect::text::encode_block(&[("PID", "0xA053"), ("V", v), ("SER#", "HQ1")]).unwrap()
    }

    /// A real pty: a block cut by a silence is dropped (not glued to the next one), the
    /// next block is read, HEX requests reach the device, and closing the device side
    /// is noticed at once.
    #[test]
    fn reads_a_pty_resets_after_silence_and_notices_the_device_leaving() {
        let (mut master, slave) = TTYPort::pair().unwrap();
        let path = PathBuf::from(slave.name().unwrap());
        let (tx, mut rx) = mpsc::channel(16);
        spawn(3, path, tx).unwrap();
        let PortEvent::Opened { mut writer } = next(&mut rx) else {
            panic!("first event is Opened")
        };

        let first = block("12000");
        master.write_all(&first[..first.len() / 2]).unwrap();
        let started = Instant::now();
        assert!(matches!(next(&mut rx), PortEvent::IdleDiscard));
        assert!(started.elapsed() >= IDLE_RESET - Duration::from_millis(50));
        master.write_all(&block("12001")).unwrap();
        match next(&mut rx) {
            PortEvent::Block(b) => assert_eq!(b.get("V"), Some("12001")),
            _ => panic!("the whole block after the silence is read"),
        }

        writer.send(b":154\n").unwrap();
        let mut got = [0u8; 5];
        master.set_timeout(Duration::from_secs(2)).unwrap();
        master.read_exact(&mut got).unwrap();
        assert_eq!(&got, b":154\n");

        drop(master);
        drop(slave);
        assert!(matches!(next(&mut rx), PortEvent::Closed { .. }));
    }
}
