//! The subcommands: `serve`, `check-config`, `status`, `health`, `import`, `approve`, `decline`,
//! `group`, `sync`, `cert`, `generate`, `demo`, `simulate`, and the test tool `wan-emulator`.
//! Each returns an exit code: 0 done, 1 runtime failure, 2 usage or configuration error
//! (DESIGN.md §5).
//! Calls `config`, `server`, `content`, `simulate`, `metrics`, `logging`, `systemd`, `pki`,
//! `progress`.
//!
//! This file is the index: the command line's definition (`Cli` and its subcommand enums),
//! `Exit`, the dispatcher `run`, and the two helpers every family uses (`load`, `report`).
//! Each family lives in a file of its own, opens with what it owns and what it calls, and may
//! call this file; a sibling only where its opening comment names it (the demo and the WAN
//! emulator reuse a few pieces of the others):
//! - `serve.rs`: `check-config`, `serve`, SIGHUP's reload, the signals a process obeys;
//! - `status.rs`: `status`, `health` (a running node asked over its admin listener);
//! - `catalog.rs`: `import` (and `--generate`), `approve`, `decline`, `group`, `sync`;
//! - `cert.rs`: `cert`;
//! - `generate.rs`: `generate` (shell completions, man pages);
//! - `simulate.rs`: `simulate` and how a fleet's outcome is printed;
//! - `demo.rs`: `demo` (a root and a branch on loopback);
//! - `wan.rs`: `wan-emulator`.

mod catalog;
mod cert;
mod demo;
mod generate;
mod serve;
mod simulate;
mod status;
mod wan;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::{Error, Kind};
use crate::http::coding::Coding;
use crate::logging::Logging;

