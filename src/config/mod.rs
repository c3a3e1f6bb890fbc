//! The typed configuration contract: TOML + environment overrides → [`Config`], every problem
//! reported with its dotted key; human units ([`units`]).
//!
//! It owns the key names, their defaults and their limits (DESIGN.md §5 is the contract). It calls
//! nothing else in the crate, reads no environment itself (the caller passes it in) and touches the
//! filesystem only in [`Config::load`] (the file), [`Config::check_files`] (for `check-config`)
//! and [`read_tokens`] (the token files it names).
//!
//! The text is parsed into a `toml::Table` and walked by hand rather than deserialized with serde,
//! because serde stops at the first error and the operator should see every mistake at once. Each
//! typed getter turns a value into its type or pushes a [`Problem`] and carries on.

pub mod units;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

/// Prefix of the environment variables that override keys: `WSUS_EDGE_<SECTION>__<KEY>`.
const ENV_PREFIX: &str = "WSUS_EDGE_";
/// `WSUS_EDGE_*` variables that are not settings: they configure logging (read in main).
const PROCESS_VARIABLES: [&str; 2] = ["WSUS_EDGE_LOG", "WSUS_EDGE_LOG_FORMAT"];

/// Every section and its keys: the walk rejects anything else.
const SCHEMA: &[(&str, &[&str])] = &[
    ("node", &["name", "data_dir", "shutdown_grace"]),
    (
        "listen",
        &[
            "http",
            "https",
            "admin",
            "max_connections",
            "header_timeout",
            "idle_timeout",
            "body_timeout",
            "max_header_bytes",
            "compress_answers",
            "max_soap_calls",
            "max_soap_wait",
        ],
    ),
    ("tls", &["cert", "key", "client_ca"]),
    (
        "upstream",
        &[
            "url",
            "transport",
            "ca",
            "client_cert",
            "client_key",
            "token_file",
            "sync_interval",
            "drivers",
            "mode",
            "declines",
            "connect_timeout",
            "timeout",
            "retries",
            "concurrency",
            "per_object",
            "fill_timeout",
            "mismatch_backoff",
        ],
    ),
    ("downstream", &["token_file", "allow_anonymous"]),
    ("admin", &["token_file", "read_networks", "server_names"]),
    (
        "cache",
        &[
            "memory_bytes",
            "disk_bytes",
            "min_free_disk",
            "slice_bytes",
            "prefetch",
            "max_ranges",
            "read_ahead",
            "max_object_bytes",
            "max_partial_objects",
            "scrub_rate",
            "hold_ranges",
        ],
    ),
    ("wan", &["max_bandwidth"]),
    ("reports", &["rollup_interval"]),
    ("state", &["database", "pool_size", "pool_wait"]),
    ("log", &["level", "format"]),
];

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const DEFAULT_NAME: &str = "wsus-edge";
const DEFAULT_DATA_DIR: &str = "./data";
const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8530);
const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8540);
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(15 * 60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 4;
const DEFAULT_CONCURRENCY: usize = 16;
const DEFAULT_PER_OBJECT: usize = 4;
/// A 4 MiB slice takes 35 s at 1 Mbit/s; five minutes leaves room for a slow link's retries.
const DEFAULT_FILL_TIMEOUT: Duration = Duration::from_secs(300);
/// Longer than the retries of curl, wget and aria2c, short enough that a healed upstream is
/// used again soon.
const DEFAULT_MISMATCH_BACKOFF: Duration = Duration::from_secs(120);
const DEFAULT_MEMORY_BYTES: u64 = 512 * MIB;
const DEFAULT_DISK_BYTES: u64 = 100 * GIB;
const DEFAULT_MIN_FREE_DISK: u64 = GIB;
const DEFAULT_SLICE_BYTES: u64 = 4 * MIB;
const DEFAULT_MAX_RANGES: usize = 16;
const DEFAULT_READ_AHEAD: u32 = 0;
/// Windows feature updates and Office images are a few GiB; nothing WSUS serves comes near this.
const DEFAULT_MAX_OBJECT_BYTES: u64 = 32 * GIB;
/// A pass over 100 GiB takes 3.5 hours; a disk barely notices 8 MiB/s of sequential reads.
const DEFAULT_SCRUB_RATE: u64 = 8 * MIB;
/// Two descriptors each: 2,048 of the unit's 65,536.
const DEFAULT_MAX_PARTIAL_OBJECTS: usize = 1024;
const DEFAULT_ROLLUP_INTERVAL: Duration = Duration::from_secs(15 * 60);
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(10);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_LOG_LEVEL: &str = "info";
/// Per listener. Each connection holds a descriptor; the node raises its soft limit to the hard
/// one at start, and systemd's unit sets that to 65536.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Until a new connection's first request head is complete (nginx: client_header_timeout 60s;
/// a Windows client sends its head in one segment).
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// A connection with no request under way and no byte moving either way is closed after this
/// (nginx: keepalive_timeout 75s, send_timeout 60s).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A whole request body (SOAP, admin) must have arrived by then.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The request line and headers together; hyper's floor is 8 KiB.
const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * KIB;
/// A scan's pages answer in milliseconds; a call that waited this long meets a node that is
/// behind by seconds of work, and its client is better told to come back.
const DEFAULT_MAX_SOAP_WAIT: Duration = Duration::from_secs(2);
const MIN_HEADER_BYTES: u64 = 8 * KIB;
const MAX_HEADER_BYTES: u64 = MIB;

/// Slices are aligned and power-of-two sized so slice arithmetic is shifts and masks; below
/// 64 KiB the per-slice overhead dominates, above 64 MiB a single miss holds too much memory.
const SLICE_MIN: u64 = 64 * KIB;
const SLICE_MAX: u64 = 64 * MIB;

/// Intervals and timeouts are capped so that `Instant + duration` can never overflow (tokio
/// panics on that) and a typo like "15d" for "15m" is at least bounded.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

/// A whole node's configuration, every value typed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: Node,
    pub listen: Listen,
    /// Present when the node serves HTTPS (required by `listen.https`).
    pub tls: Option<Tls>,
    /// Present on a downstream (branch) node; absent on a root.
    pub upstream: Option<Upstream>,
    pub downstream: Downstream,
    pub admin: Admin,
    pub cache: Cache,
    pub wan: Wan,
    pub reports: Reports,
    pub state: State,
    pub log: Log,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Shown in the admin pages and reported to the upstream. Default "wsus-edge".
    pub name: String,
    /// Root of all state (cache, partial fills, state.db, cookie key). Default "./data", relative
    /// to the working directory.
    pub data_dir: PathBuf,
    /// How long a stopping node lets requests in flight (downloads) finish before it closes
    /// their connections. Default 30s.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Listen {
    /// Plain HTTP for clients and downstream servers. Default 0.0.0.0:8530.
    pub http: SocketAddr,
    /// HTTPS (WSUS uses 8531); needs [`Config::tls`]. Default: off.
    pub https: Option<SocketAddr>,
    /// Admin API, metrics and status pages. Default 127.0.0.1:8540 (loopback only).
    pub admin: SocketAddr,
    /// How connections are kept in bounds, on every listener.
    pub limits: ConnectionLimits,
    /// SOAP answers in the coding their caller offers (xpress for Windows clients, gzip for
    /// nodes); off, always as they are. Default true.
    pub compress_answers: bool,
    /// SOAP calls answered at once; more wait. Default: four per core.
    pub max_soap_calls: Option<usize>,
    /// How long a SOAP call may wait for one of those before the caller is told ServerBusy
    /// (503, Retry-After). Default 2s; zero: told at once.
    pub max_soap_wait: Duration,
}

/// What one connection may hold and for how long (each listener applies them alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections per listener; one more is accepted and closed at once. Default 10000.
    pub max_connections: usize,
    /// From accept until the first request head is complete. Default 20s.
    pub header_timeout: Duration,
    /// No request under way and no byte moving: the connection is closed. Default 60s.
    pub idle_timeout: Duration,
    /// A whole request body, from the head on. Default 60s.
    pub body_timeout: Duration,
    /// The request line and headers together, bytes (431 above). Default 64 KiB.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain of this node.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted (mutual TLS from downstream
    /// servers); none: client certificates are not requested.
    pub client_ca: Option<PathBuf>,
}

/// How this node reaches its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/3 when the upstream offers it, else HTTP/1.1 or HTTP/2 over TCP.
    Auto,
    /// HTTP/1.1 or HTTP/2 over TCP only.
    Tcp,
    /// HTTP/3 over QUIC only (needs an https:// url).
    Quic,
}

/// Which driver updates a downstream node syncs from its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverSync {
    /// Every driver the upstream lists, as WSUS does.
    All,
    /// Only the drivers for device ids this node's clients listed in their driver passes
    /// (MS-WSUSSS GetDriverIdList); software is listed by product and classification, the
    /// Drivers classifications left out.
    OnDemand,
}

impl DriverSync {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverSync::All => "all",
            DriverSync::OnDemand => "on-demand",
        }
    }
}

/// Where a downstream node's target groups, approvals and declines come from (MS-WSUSSS §1.3:
/// a replica or an autonomous downstream server). The catalog always comes from the upstream,
/// and client status always rolls up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Groups, approvals and declines from the upstream (GetDeployments); changes made here are
    /// refused.
    Replica,
    /// Groups and approvals managed here; GetDeployments is not called for them. Declines
    /// follow the upstream's when `upstream_declines`, else they are made here.
    Autonomous { upstream_declines: bool },
}

