//! Progress of long work started from the command line (`import`, `sync`): a bar when stderr is
//! a terminal, otherwise a plain line every few seconds (a journal or a CI log gets no control
//! characters). Work inside a running node reports through its status and metrics instead.
//! Calls `config::units` (sizes as people read them).

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Items(&'static str),
    Bytes,
}

/// One phase of work with a known total.
pub struct Progress {
    label: String,
    unit: Unit,
    /// What done is; it may grow as the work finds more to do.
    total: AtomicU64,
    /// On a terminal.
    bar: Option<ProgressBar>,
    /// Otherwise: (done, when the last line was written).
    plain: Mutex<(u64, Instant)>,
}

/// How often a plain line is written.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(label: &str, total: u64, unit: Unit) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = match unit {
                Unit::Items(what) => {
                    format!("{{msg:>12}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{eta}} left)")
                }
                Unit::Bytes => {
                    "{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"
                        .to_owned()
                }
            };
            let style = ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::new(total).with_style(style);
            bar.set_message(label.to_owned());
            bar
        });
        Progress {
            label: label.to_owned(),
            unit,
            total: AtomicU64::new(total),
            bar,
            plain: Mutex::new((0, Instant::now())),
        }
    }

    /// The work turned out to be `total` in all.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Count `n` more done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            return;
        }
        let mut plain = crate::lock::lock(&self.plain);
        plain.0 += n;
        if plain.1.elapsed() >= LINE_EVERY {
            plain.1 = Instant::now();
            eprintln!("{}", self.line(plain.0));
        }
    }

    /// How much is counted so far.
    pub fn done(&self) -> u64 {
        match &self.bar {
            Some(bar) => bar.position(),
            None => crate::lock::lock(&self.plain).0,
        }
    }

    /// The phase is over (whatever was counted).
    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => {
                let plain = crate::lock::lock(&self.plain);
                eprintln!("{}", self.line(plain.0));
            }
        }
    }

    fn line(&self, done: u64) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let percent = if total == 0 {
            100.0
        } else {
            100.0 * done as f64 / total as f64
        };
        match self.unit {
            Unit::Items(what) => format!("{}: {done}/{} {what} ({percent:.0}%)", self.label, total),
            Unit::Bytes => format!(
                "{}: {} of {} ({percent:.0}%)",
                self.label,
                crate::config::units::format_bytes(done),
                crate::config::units::format_bytes(total)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far() {
        let p = Progress::new("import", 2000, Unit::Items("updates"));
        assert_eq!(p.line(500), "import: 500/2000 updates (25%)");
        let b = Progress::new("payloads", 4 << 20, Unit::Bytes);
        assert!(b.line(1 << 20).ends_with("(25%)"), "{}", b.line(1 << 20));
    }
}