/// `--version`: the package version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "wsus-edge",
    version = VERSION,
    about = "A Windows update server for branch offices"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults with data_dir = ./data.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node until SIGTERM or SIGINT; SIGHUP reloads token files, admin.read_networks
    /// and log.level.
    Serve,
    /// Check a configuration file and the files it names; print every problem with its key.
    CheckConfig {
        /// The file to check (or --config FILE).
        file: Option<PathBuf>,
    },
    /// Ask a running node how it is: role, upstream, last sync and rollup, prefetch, cache,
    /// computers.
    Status {
        /// The node's answer as JSON (what GET /api/v1/status gives).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminAddress,
    },
    /// Exit 0 when a running node is alive (/livez), or with --ready ready (/readyz); else 1.
    /// For health checks that have no HTTP client at hand (containers).
    Health {
        #[arg(long)]
        ready: bool,
        #[command(flatten)]
        admin: AdminAddress,
    },
    /// Make the certificates of an estate: a CA, node (server) and branch (client)
    /// certificates signed by it.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Write shell completions or man pages, made from this command line's definition.
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
    /// Import a catalog: DIR/updates/*.xml (update documents) and DIR/content/** (payloads);
    /// a DIR without those folders is all payloads. Or --generate N: a synthetic catalog.
    Import {
        /// The folder to import (not with --generate).
        #[arg(required_unless_present = "generate", conflicts_with = "generate")]
        dir: Option<PathBuf>,
        /// Generate a synthetic catalog of N software updates (with categories, detectoids
        /// and payload files).
        #[arg(long, value_name = "N")]
        generate: Option<usize>,
        /// The most the generated payload files add up to, e.g. "1GiB".
        #[arg(long, default_value = "1GiB", requires = "generate")]
        payload_bytes: String,
        /// Seed of the generated catalog (the same seed gives the same catalog).
        #[arg(long, default_value_t = 1, requires = "generate")]
        seed: u64,
        /// Also generate M driver updates for about M/8 device models (not approved).
        #[arg(long, value_name = "M", default_value_t = 0, requires = "generate")]
        drivers: usize,
    },
    /// Approve updates for a target group (a root's deployments).
    Approve {
        /// The UpdateID (GUID) of an update to approve; repeat for several.
        #[arg(long = "update", value_name = "GUID", required_unless_present = "all")]
        updates: Vec<String>,
        /// Every update that can be approved on its own (explicitly deployable software).
        #[arg(long, conflicts_with = "updates")]
        all: bool,
        /// The target group, e.g. "All Computers".
        #[arg(long)]
        group: String,
        /// install, optional, uninstall, block, or notapproved (takes an approval back).
        #[arg(long, default_value = "install")]
        action: String,
        /// Install by this time (xs:dateTime, e.g. 2026-12-24T18:00:00Z).
        #[arg(long)]
        deadline: Option<String>,
    },
    /// Decline updates (never offered; their approvals are taken back), or --undo that.
    Decline {
        /// The UpdateID (GUID) of an update; repeat for several.
        #[arg(long = "update", value_name = "GUID", required = true)]
        updates: Vec<String>,
        #[arg(long)]
        undo: bool,
    },
    /// Sync now from the upstream (a downstream server): catalog, target groups, approvals
    /// and declines; a node running on the same data_dir serves the result and prefetches.
    Sync,
    /// Manage target groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Start a root and a branch on loopback, drive simulated Delivery Optimization downloads
    /// through the branch, and print what happened.
    Demo {
        /// Simulated clients downloading at the same time.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Keep both nodes running after the summary, until interrupted.
        #[arg(long)]
        keep_running: bool,
    },
    /// Simulated Windows Update clients against a node: the scan sequence, optionally the
    /// downloads and the reports; prints scans per second and SOAP latency.
    Simulate {
        /// The node clients scan, e.g. http://branch:8530.
        #[arg(long)]
        server: String,
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Clients scanning at the same time.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Client-side targeting group of every client.
        #[arg(long)]
        group: Option<String>,
        /// Download what each client is told to install.
        #[arg(long)]
        download: bool,
        /// Download from this server instead (an alternate download server).
        #[arg(long, value_name = "URL")]
        content_server: Option<String>,
        /// Report install events after the scan.
        #[arg(long)]
        report: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Once every client has scanned, each scans this many more times with what it holds
        /// (the daily rescans a branch mostly answers); reported apart.
        #[arg(long, default_value_t = 0)]
        rescans: usize,
        /// Start this many first scans per second, whether or not earlier ones have ended, at
        /// most --concurrency at once: an offered load, to read latency at a known fraction of
        /// a node's capacity. Without it, each scan starts when one ends.
        #[arg(long, value_name = "SCANS_PER_SECOND", value_parser = positive_rate)]
        rate: Option<f64>,
        /// The same for the rescans.
        #[arg(long, value_name = "SCANS_PER_SECOND", value_parser = positive_rate)]
        rescan_rate: Option<f64>,
        /// The coding clients ask SOAP answers in: xpress (as Windows does), gzip, or none.
        #[arg(long, value_name = "CODING", default_value = "xpress", value_parser = answer_coding)]
        accept_encoding: Coding,
        /// Give each client devices, as a PC of the fleet of `import --generate --drivers M`
        /// with the same --seed: its driver pass lists them.
        #[arg(long, value_name = "M")]
        drivers: Option<usize>,
    },
    /// A WAN between a branch and its upstream, for tests and benchmarks (no config file):
    /// delay, bandwidth, queue and loss, as a TCP+UDP relay or between two TUN devices.
    WanEmulator {
        /// Relay mode: listen on LISTEN (TCP and UDP) and forward to TARGET ("LISTEN=TARGET").
        #[arg(long, value_name = "LISTEN=TARGET", conflicts_with = "tun")]
        relay: Option<String>,
        /// Packet mode: create TUN devices A (branch side) and B (upstream side) and forward
        /// every IP packet between them ("A,B"; needs CAP_NET_ADMIN).
        #[arg(long, value_name = "A,B")]
        tun: Option<String>,
        /// One-way delay, e.g. "20ms".
        #[arg(long, default_value = "0ms")]
        delay: String,
        /// Bandwidth each way, e.g. "50Mbit/s", or "unlimited".
        #[arg(long, default_value = "unlimited")]
        rate: String,
        /// Random packet loss, e.g. "2%" (relay: UDP only; TUN: every packet).
        #[arg(long, default_value = "0%")]
        loss: String,
        /// The bottleneck's buffer as link time, e.g. "100ms".
        #[arg(long, default_value = "100ms")]
        queue: String,
        /// Drop every UDP packet (a firewall blocking QUIC).
        #[arg(long)]
        block_udp: bool,
    },
}