impl Replication {
    /// `upstream.mode` as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Replica => "replica",
            Replication::Autonomous { .. } => "autonomous",
        }
    }

    pub fn is_replica(self) -> bool {
        self == Replication::Replica
    }

    /// Whether the declined updates are the upstream's.
    pub fn upstream_declines(self) -> bool {
        match self {
            Replication::Replica => true,
            Replication::Autonomous { upstream_declines } => upstream_declines,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// Base URL of the parent, `http(s)://host[:port][/prefix]`, without a trailing "/", query
    /// or fragment.
    pub url: String,
    /// Default [`Transport::Auto`].
    pub transport: Transport,
    /// PEM bundle that verifies the upstream's certificate; none: the system roots.
    pub ca: Option<PathBuf>,
    /// Mutual TLS towards the upstream: both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// File holding the bearer token this node presents to its upstream.
    pub token_file: Option<PathBuf>,
    /// Time between metadata syncs (the first at start). Default 15m; zero: only when asked
    /// (`wsus-edge sync`, `POST /api/v1/sync`).
    pub sync_interval: Duration,
    /// Default [`DriverSync::All`].
    pub drivers: DriverSync,
    /// `mode` ("replica", the default, or "autonomous") and `declines` ("upstream", the
    /// default of a replica and its only choice, or "local", the default of an autonomous node).
    pub replication: Replication,
    /// Time allowed to establish a connection. Default 5s.
    pub connect_timeout: Duration,
    /// No byte from upstream for this long = a stalled fetch. Default 30s.
    pub timeout: Duration,
    /// Resumptions of one slice after a failure mid-slice. Default 4.
    pub retries: u32,
    /// Slice fetches in flight to the upstream at once (1..=1024). Default 16.
    pub concurrency: usize,
    /// Slice fetches in flight for one object at once (1..=concurrency). Default 4, or
    /// `concurrency` when that is smaller.
    pub per_object: usize,
    /// The most one slice's fetch may take, resumptions included: an upstream that sends part
    /// of every resumed range cannot keep a client waiting longer. Default 5m.
    pub fill_timeout: Duration,
    /// After the upstream's bytes for a name failed verification, the name is answered 502
    /// without a fetch for this long, so that no client completes a wrong file from ranges
    /// served before and after. Zero: fetched again at once. Default 2m.
    pub mismatch_backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct Downstream {
    /// The bearer tokens this node accepts from its downstream servers, one per line.
    pub token_file: Option<PathBuf>,
    /// Serve the server-server services to anyone, without a token or a client certificate.
    /// Default false: without `token_file` or `tls.client_ca` they are closed.
    pub allow_anonymous: bool,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// The bearer tokens the admin API accepts for changes (approvals, groups), one per line;
    /// none: the admin listener is read-only.
    pub token_file: Option<PathBuf>,
    /// Who may read the admin views (status pages, computers, metrics) without a token:
    /// loopback always, and these networks. Default: none besides loopback.
    pub read_networks: Vec<Network>,
    /// Host names the admin listener answers to besides its own (loopback names, this
    /// machine's host name, the node's name, the listener's address): a request naming another
    /// `Host` is refused, so that a web page cannot reach the admin API by DNS rebinding.
    pub server_names: Vec<String>,
}

/// An IP network, `10.0.0.0/8` or `fd00::/8` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.trim().parse().ok()?, None),
        };
        let bits = match addr {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Network { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let masked = |a: u128, bits: u32| {
            let host = bits - u32::from(self.prefix);
            if host >= 128 { 0 } else { (a >> host) << host }
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => {
                masked(u128::from(u32::from(n)), 32) == masked(u128::from(u32::from(i)), 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => {
                masked(u128::from(n), 128) == masked(u128::from(i), 128)
            }
            _ => false,
        }
    }
}

/// Which content is fetched before a client asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// The content of approved updates, after each sync.
    Approved,
    /// Nothing: content is fetched on first request only.
    None,
}

#[derive(Debug, Clone)]
pub struct Cache {
    /// Memory tier size in bytes; 0 disables the tier. Default 512 MiB.
    pub memory_bytes: u64,
    /// Disk tier size in bytes. Default 100 GiB.
    pub disk_bytes: u64,
    /// Free space always left on the data_dir filesystem, in bytes. Default 1 GiB.
    pub min_free_disk: u64,
    /// Fill unit in bytes: a power of two in 64 KiB..=64 MiB. Default 4 MiB.
    pub slice_bytes: u64,
    /// Default [`Prefetch::Approved`].
    pub prefetch: Prefetch,
    /// Requests with more range parts than this get the whole object with 200 (1..=1024).
    /// Default 16.
    pub max_ranges: usize,
    /// Extra slices fetched past the end of what a request needs (0..=64). Default 0.
    pub read_ahead: u32,
    /// The largest object a branch fetches from its upstream; a larger size in an answer is a
    /// 502, never an allocation for it. At least slice_bytes. Default 32 GiB.
    pub max_object_bytes: u64,
    /// Objects being filled on disk at once (each holds two descriptors and its size in
    /// reserved space); past it the least recently used idle one is evicted, or, when every
    /// one is busy, a new object is served through without caching. Default 1024.
    pub max_partial_objects: usize,
    /// Bytes per second the background scrub re-reads committed objects at, checking them
    /// against their seals; 0: no scrub. Default 8 MiB/s.
    pub scrub_rate: u64,
    /// A response's last byte waits for the object's verdict (its whole SHA-1) when every
    /// slice of the object is there or on its way, so that no client pieces a complete wrong
    /// file together from ranges. Default true.
    pub hold_ranges: bool,
}

#[derive(Debug, Clone)]
pub struct Wan {
    /// Upstream bandwidth limit in bytes per second; none: unlimited (the default).
    pub max_bandwidth: Option<u64>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line, every field at the top level.
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    /// Which events are written: a level ("info") or a filter of targets
    /// ("warn,wsus_edge::access=off"). Default "info". Changed by SIGHUP without a restart.
    pub level: String,
    /// Default [`LogFormat::Text`].
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct Reports {
    /// Time between status rollups to the upstream. Default 15m.
    pub rollup_interval: Duration,
}

/// Where the node keeps its state (catalog, groups, approvals, computers, update states,
/// events, sync and rollup cursors).
#[derive(Clone)]
pub struct State {
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/dbname`): the state
    /// lives there, and several nodes may share it. None (the default): `data_dir/state.db`.
    pub database: Option<String>,
    /// Connections to it this process opens at most. Default 16.
    pub pool_size: usize,
    /// How long a caller waits for a connection (and a connection to be made). Default 10s.
    pub pool_wait: Duration,
}

impl fmt::Debug for State {
    /// Without the URL's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("database", &self.database.as_ref().map(|_| "postgres://…"))
            .field("pool_size", &self.pool_size)
            .field("pool_wait", &self.pool_wait)
            .finish()
    }
}

impl Default for State {
    fn default() -> State {
        State {
            database: None,
            pool_size: DEFAULT_POOL_SIZE,
            pool_wait: DEFAULT_POOL_WAIT,
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key ("cache.slice_bytes"), a section name, an environment variable's name, or ""
    /// for the file as a whole (unreadable, not TOML).
    pub key: String,
    pub message: String,
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file path, or "built-in defaults" when no file was given.
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(f, "{}: {count} problem{plural}:", self.source)?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: Node {
                name: DEFAULT_NAME.to_string(),
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            },
            listen: Listen {
                http: DEFAULT_HTTP,
                https: None,
                admin: DEFAULT_ADMIN,
                limits: ConnectionLimits::default(),
                compress_answers: true,
                max_soap_calls: None,
                max_soap_wait: DEFAULT_MAX_SOAP_WAIT,
            },
            tls: None,
            upstream: None,
            downstream: Downstream {
                token_file: None,
                allow_anonymous: false,
            },
            admin: Admin {
                token_file: None,
                read_networks: Vec::new(),
                server_names: Vec::new(),
            },
            cache: Cache {
                memory_bytes: DEFAULT_MEMORY_BYTES,
                disk_bytes: DEFAULT_DISK_BYTES,
                min_free_disk: DEFAULT_MIN_FREE_DISK,
                slice_bytes: DEFAULT_SLICE_BYTES,
                prefetch: Prefetch::Approved,
                max_ranges: DEFAULT_MAX_RANGES,
                read_ahead: DEFAULT_READ_AHEAD,
                max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
                max_partial_objects: DEFAULT_MAX_PARTIAL_OBJECTS,
                scrub_rate: DEFAULT_SCRUB_RATE,
                hold_ranges: true,
            },
            wan: Wan {
                max_bandwidth: None,
            },
            reports: Reports {
                rollup_interval: DEFAULT_ROLLUP_INTERVAL,
            },
            state: State::default(),
            log: Log {
                level: DEFAULT_LOG_LEVEL.to_string(),
                format: LogFormat::Text,
            },
        }
    }
}

impl Config {
    /// Parse TOML text, then apply environment overrides, then validate. `env` holds (NAME, VALUE)
    /// pairs of the process environment; only names starting with "WSUS_EDGE_" and containing "__"
    /// are overrides: `WSUS_EDGE_<SECTION>__<KEY>` (case-insensitive, e.g.
    /// `WSUS_EDGE_CACHE__MEMORY_BYTES=1GiB`, `WSUS_EDGE_UPSTREAM__URL=http://central:8530` which
    /// creates the `[upstream]` section). An empty value removes the key, so it takes its default.
    /// An override naming an unknown section/key is a problem whose key is the variable name.
    pub fn parse(
        text: &str,
        source: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut walk = Walk::default();
        let config = match text.parse::<Table>() {
            Ok(mut root) => {
                walk.apply_env(&mut root, env);
                walk.config(&root)
            }
            Err(error) => {
                walk.problem("", syntax_message(text, &error));
                // The overrides cannot be applied, but their names can still be checked.
                walk.apply_env(&mut Table::new(), env);
                None
            }
        };
        match config {
            Some(config) if walk.problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                source: source.to_string(),
                problems: walk.problems,
            }),
        }
    }

    /// Read the file (an unreadable file is one problem with key "" and the io error) and parse
    /// it; with `None`, start from an empty table (built-in defaults) and still apply `env`.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Config::parse("", "built-in defaults", env);
        };
        let source = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &source, env),
            Err(error) => Err(ConfigError {
                source,
                problems: vec![Problem {
                    key: String::new(),
                    message: format!("cannot read the file: {error}"),
                }],
            }),
        }
    }

    /// The problems only a look at the filesystem reveals: the certificate, key, CA and token
    /// files exist and are readable regular files, and `data_dir` is a directory or can be created
    /// (its parent exists). Kept apart from [`Config::parse`] so that parsing stays pure.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut files: Vec<(&str, &Path)> = Vec::new();
        if let Some(tls) = &self.tls {
            files.push(("tls.cert", &tls.cert));
            files.push(("tls.key", &tls.key));
            if let Some(client_ca) = &tls.client_ca {
                files.push(("tls.client_ca", client_ca));
            }
        }
        if let Some(upstream) = &self.upstream {
            let optional = [
                ("upstream.ca", &upstream.ca),
                ("upstream.client_cert", &upstream.client_cert),
                ("upstream.client_key", &upstream.client_key),
                ("upstream.token_file", &upstream.token_file),
            ];
            for (key, path) in optional {
                if let Some(path) = path {
                    files.push((key, path));
                }
            }
        }
        if let Some(path) = &self.downstream.token_file {
            files.push(("downstream.token_file", path));
        }
        if let Some(path) = &self.admin.token_file {
            files.push(("admin.token_file", path));
        }
        file_problems(&files, &self.node.data_dir)
    }

    /// The same checks for a configuration that does not parse: every file-naming key that is
    /// a string in the file (after the environment's overrides) is checked, so that
    /// `check-config` can report these problems together with the others.
    pub fn check_files_of_text(text: &str, env: &[(String, String)]) -> Vec<Problem> {
        let Ok(mut root) = text.parse::<Table>() else {
            return Vec::new();
        };
        Walk::default().apply_env(&mut root, env);
        let string = |section: &str, key: &str| {
            root.get(section)
                .and_then(Value::as_table)
                .and_then(|t| t.get(key))
                .and_then(Value::as_str)
                .map(PathBuf::from)
        };
        let named: Vec<(&str, PathBuf)> = FILE_KEYS
            .iter()
            .filter_map(|(section, key, dotted)| string(section, key).map(|p| (*dotted, p)))
            .collect();
        let files: Vec<(&str, &Path)> = named.iter().map(|(k, p)| (*k, p.as_path())).collect();
        let data_dir =
            string("node", "data_dir").unwrap_or_else(|| Config::default().node.data_dir);
        file_problems(&files, &data_dir)
    }

    /// True when this node has an upstream (a branch); false for a root.
    pub fn is_downstream(&self) -> bool {
        self.upstream.is_some()
    }
}

