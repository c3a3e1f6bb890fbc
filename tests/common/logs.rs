//! The in-process nodes' logs: routed to the test output and kept, so that a test can look for
//! the lines it expects ([`logged`], [`logged_since`] after a [`log_mark`]).

use std::sync::Mutex;

/// Route the nodes' logs to the test output (shown for failing tests) and keep them for
/// [`logged`]; RUST_LOG filters (default: warnings, and the access lines).
pub fn logs() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,wsus_edge::access=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(|| Tee(tracing_subscriber::fmt::TestWriter::new()))
        .try_init();
}

static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes to the test output and to [`LOGGED`].
struct Tee(tracing_subscriber::fmt::TestWriter);

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGGED.lock().unwrap().extend_from_slice(buf);
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// How many log lines there are so far: with [`logged_since`], what came after.
pub fn log_mark() -> usize {
    String::from_utf8_lossy(&LOGGED.lock().unwrap())
        .lines()
        .count()
}

/// The log lines (of every test of this binary so far) that contain every one of `words`.
pub fn logged(words: &[&str]) -> Vec<String> {
    logged_since(0, words)
}

/// The log lines after the first `mark` that contain every one of `words`.
pub fn logged_since(mark: usize, words: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&LOGGED.lock().unwrap()).into_owned();
    text.lines()
        .skip(mark)
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}
