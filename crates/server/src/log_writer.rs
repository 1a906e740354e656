//! Where log lines go: a shared buffer that a thread of its own writes to stdout in batches.
//!
//! A request that logs a line (every refresh writes an audit line) only appends it to the
//! buffer. The thread is woken by the first line into an empty buffer, then waits
//! [`GATHER`] for more before it takes the whole buffer and writes it with one `write`: a busy
//! server wakes it a few hundred times a second instead of once per line, and a request never
//! pays for a system call to log. Lines are never dropped: when [`LIMIT`] bytes are waiting
//! (stdout is not being read), a request that logs waits for the thread to catch up, as a
//! blocking write would have held it. [`LogGuard`] writes out what is left when it is dropped.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines waiting at most before a request that logs waits for the thread.
pub const LIMIT: usize = 1 << 20;

/// How long the thread lets lines gather after the first one before it writes them out: the
/// most a line waits in the buffer, and at most one wake-up per interval.
pub const GATHER: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The buffer got its first line, or the guard is closing.
    filled: Condvar,
    /// The thread took the buffer: room again under [`LIMIT`].
    drained: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closing: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while appending leaves at worst a partial line; logging goes on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `MakeWriter` for the fmt layer: every line it gets is appended to the buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Keeps the writing thread: dropping it writes out every line still waiting, then stops the
/// thread.
#[must_use = "dropping the guard stops the logging thread"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread that writes the buffer to `out`.
pub fn start<W: Write + Send + 'static>(out: W) -> (LogWriter, LogGuard) {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("tessera-log".into()).spawn(move || write_out(&shared, out)).ok()
    };
    // No thread to write for us: lines are written by whoever logs them instead.
    let writer = LogWriter { shared: shared.clone() };
    if thread.is_none() {
        shared.state().closing = true;
    }
    (writer, LogGuard { shared, thread })
}

/// The thread's loop: wait for a first line, let more gather, take them all, write them.
fn write_out<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.state();
        while state.lines.is_empty() && !state.closing {
            state = shared.filled.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.lines.is_empty() {
            return; // closing, and nothing is left
        }
        if !state.closing {
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.state();
        }
        std::mem::swap(&mut batch, &mut state.lines);
        drop(state);
        shared.drained.notify_all();
        // A stdout that is closed or failing loses these lines; there is nowhere else to say so.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.state().closing = true;
        self.shared.filled.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { shared: &self.shared }
    }
}

/// One log line on its way into the buffer (the fmt layer writes each line with one call).
pub struct Line<'a> {
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.state();
        while state.lines.len() >= LIMIT && !state.closing {
            state = self.shared.drained.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.closing {
            // The thread is stopping or gone (or never started), and may not look at the buffer
            // again: write the line ourselves.
            drop(state);
            let mut stdout = std::io::stdout().lock();
            return stdout.write_all(bytes).and_then(|()| stdout.flush()).map(|()| bytes.len());
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(bytes);
        drop(state);
        if was_empty {
            self.shared.filled.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// An output the test reads back, which can refuse to make progress.
    #[derive(Clone, Default)]
    struct Output {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        stuck: Arc<AtomicBool>,
    }

    impl Write for Output {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            while self.stuck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            *self.writes.lock().unwrap() += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_logged_together_are_written_in_one_batch_and_all_are_written_out_at_the_end() {
        let out = Output::default();
        let (writer, guard) = start(out.clone());
        for i in 0..1000 {
            log(&writer, &format!("line {i}\n"));
        }
        drop(guard);
        let written = String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected, "every line, in order");
        assert!(*out.writes.lock().unwrap() < 100, "{} writes for 1000 lines", out.writes.lock().unwrap());
    }

    #[test]
    fn a_line_is_written_without_waiting_for_the_end() {
        let out = Output::default();
        let (writer, _guard) = start(out.clone());
        log(&writer, "hello\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.bytes.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&out.bytes.lock().unwrap()[..], b"hello\n");
    }

    #[test]
    fn a_stuck_output_holds_loggers_back_at_the_limit_and_loses_nothing() {
        let out = Output::default();
        out.stuck.store(true, Ordering::SeqCst);
        let (writer, guard) = start(out.clone());
        let line = format!("{}\n", "x".repeat(1023));
        let lines = 3 * LIMIT / line.len();
        let logger = {
            let (writer, line) = (writer.clone(), line.clone());
            std::thread::spawn(move || (0..lines).for_each(|_| log(&writer, &line)))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!logger.is_finished(), "the logger waits while the output is stuck");
        assert!(writer.shared.state().lines.len() <= LIMIT + line.len(), "the buffer stays bounded");
        out.stuck.store(false, Ordering::SeqCst);
        logger.join().unwrap();
        drop(guard);
        assert_eq!(out.bytes.lock().unwrap().len(), lines * line.len());
    }
}