/// The bearer tokens of a token file (`key` names it in problems): one per line, blank lines and
/// surrounding whitespace ignored; a file without any is a problem.
pub fn read_tokens(key: &str, path: &Path) -> Result<Vec<String>, Problem> {
    let problem = |message: String| Problem {
        key: key.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(problem(format!("{} holds no token", path.display())));
    }
    Ok(tokens)
}

/// The keys that name files, as (section, key, "section.key").
const FILE_KEYS: [(&str, &str, &str); 9] = [
    ("tls", "cert", "tls.cert"),
    ("tls", "key", "tls.key"),
    ("tls", "client_ca", "tls.client_ca"),
    ("upstream", "ca", "upstream.ca"),
    ("upstream", "client_cert", "upstream.client_cert"),
    ("upstream", "client_key", "upstream.client_key"),
    ("upstream", "token_file", "upstream.token_file"),
    ("downstream", "token_file", "downstream.token_file"),
    ("admin", "token_file", "admin.token_file"),
];

/// What the file a key names is, and how an operator makes it.
fn how_to_make(key: &str) -> &'static str {
    match key {
        "tls.cert" | "tls.key" => {
            "make this node's certificate and key with `wsus-edge cert node --ca CA_DIR --name \
             HOST --out DIR` (and a CA first: `wsus-edge cert ca --out CA_DIR`)"
        }
        "tls.client_ca" => {
            "it is the CA that signed the branches' client certificates (CA_DIR/ca.pem of \
             `wsus-edge cert ca`)"
        }
        "upstream.ca" => {
            "it is the CA that signed the upstream's certificate (its CA_DIR/ca.pem), copied \
             from the upstream"
        }
        "upstream.client_cert" | "upstream.client_key" => {
            "make them on the upstream's CA with `wsus-edge cert client --ca CA_DIR --name \
             BRANCH --out DIR`"
        }
        "upstream.token_file" => {
            "it holds this node's token, one line that the upstream lists in its \
             downstream.token_file (make one with `openssl rand -hex 32`)"
        }
        _ => "it holds one token per line (make one with `openssl rand -hex 32 >> FILE`)",
    }
}

/// Each file must be a readable regular file; `data_dir` a directory or creatable.
fn file_problems(files: &[(&str, &Path)], data_dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (key, path) in files {
        // Opening (not just stat-ing) proves the process may read it.
        let checked = std::fs::File::open(path).and_then(|file| file.metadata());
        let message = match checked {
            Ok(metadata) if metadata.is_file() => continue,
            Ok(_) => format!("{} is not a regular file", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                format!("{} does not exist; {}", path.display(), how_to_make(key))
            }
            Err(error) => format!("cannot read {}: {error}", path.display()),
        };
        problems.push(Problem {
            key: key.to_string(),
            message,
        });
    }
    // The process must be able to write there (or create it there): asked of the kernel for
    // this process's user, so check-config run as the service's user answers for it.
    let writable = |dir: &Path| rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok();
    let message = match std::fs::metadata(data_dir) {
        Ok(metadata) if metadata.is_dir() && writable(data_dir) => None,
        Ok(metadata) if metadata.is_dir() => Some(format!(
            "{} is not writable by this user",
            data_dir.display()
        )),
        Ok(_) => Some(format!(
            "{} exists and is not a directory",
            data_dir.display()
        )),
        Err(_) => {
            // "data" has the empty parent: the working directory.
            let parent = data_dir
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match std::fs::metadata(parent) {
                Ok(metadata) if metadata.is_dir() && writable(parent) => None,
                Ok(metadata) if metadata.is_dir() => Some(format!(
                    "cannot create {}: {} is not writable by this user",
                    data_dir.display(),
                    parent.display()
                )),
                Ok(_) => Some(format!("{} is not a directory", parent.display())),
                Err(error) => Some(format!(
                    "cannot create {}: its parent {}: {error}",
                    data_dir.display(),
                    parent.display()
                )),
            }
        }
    };
    if let Some(message) = message {
        problems.push(Problem {
            key: "node.data_dir".to_string(),
            message,
        });
    }
    problems
}

/// "line 3, column 7: <what toml says>" for a file that is not valid TOML.
fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let detail = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return format!("not valid TOML: {detail}");
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("not valid TOML at line {line}, column {column}: {detail}")
}

/// The result of reading one key: absent (take the default), invalid (a problem was pushed), or
/// its value. Cross-key checks look only at keys that are not invalid, so one mistake is reported
/// once and not again by every rule that depends on it.
enum Field<T> {
    Absent,
    Invalid,
    Set(T),
}

impl<T> Field<T> {
    fn or(self, default: T) -> T {
        match self {
            Field::Set(value) => value,
            Field::Absent | Field::Invalid => default,
        }
    }

    fn set(self) -> Option<T> {
        match self {
            Field::Set(value) => Some(value),
            Field::Absent | Field::Invalid => None,
        }
    }

    fn is_valid(&self) -> bool {
        !matches!(self, Field::Invalid)
    }
}

/// One section of the file; `table` is `None` when the section is absent (every key takes its
/// default) or is not a table (already reported).
#[derive(Clone, Copy)]
struct Section<'t> {
    name: &'static str,
    table: Option<&'t Table>,
}

/// The walk over a parsed file: collects problems instead of stopping at the first.
#[derive(Default)]
struct Walk {
    problems: Vec<Problem>,
    /// Dotted key → the environment variable that set it, so that a bad value is traced to where
    /// it came from.
    origins: HashMap<String, String>,
}