/// Where a running node's admin listener is.
#[derive(clap::Args, Debug)]
pub struct AdminAddress {
    /// The admin listener, e.g. http://127.0.0.1:8540 (default: listen.admin of the
    /// configuration).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// A file holding an admin token, for a node that is not on this machine.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// A new CA: OUT/ca.pem and OUT/ca-key.pem (keep the key offline when you can).
    Ca {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "wsus-edge CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// A node's server certificate (tls.cert, tls.key): OUT/NAME.pem and OUT/NAME-key.pem.
    Node {
        /// The folder of ca.pem and ca-key.pem.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The host name clients and branches use (in WUServer, in upstream.url).
        #[arg(long)]
        name: String,
        /// More names or IP addresses the node is reached by; repeat for several.
        #[arg(long, value_name = "NAME_OR_IP")]
        san: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A branch's client certificate for mutual TLS (upstream.client_cert, client_key).
    Client {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The branch's name.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Shell completions, to stdout.
    Completions { shell: clap_complete::Shell },
    /// Man pages (wsus-edge.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Add a target group (under All Computers unless --parent names another).
    Add {
        name: String,
        #[arg(long)]
        parent: Option<String>,
    },
}

pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
}

/// Run a parsed command line. `env` is the process environment (for `WSUS_EDGE_*` overrides);
/// `logging` changes how the process logs (serve applies `[log]` and reloads it on SIGHUP).
pub async fn run(cli: Cli, env: Vec<(String, String)>, logging: Logging) -> Exit {
    match cli.command {
        Command::CheckConfig { file } => serve::check_config(file.or(cli.config).as_deref(), &env),
        Command::Serve => serve::serve(cli.config.as_deref(), &env, &logging).await,
        Command::Status { json, admin } => {
            status::status(cli.config.as_deref(), &env, &admin, json).await
        }
        Command::Health { ready, admin } => {
            status::health(cli.config.as_deref(), &env, &admin, ready).await
        }
        Command::Cert { command } => cert::cert(command),
        Command::Generate { command } => generate::generate(command),
        Command::Import {
            dir,
            generate,
            payload_bytes,
            seed,
            drivers,
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => match (dir, generate) {
                (Some(dir), None) => catalog::import(&config, &dir).await,
                (_, Some(n)) => match crate::config::units::parse_bytes(&payload_bytes) {
                    Ok(budget) => {
                        report(catalog::generate_catalog(&config, n, drivers, budget, seed).await)
                    }
                    Err(e) => {
                        eprintln!("wsus-edge import: --payload-bytes: {e}");
                        Exit::Usage
                    }
                },
                (None, None) => Exit::Usage,
            },
            None => Exit::Usage,
        },
        Command::Approve {
            updates,
            all,
            group,
            action,
            deadline,
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => {
                catalog::approve(&config, &updates, all, &group, &action, deadline.as_deref()).await
            }
            None => Exit::Usage,
        },
        Command::Sync => match load(cli.config.as_deref(), &env) {
            Some(config) => catalog::sync(&config).await,
            None => Exit::Usage,
        },
        Command::Decline { updates, undo } => match load(cli.config.as_deref(), &env) {
            Some(config) => catalog::decline(&config, &updates, !undo).await,
            None => Exit::Usage,
        },
        Command::Group {
            command: GroupCommand::Add { name, parent },
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => catalog::group_add(&config, name, parent).await,
            None => Exit::Usage,
        },
        Command::Demo {
            clients,
            keep_running,
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => report(demo::demo(&config, clients, keep_running).await),
            None => Exit::Usage,
        },
        Command::Simulate {
            server,
            clients,
            concurrency,
            group,
            download,
            content_server,
            report: send_reports,
            seed,
            rescans,
            rate,
            rescan_rate,
            accept_encoding,
            drivers,
        } => {
            let fleet = crate::simulate::wua::Fleet {
                server: server.trim_end_matches('/').to_owned(),
                content_server,
                clients,
                concurrency,
                group,
                download: download || send_reports,
                report: send_reports,
                seed,
                rescans,
                fail_every: 0,
                rate,
                rescan_rate,
                accepts: accept_encoding,
                drivers: drivers.map(|m| {
                    std::sync::Arc::new(crate::testkit::drivers::generate_drivers(m, seed))
                }),
            };
            simulate::simulate(&fleet).await
        }
        Command::WanEmulator {
            relay,
            tun,
            delay,
            rate,
            loss,
            queue,
            block_udp,
        } => {
            let link = match wan::wan_link(&delay, &rate, &loss, &queue, block_udp) {
                Ok(link) => link,
                Err(e) => {
                    eprintln!("wsus-edge wan-emulator: {e}");
                    return Exit::Usage;
                }
            };
            report(wan::wan_emulator(relay, tun, link).await)
        }
    }
}

/// The configuration at `path` (built-in defaults without one) with `env`'s overrides, or None
/// after printing its problems.
fn load(path: Option<&Path>, env: &[(String, String)]) -> Option<Config> {
    match Config::load(path, env) {
        Ok(config) => Some(config),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// The exit code of a subcommand's result, its error printed: a configuration error is a usage
/// error (2), any other a failure (1).
fn report(result: Result<(), Error>) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("wsus-edge: {e}");
            if e.kind() == Kind::Config {
                Exit::Usage
            } else {
                Exit::Failure
            }
        }
    }
}

/// `--rate`: a finite number of scans per second above zero.
/// `--accept-encoding`: the coding simulated clients ask answers in.
fn answer_coding(text: &str) -> std::result::Result<Coding, String> {
    match text {
        "xpress" => Ok(Coding::Xpress),
        "gzip" => Ok(Coding::Gzip),
        "none" => Ok(Coding::Identity),
        _ => Err(format!("{text:?} is not one of xpress, gzip, none")),
    }
}

fn positive_rate(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a number of scans per second above zero"
        )),
    }
}
