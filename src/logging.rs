//! Logging of a process: where lines go (stderr), how they look (text or JSON), which are written
//! (a filter that SIGHUP may change while the node runs) and, under systemd, the priority of each
//! line.
//!
//! Text lines carry ANSI colours only when stderr is a terminal. When stderr is the journal
//! (`JOURNAL_STREAM` names it), every line starts with `<N>`, its syslog priority (sd-daemon(3)),
//! which journald keeps as the entry's priority and strips; the timestamp is left to the journal.
//! JSON lines are flat: `timestamp`, `level`, `target`, `message` and the event's own fields at
//! the top level, one object per line.
//!
//! Calls nothing else in the crate; `main` builds it from the environment, `cli` applies the
//! configuration's `[log]` to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How the process logs, decided before anything is logged.
#[derive(Debug, Clone)]
pub struct Options {
    /// The filter to start with ("info", "warn,wsus_edge::access=off").
    pub filter: String,
    /// Set by the environment (`WSUS_EDGE_LOG`): the configuration's `log.level` does not
    /// replace it, neither at start nor on SIGHUP.
    pub filter_pinned: bool,
    /// JSON lines instead of text.
    pub json: bool,
    /// Set by the environment (`WSUS_EDGE_LOG_FORMAT`): `log.format` does not replace it.
    pub format_pinned: bool,
    /// stderr is a terminal: colours.
    pub ansi: bool,
    /// stderr is the journal: priority prefixes, no timestamps.
    pub journald: bool,
}

/// The handle that changes logging while the process runs.
#[derive(Clone)]
pub struct Logging {
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    current: Arc<std::sync::Mutex<String>>,
    json: Arc<AtomicBool>,
    filter_pinned: bool,
    format_pinned: bool,
}

/// rustls warns of what a peer sent in its handshake (an IP address given as the server name,
/// as OpenSSL-based clients do): one line per connection, written at a peer's will. Such lines
/// are kept to errors unless the directives name rustls themselves.
const PEER_HANDSHAKE: &str = "rustls::msgs::handshake=error";

/// `directives` as a filter, with [`PEER_HANDSHAKE`] unless they speak of rustls.
fn filter(directives: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    let filter = EnvFilter::try_new(directives)?;
    if directives.contains("rustls") {
        return Ok(filter);
    }
    Ok(filter.add_directive(PEER_HANDSHAKE.parse()?))
}

impl Logging {
    /// Install the process's subscriber. A filter that does not parse falls back to "info" (the
    /// configuration's `log.level` is validated before it gets here; the environment's is not).
    pub fn init(options: Options) -> Logging {
        let (filter, current) = match filter(&options.filter) {
            Ok(filter) => (filter, options.filter.clone()),
            Err(e) => {
                eprintln!(
                    "wsus-edge: log filter {:?} does not parse ({e}); using \"info\"",
                    options.filter
                );
                (filter("info").unwrap_or_default(), "info".to_string())
            }
        };
        let (filter, handle) = reload::Layer::new(filter);
        let json = Arc::new(AtomicBool::new(options.json));
        let line = Line {
            json: json.clone(),
            journald: options.journald,
            timed: format::format().with_timer(SystemTime),
            untimed: format::format().without_time(),
            json_format: format::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
        };
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(options.ansi)
            .event_format(line);
        // A second init (several nodes in one test process) keeps the first subscriber.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        Logging {
            filter: Some(handle),
            current: Arc::new(std::sync::Mutex::new(current)),
            json,
            filter_pinned: options.filter_pinned,
            format_pinned: options.format_pinned,
        }
    }

    /// A handle that changes nothing: for a process (a test, a library user) that set up its own
    /// logging.
    pub fn unmanaged() -> Logging {
        Logging {
            filter: None,
            current: Arc::new(std::sync::Mutex::new(String::new())),
            json: Arc::new(AtomicBool::new(false)),
            filter_pinned: true,
            format_pinned: true,
        }
    }

    /// Apply the configuration's filter unless the environment pinned one. Returns what
    /// happened, for the reload's log line.
    pub fn set_filter(&self, directives: &str) -> FilterChange {
        let Some(handle) = &self.filter else {
            return FilterChange::Unmanaged;
        };
        if self.filter_pinned {
            return FilterChange::Pinned;
        }
        let mut current = crate::lock::lock(&self.current);
        if *current == directives {
            return FilterChange::Same;
        }
        let filter = match filter(directives) {
            Ok(filter) => filter,
            Err(e) => return FilterChange::Invalid(e.to_string()),
        };
        match handle.reload(filter) {
            Ok(()) => {
                let before = std::mem::replace(&mut *current, directives.to_string());
                FilterChange::Changed { before }
            }
            Err(e) => FilterChange::Invalid(e.to_string()),
        }
    }

    /// Apply the configuration's format unless the environment pinned one.
    pub fn set_json(&self, json: bool) {
        if !self.format_pinned {
            self.json.store(json, Ordering::Relaxed);
        }
    }

    pub fn is_json(&self) -> bool {
        self.json.load(Ordering::Relaxed)
    }
}

/// What [`Logging::set_filter`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum FilterChange {
    Changed {
        before: String,
    },
    Same,
    /// `WSUS_EDGE_LOG` set the filter; the configuration does not replace it.
    Pinned,
    /// The process did not install its logging through [`Logging::init`].
    Unmanaged,
    Invalid(String),
}

/// The syslog priority of a level (sd-daemon(3): `<3>` error … `<7>` debug).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// One event as one line, in the format of the moment.
struct Line {
    json: Arc<AtomicBool>,
    journald: bool,
    timed: Format<Full, SystemTime>,
    untimed: Format<Full, ()>,
    json_format: Format<Json, SystemTime>,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.journald {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        if self.json.load(Ordering::Relaxed) {
            self.json_format.format_event(ctx, writer, event)
        } else if self.journald {
            self.untimed.format_event(ctx, writer, event)
        } else {
            self.timed.format_event(ctx, writer, event)
        }
    }
}

/// Whether `JOURNAL_STREAM` ("device:inode", set by systemd) names the file behind stderr: only
/// then does the journal read our stderr (a child whose stderr was redirected inherits the
/// variable but not the stream).
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(stat) => stat.st_dev == dev && stat.st_ino == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_handshake_warnings_stay_out_unless_asked_for() {
        let quiet = filter("warn").unwrap().to_string();
        assert!(quiet.contains(PEER_HANDSHAKE), "{quiet}");
        let asked = filter("warn,rustls=debug").unwrap().to_string();
        assert!(!asked.contains(PEER_HANDSHAKE), "{asked}");
        assert!(filter("no such=level=x").is_err());
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:2")));
        let stat = rustix::fs::fstat(std::io::stderr()).unwrap();
        let own = format!("{}:{}", stat.st_dev, stat.st_ino);
        assert!(stderr_is_journal(Some(&own)));
    }

    #[test]
    fn an_unmanaged_handle_changes_nothing() {
        let logging = Logging::unmanaged();
        assert_eq!(logging.set_filter("debug"), FilterChange::Unmanaged);
    }
}