impl Walk {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let mut message = message.into();
        if let Some(variable) = self.origins.get(key) {
            message.push_str(&format!(" (from {variable})"));
        }
        self.problems.push(Problem {
            key: key.to_string(),
            message,
        });
    }

    /// Writes the WSUS_EDGE_<SECTION>__<KEY> overrides into `root` as strings (the getters read
    /// the string form of every type); names that match no key are problems.
    fn apply_env(&mut self, root: &mut Table, env: &[(String, String)]) {
        for (name, value) in env {
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
                .and_then(|_| name.get(ENV_PREFIX.len()..))
            else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                // The variables of the process itself (logging) are read in main.
                if !PROCESS_VARIABLES
                    .iter()
                    .any(|v| name.eq_ignore_ascii_case(v))
                {
                    self.problem(
                        name,
                        format!(
                            "not a setting: overrides are named {ENV_PREFIX}<SECTION>__<KEY> \
                             (two underscores), e.g. {ENV_PREFIX}CACHE__MEMORY_BYTES"
                        ),
                    );
                }
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let Some((section, keys)) = SCHEMA.iter().find(|(known, _)| *known == section) else {
                self.problem(
                    name,
                    format!(
                        "unknown section \"{section}\"; sections are: {}",
                        section_names()
                    ),
                );
                continue;
            };
            if !keys.contains(&key.as_str()) {
                self.problem(
                    name,
                    format!(
                        "unknown key \"{key}\" in [{section}]; allowed keys: {}",
                        keys.join(", ")
                    ),
                );
                continue;
            }
            if value.is_empty() {
                if let Some(Value::Table(table)) = root.get_mut(*section) {
                    table.remove(&key);
                }
                continue;
            }
            let entry = root
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            // A section that is not a table is reported by the walk; the override has no place.
            if let Value::Table(table) = entry {
                table.insert(key.clone(), Value::String(value.clone()));
                self.origins
                    .insert(format!("{section}.{key}"), name.clone());
            }
        }
    }

    /// Reports unknown sections and keys; returns the named section.
    fn section<'t>(&mut self, root: &'t Table, name: &'static str) -> Section<'t> {
        let table = match root.get(name) {
            None => None,
            Some(Value::Table(table)) => Some(table),
            Some(other) => {
                self.problem(
                    name,
                    format!(
                        "must be a section ([{name}] on a line of its own, then its keys), found {}",
                        type_name(other)
                    ),
                );
                None
            }
        };
        if let Some(table) = table {
            let allowed = SCHEMA
                .iter()
                .find(|(section, _)| *section == name)
                .map_or(&[][..], |(_, keys)| *keys);
            for key in table.keys() {
                if !allowed.contains(&key.as_str()) {
                    self.problem(
                        &format!("{name}.{key}"),
                        format!("unknown key; [{name}] allows: {}", allowed.join(", ")),
                    );
                }
            }
        }
        Section { name, table }
    }

    /// Reads `section.key` with `convert`, reporting its error under the dotted key.
    fn field<T>(
        &mut self,
        section: Section<'_>,
        key: &str,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Field<T> {
        let Some(value) = section.table.and_then(|table| table.get(key)) else {
            return Field::Absent;
        };
        match convert(value) {
            Ok(value) => Field::Set(value),
            Err(message) => {
                self.problem(&format!("{}.{key}", section.name), message);
                Field::Invalid
            }
        }
    }

    /// The whole walk; `None` only when a required part is missing (its problem already pushed).
    fn config(&mut self, root: &Table) -> Option<Config> {
        for (name, _) in root {
            if !SCHEMA.iter().any(|(section, _)| section == name) {
                self.problem(
                    name,
                    format!("unknown section; sections are: {}", section_names()),
                );
            }
        }
        let node = self.node(root);
        let tls_present = root.contains_key("tls");
        let listen = self.listen(root, tls_present);
        let tls = self.tls(root);
        let upstream = self.upstream(root);
        let downstream = self.section(root, "downstream");
        let downstream = Downstream {
            token_file: self.field(downstream, "token_file", as_path).set(),
            allow_anonymous: self.field(downstream, "allow_anonymous", as_bool).or(false),
        };
        let admin = self.section(root, "admin");
        let admin = Admin {
            token_file: self.field(admin, "token_file", as_path).set(),
            read_networks: self
                .field(admin, "read_networks", as_networks)
                .or(Vec::new()),
            server_names: self
                .field(admin, "server_names", as_host_names)
                .or(Vec::new()),
        };
        let cache = self.cache(root);
        let wan = self.section(root, "wan");
        let wan = Wan {
            max_bandwidth: self.field(wan, "max_bandwidth", as_rate).or(None),
        };
        let reports = self.section(root, "reports");
        let reports = Reports {
            rollup_interval: self
                .field(reports, "rollup_interval", as_interval_or_off)
                .or(DEFAULT_ROLLUP_INTERVAL),
        };
        let state = self.section(root, "state");
        let state = State {
            database: self.field(state, "database", as_database_url).set(),
            pool_size: self
                .field(state, "pool_size", |v| as_count(v, 1, 1000))
                .set()
                .map_or(DEFAULT_POOL_SIZE, |n| n as usize),
            pool_wait: self
                .field(state, "pool_wait", as_pool_wait)
                .or(DEFAULT_POOL_WAIT),
        };
        let log = self.section(root, "log");
        let log = Log {
            level: self
                .field(log, "level", as_log_filter)
                .or_else_default(DEFAULT_LOG_LEVEL),
            format: self.field(log, "format", as_log_format).or(LogFormat::Text),
        };
        Some(Config {
            node,
            listen,
            tls: tls?,
            upstream: upstream?,
            downstream,
            admin,
            cache,
            wan,
            reports,
            state,
            log,
        })
    }

    fn node(&mut self, root: &Table) -> Node {
        let section = self.section(root, "node");
        Node {
            name: self
                .field(section, "name", as_name)
                .or_else_default(DEFAULT_NAME),
            data_dir: self
                .field(section, "data_dir", as_path)
                .or(PathBuf::from(DEFAULT_DATA_DIR)),
            shutdown_grace: self
                .field(section, "shutdown_grace", as_grace)
                .or(DEFAULT_SHUTDOWN_GRACE),
        }
    }

    fn listen(&mut self, root: &Table, tls_present: bool) -> Listen {
        let section = self.section(root, "listen");
        let http = self.field(section, "http", as_socket_addr).or(DEFAULT_HTTP);
        let https = self.field(section, "https", as_socket_addr).set();
        let admin = self
            .field(section, "admin", as_socket_addr)
            .or(DEFAULT_ADMIN);
        if https.is_some() && !tls_present {
            self.problem(
                "listen.https",
                "needs a [tls] section with cert and key (or remove listen.https)",
            );
        }
        // Two listeners on one port would fail at bind time with a less helpful message.
        let mut bound = vec![("listen.http", http), ("listen.admin", admin)];
        if let Some(https) = https {
            bound.insert(1, ("listen.https", https));
        }
        for (index, (key, address)) in bound.iter().enumerate() {
            if let Some((other, _)) = bound[..index]
                .iter()
                .find(|(_, earlier)| same_listener(*earlier, *address))
            {
                self.problem(key, format!("{address} is already used by {other}"));
            }
        }
        let defaults = ConnectionLimits::default();
        let limits = ConnectionLimits {
            max_connections: self
                .field(section, "max_connections", |v| as_count(v, 16, 1_000_000))
                .set()
                .map_or(defaults.max_connections, |n| n as usize),
            header_timeout: self
                .field(section, "header_timeout", as_interval)
                .or(defaults.header_timeout),
            idle_timeout: self
                .field(section, "idle_timeout", as_interval)
                .or(defaults.idle_timeout),
            body_timeout: self
                .field(section, "body_timeout", as_interval)
                .or(defaults.body_timeout),
            max_header_bytes: self
                .field(section, "max_header_bytes", |v| {
                    as_bytes_within(v, MIN_HEADER_BYTES, MAX_HEADER_BYTES)
                })
                .set()
                .map_or(defaults.max_header_bytes, |n| n as usize),
        };
        let compress_answers = self.field(section, "compress_answers", as_bool).or(true);
        let max_soap_calls = self
            .field(section, "max_soap_calls", |v| as_count(v, 1, 100_000))
            .set()
            .map(|n| n as usize);
        let max_soap_wait = self
            .field(section, "max_soap_wait", as_soap_wait)
            .or(DEFAULT_MAX_SOAP_WAIT);
        Listen {
            http,
            https,
            admin,
            limits,
            compress_answers,
            max_soap_calls,
            max_soap_wait,
        }
    }

    /// `Some(None)`: no [tls]; `None`: [tls] is present but unusable (reported).
    fn tls(&mut self, root: &Table) -> Option<Option<Tls>> {
        let section = self.section(root, "tls");
        if section.table.is_none() {
            // Absent, or not a table (reported by `section`).
            return if root.contains_key("tls") {
                None
            } else {
                Some(None)
            };
        }
        let cert = self.field(section, "cert", as_path);
        let key = self.field(section, "key", as_path);
        let client_ca = self.field(section, "client_ca", as_path).set();
        match (cert, key) {
            (Field::Set(cert), Field::Set(key)) => Some(Some(Tls {
                cert,
                key,
                client_ca,
            })),
            (cert, key) => {
                if matches!(cert, Field::Absent) {
                    let why = if matches!(key, Field::Absent) {
                        "required in [tls] (the certificate chain, PEM)"
                    } else {
                        "required when tls.key is set"
                    };
                    self.problem("tls.cert", why);
                }
                if matches!(key, Field::Absent) {
                    let why = if matches!(cert, Field::Absent) {
                        "required in [tls] (the private key, PEM)"
                    } else {
                        "required when tls.cert is set"
                    };
                    self.problem("tls.key", why);
                }
                None
            }
        }
    }

    /// `Some(None)`: a root; `None`: [upstream] is present but unusable (reported).
    fn upstream(&mut self, root: &Table) -> Option<Option<Upstream>> {
        let section = self.section(root, "upstream");
        if section.table.is_none() {
            return if root.contains_key("upstream") {
                None
            } else {
                Some(None)
            };
        }
        let url = self.field(section, "url", as_upstream_url);
        let transport = self.field(section, "transport", as_transport);
        let ca = self.field(section, "ca", as_path);
        let client_cert = self.field(section, "client_cert", as_path);
        let client_key = self.field(section, "client_key", as_path);
        let token_file = self.field(section, "token_file", as_path).set();
        let sync_interval = self
            .field(section, "sync_interval", as_interval_or_off)
            .or(DEFAULT_SYNC_INTERVAL);
        let drivers = self
            .field(section, "drivers", as_driver_sync)
            .or(DriverSync::All);
        let autonomous = self
            .field(section, "mode", |v| {
                choice(v, &[("replica", false), ("autonomous", true)])
            })
            .or(false);
        let upstream_declines = self.field(section, "declines", |v| {
            choice(v, &[("upstream", true), ("local", false)])
        });
        let replication = if autonomous {
            Replication::Autonomous {
                upstream_declines: upstream_declines.or(false),
            }
        } else {
            if matches!(upstream_declines, Field::Set(false)) {
                self.problem(
                    "upstream.declines",
                    "\"local\" needs upstream.mode = \"autonomous\": a replica's declines are its \
                     upstream's",
                );
            }
            Replication::Replica
        };
        let connect_timeout = self
            .field(section, "connect_timeout", as_interval)
            .or(DEFAULT_CONNECT_TIMEOUT);
        let timeout = self
            .field(section, "timeout", as_interval)
            .or(DEFAULT_TIMEOUT);
        let retries = self
            .field(section, "retries", |v| as_count(v, 0, 100))
            .or(u64::from(DEFAULT_RETRIES));
        let concurrency = self.field(section, "concurrency", |v| as_count(v, 1, 1024));
        let per_object = self.field(section, "per_object", |v| as_count(v, 1, 1024));
        let fill_timeout = self
            .field(section, "fill_timeout", as_interval)
            .or(DEFAULT_FILL_TIMEOUT);
        let mismatch_backoff = self
            .field(section, "mismatch_backoff", as_interval_or_off)
            .or(DEFAULT_MISMATCH_BACKOFF);

        let concurrency_limit = match concurrency {
            Field::Set(concurrency) => Some(concurrency),
            Field::Absent => Some(DEFAULT_CONCURRENCY as u64),
            Field::Invalid => None,
        };
        if let (Field::Set(per_object), Some(limit)) = (&per_object, concurrency_limit)
            && *per_object > limit
        {
            self.problem(
                "upstream.per_object",
                format!("{per_object} is more than upstream.concurrency ({limit})"),
            );
        }

        let plain_http = matches!(&url, Field::Set(url) if url.starts_with("http://"));
        if plain_http {
            if matches!(transport, Field::Set(Transport::Quic)) {
                self.problem(
                    "upstream.transport",
                    "\"quic\" needs an https:// upstream.url (QUIC is always encrypted)",
                );
            }
            // Certificates on a plain-HTTP link would leave the operator believing it is
            // authenticated when it is not.
            for (key, field) in [
                ("upstream.ca", &ca),
                ("upstream.client_cert", &client_cert),
                ("upstream.client_key", &client_key),
            ] {
                if matches!(field, Field::Set(_)) {
                    self.problem(key, "only used with an https:// upstream.url");
                }
            }
        }
        match (&client_cert, &client_key) {
            (Field::Set(_), Field::Absent) => {
                self.problem(
                    "upstream.client_key",
                    "required when upstream.client_cert is set",
                );
            }
            (Field::Absent, Field::Set(_)) => {
                self.problem(
                    "upstream.client_cert",
                    "required when upstream.client_key is set",
                );
            }
            _ => {}
        }

        let url = match url {
            Field::Set(url) => url,
            Field::Absent => {
                self.problem(
                    "upstream.url",
                    "required when [upstream] is present: the parent server, e.g. \"https://central:8531\" (remove [upstream] for a root node)",
                );
                return None;
            }
            Field::Invalid => return None,
        };
        // Counts were range-checked against small limits, so the conversions cannot fail.
        let concurrency = concurrency
            .set()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_CONCURRENCY);
        // Without an explicit per_object, the default must not exceed a small concurrency.
        let per_object = per_object
            .set()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_PER_OBJECT.min(concurrency));
        Some(Some(Upstream {
            url,
            transport: transport.or(Transport::Auto),
            ca: ca.set(),
            client_cert: client_cert.set(),
            client_key: client_key.set(),
            token_file,
            sync_interval,
            drivers,
            replication,
            connect_timeout,
            timeout,
            retries: u32::try_from(retries).unwrap_or(DEFAULT_RETRIES),
            concurrency,
            per_object,
            fill_timeout,
            mismatch_backoff,
        }))
    }

    fn cache(&mut self, root: &Table) -> Cache {
        let section = self.section(root, "cache");
        let memory_bytes = self.field(section, "memory_bytes", as_bytes);
        let disk_bytes = self.field(section, "disk_bytes", as_bytes);
        let min_free_disk = self
            .field(section, "min_free_disk", as_bytes)
            .or(DEFAULT_MIN_FREE_DISK);
        let slice_bytes = self.field(section, "slice_bytes", as_slice_bytes);
        let prefetch = self
            .field(section, "prefetch", as_prefetch)
            .or(Prefetch::Approved);
        let max_ranges = self
            .field(section, "max_ranges", |v| as_count(v, 1, 1024))
            .or(DEFAULT_MAX_RANGES as u64);
        let read_ahead = self
            .field(section, "read_ahead", |v| as_count(v, 0, 64))
            .or(u64::from(DEFAULT_READ_AHEAD));
        let max_object_bytes = self.field(section, "max_object_bytes", as_bytes);
        let hold_ranges = self.field(section, "hold_ranges", as_bool).or(true);
        let scrub_rate = self
            .field(section, "scrub_rate", as_scrub_rate)
            .or(DEFAULT_SCRUB_RATE);
        let max_partial_objects = self
            .field(section, "max_partial_objects", |v| as_count(v, 1, 100_000))
            .set()
            .map_or(DEFAULT_MAX_PARTIAL_OBJECTS, |n| n as usize);

        if slice_bytes.is_valid() {
            let slice = match slice_bytes {
                Field::Set(slice) => slice,
                _ => DEFAULT_SLICE_BYTES,
            };
            // A tier that cannot hold one slice could never cache anything.
            if let Field::Set(memory) = memory_bytes
                && memory != 0
                && memory < slice
            {
                self.problem(
                    "cache.memory_bytes",
                    format!(
                        "must be 0 (memory tier off) or at least cache.slice_bytes ({})",
                        units::format_bytes(slice)
                    ),
                );
            }
            if let Field::Set(max) = max_object_bytes
                && max < slice
            {
                self.problem(
                    "cache.max_object_bytes",
                    format!(
                        "must be at least cache.slice_bytes ({})",
                        units::format_bytes(slice)
                    ),
                );
            }
            if let Field::Set(disk) = disk_bytes
                && disk < slice
            {
                self.problem(
                    "cache.disk_bytes",
                    format!(
                        "must be at least cache.slice_bytes ({})",
                        units::format_bytes(slice)
                    ),
                );
            }
        }
        Cache {
            memory_bytes: memory_bytes.or(DEFAULT_MEMORY_BYTES),
            disk_bytes: disk_bytes.or(DEFAULT_DISK_BYTES),
            min_free_disk,
            slice_bytes: slice_bytes.or(DEFAULT_SLICE_BYTES),
            prefetch,
            // Range-checked to at most 1024 and 64.
            max_ranges: usize::try_from(max_ranges).unwrap_or(DEFAULT_MAX_RANGES),
            read_ahead: u32::try_from(read_ahead).unwrap_or(DEFAULT_READ_AHEAD),
            max_object_bytes: max_object_bytes.or(DEFAULT_MAX_OBJECT_BYTES),
            max_partial_objects,
            scrub_rate,
            hold_ranges,
        }
    }
}

impl Field<String> {
    fn or_else_default(self, default: &str) -> String {
        self.set().unwrap_or_else(|| default.to_string())
    }
}

fn section_names() -> String {
    SCHEMA
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether two listeners would collide: same port (other than 0, "any free port") and the same
/// address, or a wildcard address of the same family.
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// The string inside `value`; `expected` describes the wanted form for the error.
fn text<'v>(value: &'v Value, expected: &str) -> Result<&'v str, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!("expected {expected}, found {}", type_name(other))),
    }
}

fn as_name(value: &Value) -> Result<String, String> {
    let name = text(value, "a string")?;
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    // It travels in headers and rollup messages.
    if name.len() > 255 {
        return Err("must be at most 255 bytes".into());
    }
    Ok(name.to_string())
}

/// A PostgreSQL connection URL, as libpq and the client read it.
fn as_database_url(value: &Value) -> Result<String, String> {
    let url = text(
        value,
        "a connection URL such as \"postgres://wsus@db.example/wsus\"",
    )?
    .trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must start with postgres:// (remove the key to keep state.db)".into());
    }
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| format!("is not a connection URL: {e}"))?;
    Ok(url.to_string())
}

fn as_path(value: &Value) -> Result<PathBuf, String> {
    let path = text(value, "a path (a string)")?;
    if path.is_empty() {
        return Err("must not be empty (remove the key instead)".into());
    }
    if path.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    Ok(PathBuf::from(path))
}

fn as_socket_addr(value: &Value) -> Result<SocketAddr, String> {
    const FORM: &str = "an IP address and port such as \"0.0.0.0:8530\" or \"[::1]:8530\"";
    let bare_port = || format!("a bare port is not allowed: write {FORM}");
    let address = match value {
        Value::Integer(_) => return Err(bare_port()),
        other => text(other, FORM)?.trim(),
    };
    if !address.is_empty() && address.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bare_port());
    }
    address
        .parse::<SocketAddr>()
        .map_err(|_| format!("\"{address}\" is not {FORM} (host names are not resolved)"))
}

/// A whole number in `min..=max`, from a TOML integer or its string form (environment).
fn as_count(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    let number: i128 = match value {
        Value::Integer(number) => i128::from(*number),
        Value::String(text) => text
            .trim()
            .parse::<i128>()
            .map_err(|_| format!("expected a whole number, found \"{text}\""))?,
        other => {
            return Err(format!(
                "expected a whole number, found {}",
                type_name(other)
            ));
        }
    };
    if number < 0 {
        return Err(format!("must not be negative (between {min} and {max})"));
    }
    match u64::try_from(number) {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!("must be between {min} and {max}, found {number}")),
    }
}

/// A size: a TOML integer (bytes) or a string with a unit ("4MiB").
fn as_bytes(value: &Value) -> Result<u64, String> {
    match value {
        Value::Integer(bytes) => {
            u64::try_from(*bytes).map_err(|_| "must not be negative".to_string())
        }
        other => units::parse_bytes(text(other, "a size such as \"4MiB\"")?),
    }
}

/// A size in `min..=max`.
fn as_bytes_within(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    let bytes = as_bytes(value)?;
    if (min..=max).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "must be between {} and {}, found {}",
            units::format_bytes(min),
            units::format_bytes(max),
            units::format_bytes(bytes)
        ))
    }
}

/// true or false, from a TOML boolean or its string form (environment).
fn as_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(format!(
            "expected true or false, found {}",
            type_name(other)
        )),
    }
}

/// A list of strings, or one string of comma-separated items (the form an environment variable
/// can give); items trimmed, empty ones dropped. `what` names the items for errors.
fn string_list<'v>(value: &'v Value, what: &str) -> Result<Vec<&'v str>, String> {
    let items: Vec<&str> = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| text(v, what))
            .collect::<Result<_, _>>()?,
        other => text(other, &format!("a list of {what}"))?
            .split(',')
            .collect(),
    };
    Ok(items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect())
}

/// Host names as a list of strings, or one comma-separated string (environment); each is kept
/// in lower case, without a port.
fn as_host_names(value: &Value) -> Result<Vec<String>, String> {
    string_list(value, "host names such as \"wsus.example.org\"")?
        .into_iter()
        .map(|n| {
            let valid = n.len() <= 253
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if valid {
                Ok(n.to_ascii_lowercase())
            } else {
                Err(format!(
                    "{n:?} is not a host name (letters, digits, '-', '.', no port)"
                ))
            }
        })
        .collect()
}

fn as_slice_bytes(value: &Value) -> Result<u64, String> {
    let bytes = as_bytes(value)?;
    if bytes.is_power_of_two() && (SLICE_MIN..=SLICE_MAX).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "must be a power of two between 64KiB and 64MiB, found {}",
            units::format_bytes(bytes)
        ))
    }
}

/// A positive duration up to [`MAX_INTERVAL`]: a TOML integer (seconds) or a string ("15m").
/// An interval, or 0 ("0s") for never on its own.
fn as_interval_or_off(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Integer(0) => Ok(Duration::ZERO),
        Value::String(s) if units::parse_duration(s).is_ok_and(|d| d.is_zero()) => {
            Ok(Duration::ZERO)
        }
        other => as_interval(other),
    }
}

/// How long a SOAP call may wait to be answered: zero (busy at once) up to a minute, for a
/// client told later is better off than one whose call times out.
fn as_soap_wait(value: &Value) -> Result<Duration, String> {
    let wait = as_interval_or_off(value)?;
    if wait > Duration::from_secs(60) {
        return Err("must be at most 60s".into());
    }
    Ok(wait)
}

/// How long to wait for a database connection: more than zero, at most five minutes.
fn as_pool_wait(value: &Value) -> Result<Duration, String> {
    let wait = as_interval(value)?;
    if wait > Duration::from_secs(300) {
        return Err("must be at most 5m".into());
    }
    Ok(wait)
}

/// A grace period: zero (stop at once) up to an hour.
fn as_grace(value: &Value) -> Result<Duration, String> {
    let grace = match value {
        Value::Integer(0) => Duration::ZERO,
        Value::String(s) if units::parse_duration(s).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
        other => as_interval(other)?,
    };
    if grace > Duration::from_secs(3600) {
        return Err("must be at most 1h".into());
    }
    Ok(grace)
}

/// A tracing filter: a level, or `target=level` directives separated by commas.
fn as_log_filter(value: &Value) -> Result<String, String> {
    let filter = text(
        value,
        "a level such as \"info\" or \"warn,wsus_edge=debug\"",
    )?
    .trim();
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| filter.to_string())
        .map_err(|e| {
            format!("{filter:?} is not a log filter ({e}); levels: error, warn, info, debug, trace")
        })
}

fn as_log_format(value: &Value) -> Result<LogFormat, String> {
    match text(value, "\"text\" or \"json\"")? {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?}: \"text\" or \"json\"")),
    }
}

fn as_interval(value: &Value) -> Result<Duration, String> {
    let duration = match value {
        Value::Integer(seconds) => u64::try_from(*seconds)
            .map(Duration::from_secs)
            .map_err(|_| "must not be negative".to_string())?,
        other => units::parse_duration(text(other, "a duration such as \"30s\" or \"15m\"")?)?,
    };
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    if duration > MAX_INTERVAL {
        return Err("must be at most 365d".into());
    }
    Ok(duration)
}

/// The scrub's pace: a rate ("8MiB/s"), or 0 / "off" for none.
fn as_scrub_rate(value: &Value) -> Result<u64, String> {
    match value {
        Value::Integer(0) => Ok(0),
        Value::String(s) if s.trim().eq_ignore_ascii_case("off") || s.trim() == "0" => Ok(0),
        other => match as_rate(other)? {
            Some(rate) => Ok(rate),
            None => Err("a rate such as \"8MiB/s\", or \"off\"".into()),
        },
    }
}

/// A bandwidth: a TOML integer (bytes per second, 0 = unlimited) or a string ("20Mbit/s").
fn as_rate(value: &Value) -> Result<Option<u64>, String> {
    match value {
        Value::Integer(rate) => u64::try_from(*rate)
            .map(|rate| (rate != 0).then_some(rate))
            .map_err(|_| "must not be negative".to_string()),
        other => units::parse_rate(text(other, "a rate such as \"20Mbit/s\" or \"unlimited\"")?),
    }
}

/// One of `choices` (case-insensitive), or an error listing them.
fn choice<T: Copy>(value: &Value, choices: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let name = text(value, &names.join(" or "))?;
    choices
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("\"{name}\" is not one of {}", names.join(", ")))
}

fn as_driver_sync(value: &Value) -> Result<DriverSync, String> {
    let name = text(value, "\"all\" or \"on-demand\"")?;
    match name.to_ascii_lowercase().as_str() {
        "all" => Ok(DriverSync::All),
        "on-demand" => Ok(DriverSync::OnDemand),
        _ => Err(format!("\"{name}\" is not one of \"all\", \"on-demand\"")),
    }
}

fn as_transport(value: &Value) -> Result<Transport, String> {
    let name = text(value, "\"auto\", \"tcp\" or \"quic\"")?;
    match name.to_ascii_lowercase().as_str() {
        "auto" => Ok(Transport::Auto),
        "tcp" => Ok(Transport::Tcp),
        "quic" => Ok(Transport::Quic),
        _ => Err(format!(
            "\"{name}\" is not one of \"auto\", \"tcp\", \"quic\""
        )),
    }
}

/// Networks as a list of strings, or one string of comma-separated networks (the form an
/// environment variable can give).
fn as_networks(value: &Value) -> Result<Vec<Network>, String> {
    string_list(value, "networks such as \"10.0.0.0/8\"")?
        .into_iter()
        .map(|n| {
            Network::parse(n).ok_or_else(|| format!("{n:?} is not a network such as 10.0.0.0/8"))
        })
        .collect()
}

fn as_prefetch(value: &Value) -> Result<Prefetch, String> {
    let name = text(value, "\"approved\" or \"none\"")?;
    match name.to_ascii_lowercase().as_str() {
        "approved" => Ok(Prefetch::Approved),
        "none" => Ok(Prefetch::None),
        _ => Err(format!("\"{name}\" is not one of \"approved\", \"none\"")),
    }
}

/// The upstream base URL: http(s), a host, no credentials, no query or fragment; trailing "/"
/// removed so that paths can be appended with a leading "/".
fn as_upstream_url(value: &Value) -> Result<String, String> {
    let url = text(value, "a URL such as \"https://central:8531\"")?;
    if url.contains('?') {
        return Err(format!("\"{url}\" must not have a query (\"?…\")"));
    }
    if url.contains('#') {
        return Err(format!("\"{url}\" must not have a fragment (\"#…\")"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|error| format!("\"{url}\" is not a valid URL: {error}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("\"{url}\" must start with http:// or https://"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("\"{url}\" has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "\"{url}\" must not carry credentials: use upstream.token_file or upstream.client_cert"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    // The scheme is stored lower-case so that callers can test for "https://" directly.
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let scheme = if uri.scheme_str() == Some("https") {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{}", rest.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &[])
    }

    fn parsed(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(error) => panic!("expected no problems, got {error}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(error) => error.problems,
        }
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems
            .iter()
            .map(|problem| problem.key.as_str())
            .collect()
    }

    #[test]
    fn connection_limits_and_downstream_access_are_typed() {
        let c = parsed(
            "[listen]\nmax_connections = 500\nheader_timeout = \"5s\"\nidle_timeout = 90\n\
             body_timeout = \"2m\"\nmax_header_bytes = \"16KiB\"\ncompress_answers = false\nmax_soap_calls = 3\n\
             max_soap_wait = \"0s\"\n[downstream]\nallow_anonymous = true\n[admin]\nserver_names = [\"WSUS.example.org\"]\n",
        );
        assert_eq!(
            c.listen.limits,
            ConnectionLimits {
                max_connections: 500,
                header_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(90),
                body_timeout: Duration::from_secs(120),
                max_header_bytes: 16 << 10,
            }
        );
        assert!(c.downstream.allow_anonymous);
        assert!(!c.listen.compress_answers);
        assert_eq!(c.listen.max_soap_calls, Some(3));
        assert_eq!(c.listen.max_soap_wait, Duration::ZERO);
        assert_eq!(c.admin.server_names, ["wsus.example.org"]);
        assert!(!parsed("").downstream.allow_anonymous);
        assert!(parsed("").listen.compress_answers);
        assert_eq!(parsed("").listen.max_soap_calls, None);
        assert_eq!(parsed("").listen.max_soap_wait, Duration::from_secs(2));
        assert!(
            only_problem("[listen]\nmax_soap_wait = \"2m\"\n", "listen.max_soap_wait")
                .contains("at most 60s")
        );
        assert!(
            only_problem("[listen]\nmax_soap_calls = 0\n", "listen.max_soap_calls")
                .contains("between 1")
        );
        assert!(
            only_problem(
                "[listen]\ncompress_answers = 1\n",
                "listen.compress_answers"
            )
            .contains("true or false")
        );
        assert!(
            only_problem(
                "[listen]\nmax_header_bytes = \"1KiB\"\n",
                "listen.max_header_bytes"
            )
            .contains("between 8.0 KiB and 1.0 MiB")
        );
        assert!(
            only_problem("[listen]\nmax_connections = 3\n", "listen.max_connections")
                .contains("between 16")
        );
        assert!(
            only_problem(
                "[downstream]\nallow_anonymous = \"yes\"\n",
                "downstream.allow_anonymous"
            )
            .contains("true or false")
        );
        assert!(
            only_problem(
                "[admin]\nserver_names = [\"a:8540\"]\n",
                "admin.server_names"
            )
            .contains("no port")
        );
        let from_env = Config::parse(
            "",
            "t",
            &env(&[("WSUS_EDGE_DOWNSTREAM__ALLOW_ANONYMOUS", "TRUE")]),
        )
        .unwrap();
        assert!(from_env.downstream.allow_anonymous);
    }

    /// The single problem reported for `text`, which must be under `key`.
    fn only_problem(text: &str, key: &str) -> String {
        let found = problems(text);
        assert_eq!(keys(&found), [key], "{found:?}");
        found[0].message.clone()
    }

    #[test]
    fn state_is_state_db_unless_a_postgres_url_is_given() {
        assert_eq!(Config::default().state.database, None);
        let url = "postgres://wsus:secret@db.example.org:5433/wsus";
        let config = parsed(&format!(
            "[state]\ndatabase = {url:?}\npool_size = 4\npool_wait = \"3s\"\n"
        ));
        assert_eq!(config.state.database.as_deref(), Some(url));
        assert_eq!(config.state.pool_size, 4);
        assert_eq!(config.state.pool_wait, Duration::from_secs(3));
        assert!(
            !format!("{config:?}").contains("secret"),
            "the password stays out of what is printed"
        );
        let message = only_problem(
            "[state]\ndatabase = \"mysql://db/wsus\"\n",
            "state.database",
        );
        assert!(message.contains("postgres://"), "{message}");
        let message = only_problem(
            "[state]\ndatabase = \"postgres://db/wsus?sslmode=sometimes\"\n",
            "state.database",
        );
        assert!(message.contains("not a connection URL"), "{message}");
        only_problem("[state]\npool_size = 0\n", "state.pool_size");
        only_problem("[state]\npool_wait = \"1h\"\n", "state.pool_wait");
        only_problem("[state]\nurl = \"postgres://db/wsus\"\n", "state.url");
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!(config.node.name, "wsus-edge");
        assert_eq!(config.node.data_dir, PathBuf::from("./data"));
        assert_eq!(config.listen.http.to_string(), "0.0.0.0:8530");
        assert_eq!(config.listen.https, None);
        assert_eq!(config.listen.admin.to_string(), "127.0.0.1:8540");
        assert!(config.tls.is_none());
        assert!(config.upstream.is_none());
        assert!(!config.is_downstream());
        assert!(config.downstream.token_file.is_none());
        assert_eq!(config.cache.memory_bytes, 512 * MIB);
        assert_eq!(config.cache.disk_bytes, 100 * GIB);
        assert_eq!(config.cache.min_free_disk, GIB);
        assert_eq!(config.cache.slice_bytes, 4 * MIB);
        assert_eq!(config.cache.prefetch, Prefetch::Approved);
        assert_eq!(config.cache.max_ranges, 16);
        assert_eq!(config.cache.read_ahead, 0);
        assert_eq!(config.wan.max_bandwidth, None);
        assert_eq!(config.reports.rollup_interval, Duration::from_secs(900));
    }

    #[test]
    fn empty_text_and_no_file_give_the_defaults() {
        let expected = format!("{:?}", Config::default());
        assert_eq!(format!("{:?}", parsed("")), expected);
        match Config::load(None, &[]) {
            Ok(config) => assert_eq!(format!("{config:?}"), expected),
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn upstream_defaults() {
        let config = parsed("[upstream]\nurl = \"http://central:8530/\"\n");
        assert!(config.is_downstream());
        let Some(upstream) = config.upstream else {
            panic!("no upstream")
        };
        assert_eq!(upstream.url, "http://central:8530");
        assert_eq!(upstream.transport, Transport::Auto);
        assert_eq!(upstream.sync_interval, Duration::from_secs(900));
        assert_eq!(upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(upstream.timeout, Duration::from_secs(30));
        assert_eq!(upstream.retries, 4);
        assert_eq!(upstream.concurrency, 16);
        assert_eq!(upstream.per_object, 4);
        assert_eq!(upstream.drivers, DriverSync::All);
        assert!(upstream.ca.is_none() && upstream.client_cert.is_none());
        assert!(upstream.client_key.is_none() && upstream.token_file.is_none());
    }

    const EXAMPLE: &str = include_str!("../../config/wsus-edge.example.toml");
    const CENTRAL: &str = include_str!("../../config/central.toml");
    const BRANCH: &str = include_str!("../../config/branch.toml");

    #[test]
    fn example_file_is_the_defaults() {
        // The example's active keys are the defaults, so the documentation cannot drift from
        // the code without this test failing.
        assert_eq!(
            format!("{:?}", parsed(EXAMPLE)),
            format!("{:?}", Config::default())
        );
    }

    #[test]
    fn example_file_documents_every_key_and_its_commented_settings_parse() {
        // Settings that are commented out are written "#key = …" (no space); prose is "# …".
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let root: Table = match uncommented.parse() {
            Ok(root) => root,
            Err(error) => panic!("{error}"),
        };
        for (section, keys) in SCHEMA {
            for key in *keys {
                let documented = root
                    .get(*section)
                    .and_then(Value::as_table)
                    .is_some_and(|table| table.contains_key(*key));
                assert!(documented, "{section}.{key} is not in the example file");
            }
        }
        let config = parsed(&uncommented);
        assert!(config.tls.is_some() && config.upstream.is_some());
    }

    #[test]
    fn central_file_is_a_root() {
        let config = parsed(CENTRAL);
        assert!(!config.is_downstream());
        assert!(config.tls.is_some());
        assert!(config.listen.https.is_some());
        assert!(config.downstream.token_file.is_some());
    }

    #[test]
    fn branch_file_has_the_central_node_upstream() {
        let config = parsed(BRANCH);
        assert!(config.is_downstream());
        let central = parsed(CENTRAL);
        let Some(upstream) = config.upstream else {
            panic!("no upstream")
        };
        let Some(https) = central.listen.https else {
            panic!("central has no https listener")
        };
        assert!(upstream.url.starts_with("https://"));
        assert!(upstream.url.ends_with(&format!(":{}", https.port())));
        assert!(upstream.token_file.is_some());
        assert!(config.wan.max_bandwidth.is_some());
    }

    #[test]
    fn four_mistakes_four_problems() {
        let found = problems(
            r#"
            [listen]
            http = 8530

            [upstream]
            transport = "tcp"

            [cache]
            slice_bytes = "3MiB"
            prefetch = "sometimes"
            "#,
        );
        assert_eq!(
            keys(&found),
            [
                "listen.http",
                "upstream.url",
                "cache.slice_bytes",
                "cache.prefetch"
            ],
            "{found:?}"
        );
        assert!(found[0].message.contains("bare port is not allowed"));
        assert!(found[1].message.contains("required"));
        assert!(
            found[2]
                .message
                .starts_with("must be a power of two between 64KiB and 64MiB")
        );
        assert!(found[3].message.contains("\"sometimes\""));
    }

    #[test]
    fn unknown_sections_and_keys() {
        let found = problems("[cahce]\nslice_bytes = \"4MiB\"\n[cache]\nslice = \"4MiB\"\n");
        assert_eq!(keys(&found), ["cahce", "cache.slice"]);
        assert!(found[0].message.contains("node, listen, tls"));
        assert!(found[1].message.contains("slice_bytes"));
        assert!(found[1].message.contains("memory_bytes"));

        let message = only_problem("name = \"x\"\n", "name");
        assert!(message.contains("unknown section"));
        let message = only_problem("cache = 5\n", "cache");
        assert!(message.contains("must be a section"));
        let message = only_problem("[cache.extra]\nx = 1\n", "cache.extra");
        assert!(message.contains("unknown key"));
    }

    #[test]
    fn wrong_types() {
        let found = problems(
            r#"
            [node]
            name = 5
            data_dir = ["a"]
            [cache]
            memory_bytes = 1.5
            max_ranges = true
            [wan]
            max_bandwidth = 2024-01-01
            "#,
        );
        assert_eq!(
            keys(&found),
            [
                "node.name",
                "node.data_dir",
                "cache.memory_bytes",
                "cache.max_ranges",
                "wan.max_bandwidth"
            ]
        );
        assert!(found[0].message.contains("found an integer"));
        assert!(found[1].message.contains("found an array"));
        assert!(found[2].message.contains("found a float"));
        assert!(found[3].message.contains("found a boolean"));
        assert!(found[4].message.contains("found a date-time"));
    }

    #[test]
    fn units_and_integers() {
        let config = parsed(
            r#"
            [cache]
            memory_bytes = "1GiB"
            disk_bytes = 2000000000
            min_free_disk = "1.5 GiB"
            slice_bytes = "1M"
            max_ranges = 1024
            read_ahead = 64
            [wan]
            max_bandwidth = "20Mbit/s"
            [reports]
            rollup_interval = 90
            "#,
        );
        assert_eq!(config.cache.memory_bytes, GIB);
        assert_eq!(config.cache.disk_bytes, 2_000_000_000);
        assert_eq!(config.cache.min_free_disk, GIB + GIB / 2);
        assert_eq!(config.cache.slice_bytes, MIB);
        assert_eq!(config.cache.max_ranges, 1024);
        assert_eq!(config.cache.read_ahead, 64);
        assert_eq!(config.wan.max_bandwidth, Some(2_500_000));
        assert_eq!(config.reports.rollup_interval, Duration::from_secs(90));

        assert_eq!(parsed("[wan]\nmax_bandwidth = 0\n").wan.max_bandwidth, None);
        assert_eq!(
            parsed("[wan]\nmax_bandwidth = \"unlimited\"\n")
                .wan
                .max_bandwidth,
            None
        );
        assert_eq!(parsed("[cache]\nmemory_bytes = 0\n").cache.memory_bytes, 0);
        assert_eq!(
            parsed("[cache]\nprefetch = \"none\"\n").cache.prefetch,
            Prefetch::None
        );
    }

    #[test]
    fn unit_and_range_errors() {
        let found = problems(
            r#"
            [upstream]
            url = "https://central:8531"
            sync_interval = "15 minutes"
            connect_timeout = "0s"
            timeout = "400d"
            retries = -1
            concurrency = 0
            per_object = 2000
            [cache]
            memory_bytes = "lots"
            disk_bytes = -5
            max_ranges = 1025
            read_ahead = 65
            [reports]
            rollup_interval = -3
            "#,
        );
        assert_eq!(
            keys(&found),
            [
                "upstream.sync_interval",
                "upstream.connect_timeout",
                "upstream.timeout",
                "upstream.retries",
                "upstream.concurrency",
                "upstream.per_object",
                "cache.memory_bytes",
                "cache.disk_bytes",
                "cache.max_ranges",
                "cache.read_ahead",
                "reports.rollup_interval",
            ],
            "{found:?}"
        );
        assert!(found[0].message.contains("unknown duration unit"));
        assert!(found[1].message.contains("more than zero"));
        assert!(found[2].message.contains("at most 365d"));
        assert!(found[3].message.contains("negative"));
        assert!(found[4].message.contains("between 1 and 1024"));
        assert!(found[6].message.contains("does not start with a number"));
        assert!(found[7].message.contains("negative"));
        assert!(found[9].message.contains("between 0 and 64"));
        assert!(found[10].message.contains("negative"));

        let message = only_problem("[cache]\nslice_bytes = \"128MiB\"\n", "cache.slice_bytes");
        assert!(message.contains("found 128.0 MiB"));
        only_problem("[cache]\nslice_bytes = \"32KiB\"\n", "cache.slice_bytes");
        only_problem("[cache]\nslice_bytes = 5000000\n", "cache.slice_bytes");
        only_problem("[cache]\nmax_ranges = 9999999999999999999999\n", "");
    }

    #[test]
    fn cross_key_rules() {
        let message = only_problem(
            "[upstream]\nurl = \"http://central\"\nconcurrency = 8\nper_object = 9\n",
            "upstream.per_object",
        );
        assert!(message.contains("more than upstream.concurrency (8)"));
        only_problem(
            "[upstream]\nurl = \"http://central\"\nper_object = 17\n",
            "upstream.per_object",
        );
        let config = parsed("[upstream]\nurl = \"http://central\"\nconcurrency = 2\n");
        assert_eq!(config.upstream.map(|u| u.per_object), Some(2));
        // An invalid concurrency is reported once, not again through per_object.
        only_problem(
            "[upstream]\nurl = \"http://central\"\nconcurrency = 0\nper_object = 9\n",
            "upstream.concurrency",
        );

        let message = only_problem(
            "[cache]\nmemory_bytes = \"1MiB\"\nslice_bytes = \"4MiB\"\n",
            "cache.memory_bytes",
        );
        assert!(message.contains("at least cache.slice_bytes (4.0 MiB)"));
        only_problem("[cache]\ndisk_bytes = \"1MiB\"\n", "cache.disk_bytes");
        // A bad slice size is reported once.
        only_problem(
            "[cache]\nmemory_bytes = \"1MiB\"\nslice_bytes = \"3MiB\"\n",
            "cache.slice_bytes",
        );

        let message = only_problem("[listen]\nhttps = \"0.0.0.0:8531\"\n", "listen.https");
        assert!(message.contains("[tls]"));
        let message = only_problem(
            "[listen]\nhttp = \"127.0.0.1:8530\"\nadmin = \"0.0.0.0:8530\"\n",
            "listen.admin",
        );
        assert!(message.contains("listen.http"));
        parsed("[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n");
        parsed("[listen]\nhttp = \"127.0.0.1:8530\"\nadmin = \"[::1]:8530\"\n");
    }

    #[test]
    fn tls_rules() {
        let config = parsed(
            "[listen]\nhttps = \"[::]:8531\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n",
        );
        let Some(tls) = config.tls else {
            panic!("no tls")
        };
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(
            config.listen.https.map(|a| a.to_string()).as_deref(),
            Some("[::]:8531")
        );

        let message = only_problem("[tls]\ncert = \"c.pem\"\n", "tls.key");
        assert!(message.contains("required when tls.cert is set"));
        let message = only_problem("[tls]\nkey = \"k.pem\"\n", "tls.cert");
        assert!(message.contains("required when tls.key is set"));
        assert_eq!(keys(&problems("[tls]\n")), ["tls.cert", "tls.key"]);
        only_problem("[tls]\ncert = \"\"\nkey = \"k.pem\"\n", "tls.cert");
    }

    #[test]
    fn upstream_rules() {
        let url = |url: &str| format!("[upstream]\nurl = \"{url}\"\n");
        assert_eq!(
            parsed(&url("https://central.example.org:8531/wsus/"))
                .upstream
                .map(|u| u.url),
            Some("https://central.example.org:8531/wsus".to_string())
        );
        assert_eq!(
            parsed(&url("HTTP://central")).upstream.map(|u| u.url),
            Some("http://central".to_string())
        );
        for (bad, says) in [
            ("ftp://central", "http:// or https://"),
            ("central:8530", "http:// or https://"),
            ("http://central/?a=b", "query"),
            ("http://central/#top", "fragment"),
            ("http://user:pw@central", "credentials"),
            ("http://", "not a valid URL"),
            ("http://cen tral", "not a valid URL"),
        ] {
            let message = only_problem(&url(bad), "upstream.url");
            assert!(message.contains(says), "{bad}: {message}");
        }
        let message = only_problem("[upstream]\nurl = 5\n", "upstream.url");
        assert!(message.contains("found an integer"));

        let on_demand = parsed("[upstream]\nurl = \"http://central\"\ndrivers = \"On-Demand\"\n");
        assert_eq!(
            on_demand.upstream.map(|u| u.drivers),
            Some(DriverSync::OnDemand)
        );
        let message = only_problem(
            "[upstream]\nurl = \"http://central\"\ndrivers = \"some\"\n",
            "upstream.drivers",
        );
        assert!(message.contains("\"all\", \"on-demand\""), "{message}");

        let mode = |extra: &str| {
            parsed(&format!("[upstream]\nurl = \"http://central\"\n{extra}"))
                .upstream
                .map(|u| u.replication)
        };
        assert_eq!(mode(""), Some(Replication::Replica));
        assert_eq!(
            mode("mode = \"Autonomous\"\n"),
            Some(Replication::Autonomous {
                upstream_declines: false
            })
        );
        assert_eq!(
            mode("mode = \"autonomous\"\ndeclines = \"upstream\"\n"),
            Some(Replication::Autonomous {
                upstream_declines: true
            })
        );
        assert_eq!(
            mode("declines = \"upstream\"\n"),
            Some(Replication::Replica)
        );
        let message = only_problem(
            "[upstream]\nurl = \"http://central\"\ndeclines = \"local\"\n",
            "upstream.declines",
        );
        assert!(message.contains("autonomous"), "{message}");
        let message = only_problem(
            "[upstream]\nurl = \"http://central\"\nmode = \"hub\"\n",
            "upstream.mode",
        );
        assert!(message.contains("\"replica\", \"autonomous\""), "{message}");
        let message = only_problem(
            "[upstream]\nurl = \"http://central\"\ntransport = \"quic\"\n",
            "upstream.transport",
        );
        assert!(message.contains("https://"));
        let message = only_problem(
            "[upstream]\nurl = \"https://central\"\ntransport = \"udp\"\n",
            "upstream.transport",
        );
        assert!(message.contains("\"auto\", \"tcp\", \"quic\""));
        let config = parsed("[upstream]\nurl = \"https://central\"\ntransport = \"QUIC\"\n");
        assert_eq!(config.upstream.map(|u| u.transport), Some(Transport::Quic));

        let message = only_problem(
            "[upstream]\nurl = \"https://central\"\nclient_cert = \"c.pem\"\n",
            "upstream.client_key",
        );
        assert!(message.contains("required when upstream.client_cert is set"));
        only_problem(
            "[upstream]\nurl = \"https://central\"\nclient_key = \"k.pem\"\n",
            "upstream.client_cert",
        );
        assert_eq!(
            keys(&problems(
                "[upstream]\nurl = \"http://central\"\nca = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\n"
            )),
            ["upstream.ca", "upstream.client_cert", "upstream.client_key"]
        );
    }

    #[test]
    fn socket_addresses() {
        let message = only_problem("[listen]\nadmin = \"8540\"\n", "listen.admin");
        assert!(message.contains("bare port is not allowed"));
        let message = only_problem("[listen]\nadmin = \"localhost:8540\"\n", "listen.admin");
        assert!(message.contains("host names are not resolved"));
        only_problem("[listen]\nadmin = \"::1:8540\"\n", "listen.admin");
        let config = parsed("[listen]\nadmin = \"[::1]:9000\"\n");
        assert_eq!(config.listen.admin.to_string(), "[::1]:9000");
    }

    #[test]
    fn syntax_error_is_one_problem_with_its_position() {
        let found = problems("[cache]\nslice_bytes = \n");
        assert_eq!(keys(&found), [""]);
        assert!(found[0].message.contains("line 2"), "{}", found[0].message);
        assert!(!found[0].message.contains('\n'));
    }

    #[test]
    fn env_overrides_set_keys() {
        let result = Config::parse(
            "[cache]\nmemory_bytes = \"256MiB\"\nread_ahead = 2\n",
            "test.toml",
            &env(&[
                ("WSUS_EDGE_CACHE__MEMORY_BYTES", "1GiB"),
                ("wsus_edge_cache__max_ranges", "32"),
                ("WSUS_EDGE_Node__Name", "branch-7"),
                ("WSUS_EDGE_CACHE__READ_AHEAD", ""),
                ("WSUS_EDGE_LISTEN__HTTP", "127.0.0.1:18530"),
                // Not overrides: no "__", or not ours.
                ("WSUS_EDGE_LOG", "debug"),
                ("PATH", "/usr/bin"),
                ("OTHER_CACHE__MEMORY_BYTES", "1"),
            ]),
        );
        let config = match result {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(config.cache.memory_bytes, GIB);
        assert_eq!(config.cache.max_ranges, 32);
        assert_eq!(
            config.cache.read_ahead, 0,
            "an empty value restores the default"
        );
        assert_eq!(config.node.name, "branch-7");
        assert_eq!(config.listen.http.to_string(), "127.0.0.1:18530");
        assert!(!config.is_downstream());
    }

    #[test]
    fn env_override_creates_upstream() {
        let result = Config::parse(
            "",
            "built-in defaults",
            &env(&[
                ("WSUS_EDGE_UPSTREAM__URL", "http://central:8530"),
                ("WSUS_EDGE_UPSTREAM__CONCURRENCY", "64"),
                ("WSUS_EDGE_UPSTREAM__SYNC_INTERVAL", "1h30m"),
            ]),
        );
        let config = match result {
            Ok(config) => config,
            Err(error) => panic!("{error}"),
        };
        assert!(config.is_downstream());
        let Some(upstream) = config.upstream else {
            panic!("no upstream")
        };
        assert_eq!(upstream.url, "http://central:8530");
        assert_eq!(upstream.concurrency, 64);
        assert_eq!(upstream.sync_interval, Duration::from_secs(5_400));
    }

    #[test]
    fn env_problems_name_the_variable() {
        let result = Config::load(
            None,
            &env(&[
                ("WSUS_EDGE_CACHE__SLICE", "4MiB"),
                ("WSUS_EDGE_CACHE_MEMORY_BYTES", "1GiB"),
                ("WSUS_EDGE_LOG_FORMAT", "json"),
                ("WSUS_EDGE_CAHCE__SLICE_BYTES", "4MiB"),
                ("WSUS_EDGE_CACHE__SLICE_BYTES", "3MiB"),
                ("WSUS_EDGE_UPSTREAM__RETRIES", "many"),
            ]),
        );
        let error = match result {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(error) => error,
        };
        assert_eq!(error.source, "built-in defaults");
        assert_eq!(
            keys(&error.problems),
            [
                "WSUS_EDGE_CACHE__SLICE",
                "WSUS_EDGE_CACHE_MEMORY_BYTES",
                "WSUS_EDGE_CAHCE__SLICE_BYTES",
                "upstream.retries",
                "upstream.url",
                "cache.slice_bytes",
            ],
            "{error}"
        );
        assert!(
            error.problems[0]
                .message
                .contains("allowed keys: memory_bytes")
        );
        assert!(error.problems[1].message.contains("two underscores"));
        assert!(
            error.problems[2]
                .message
                .contains("unknown section \"cahce\"")
        );
        assert!(
            error.problems[3]
                .message
                .ends_with("(from WSUS_EDGE_UPSTREAM__RETRIES)")
        );
        assert!(
            error.problems[5]
                .message
                .ends_with("(from WSUS_EDGE_CACHE__SLICE_BYTES)")
        );
    }

    #[test]
    fn env_problems_are_reported_with_a_syntax_error() {
        let result = Config::parse("[cache", "test.toml", &env(&[("WSUS_EDGE_NOPE__X", "1")]));
        let problems = match result {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(error) => error.problems,
        };
        assert_eq!(keys(&problems), ["", "WSUS_EDGE_NOPE__X"]);
    }

    #[test]
    fn display_lists_every_problem() {
        let error = ConfigError {
            source: "/etc/wsus-edge.toml".to_string(),
            problems: vec![
                Problem {
                    key: "cache.slice_bytes".into(),
                    message: "must be a power of two between 64KiB and 64MiB".into(),
                },
                Problem {
                    key: "upstream.url".into(),
                    message: "required".into(),
                },
                Problem {
                    key: String::new(),
                    message: "whole-file problem".into(),
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "/etc/wsus-edge.toml: 3 problems:\n  cache.slice_bytes: must be a power of two between 64KiB and 64MiB\n  upstream.url: required\n  whole-file problem"
        );
        let one = ConfigError {
            source: "x.toml".into(),
            problems: vec![Problem {
                key: "a.b".into(),
                message: "bad".into(),
            }],
        };
        assert_eq!(one.to_string(), "x.toml: 1 problem:\n  a.b: bad");
    }

    #[test]
    fn load_reports_an_unreadable_file() {
        let path = Path::new("/nonexistent/wsus-edge-test/config.toml");
        let error = match Config::load(Some(path), &[]) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(error) => error,
        };
        assert_eq!(error.source, path.display().to_string());
        assert_eq!(keys(&error.problems), [""]);
        assert!(
            error.problems[0]
                .message
                .starts_with("cannot read the file")
        );
    }

    #[test]
    fn check_files_reports_missing_files() {
        let config = parsed(
            r#"
            [node]
            data_dir = "/nonexistent/wsus-edge-test/data"
            [listen]
            https = "0.0.0.0:8531"
            [tls]
            cert = "/nonexistent/cert.pem"
            key = "/nonexistent/key.pem"
            [upstream]
            url = "https://central"
            ca = "/"
            token_file = "/nonexistent/token"
            [downstream]
            token_file = "/nonexistent/tokens"
            [admin]
            token_file = "/nonexistent/admin-tokens"
            "#,
        );
        let found = config.check_files();
        assert_eq!(
            keys(&found),
            [
                "tls.cert",
                "tls.key",
                "upstream.ca",
                "upstream.token_file",
                "downstream.token_file",
                "admin.token_file",
                "node.data_dir"
            ],
            "{found:?}"
        );
        assert!(
            found[0]
                .message
                .starts_with("/nonexistent/cert.pem does not exist; make this node's certificate"),
            "{}",
            found[0].message
        );
        assert!(found[2].message.contains("not a regular file"));

        let mut fine = Config::default();
        fine.node.data_dir = std::env::temp_dir().join("wsus-edge-config-test-data");
        assert_eq!(fine.check_files(), []);
    }
}
