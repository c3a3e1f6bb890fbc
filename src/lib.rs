//! wsus-edge: a Windows update server for branch offices.
//!
//! A node answers Windows Update clients from local state and fetches what it lacks from its
//! upstream. This crate holds every part of a node; `main.rs` only parses the command line.
//!
//! The content path (the heart of it): `/Content/<XX>/<SHA1>.<ext>` is addressed by digest;
//! [`content`] serves exact RFC 9110 ranges from a memory tier and a disk tier, and fills misses
//! from [`upstream`] one aligned slice at a time, one fetch per slice however many clients wait.
//!
//! Modules, in dependency order: a module may call those listed before it, never one after it,
//! so the module graph has no circle and no arrow that runs back up. `tests/architecture.rs`
//! reads this list and every `crate::` path in `src/` and fails on an import against the order.
//! - [`allocator`]: glibc's malloc told to keep few arenas and give freed pages back.
//! - [`clock`]: the wall clock, seconds since the epoch, where the node reads it.
//! - [`lock`]: how the node takes its standard locks (a poisoned one as it is).
//! - [`access`]: who sent a request (address, user agent, request id), for access lines.
//! - [`error`]: the one error type (which side failed, whether a retry helps).
//! - [`config`]: the typed configuration contract, human units, every problem with its key.
//! - [`metrics`]: the Prometheus registry of a node.
//! - [`http`]: what every HTTP exchange is made of: bodies, plain answers, request bodies read
//!   under limits, the gzip content coding, the bound on large parses, files sent by `sendfile`.
//! - [`soap`]: SOAP 1.1/1.2 envelopes and faults, the WSUS fault shape, XML Schema forms;
//!   sans-IO, with hard parser limits.
//! - [`testkit`]: what tests, the demo and load use and a serving node never does: the
//!   synthetic catalog and its random source, WSUS-shaped cabinets, the WAN emulator.
//! - [`soap_client`]: one client of the WSUS web services (envelope, SOAPAction, gzip,
//!   answer or fault) over any [`soap_client::Transport`].
//! - [`catalog`]: updates, their fragments, target groups and deployments (the model).
//! - [`report`]: what clients and downstream servers reported (the journal in `state.db`).
//! - [`state`]: `state.db`: the connections, the schema and its upgrades, the catalog's and
//!   the journal's rows; what tells a node its catalog changed.
//! - [`served`]: the catalog in service, shared by both protocols: reloads, scopes, this
//!   server's identity and cookie key.
//! - [`tls`]: the rustls configurations (server and upstream client, TCP and QUIC).
//! - [`pki`]: the certificates `wsus-edge cert` issues.
//! - [`upstream`]: the link to the parent server (HTTP/1.1, HTTP/2 and HTTP/3, TLS), retries and
//!   the shared WAN bandwidth limit.
//! - [`content`]: range math, slices, the fill, memory and disk tiers, verification, eviction.
//! - [`wusp`]: the client protocol (MS-WUSP) answered from the catalog in service.
//! - [`wsusss`]: the server-server protocol (MS-WSUSSS): the upstream side, the sync, the rollup.
//! - [`auth`]: bearer tokens (admin writers, downstream servers).
//! - [`app`]: what every handler may see of a running node.
//! - [`admin`]: `/livez`, `/readyz`, `/metrics`, the API and the pages.
//! - [`server`]: listeners, routing, the SOAP calls' way through the node.
//! - [`node`]: the composition root: a node built from its parts, started and stopped.
//! - [`simulate`]: clients that scan like Windows Update and download like Delivery
//!   Optimization (for the demo, tests and load); they only speak HTTP to a node.
//! - [`logging`]: where log lines go and how they look; the filter SIGHUP changes.
//! - [`systemd`]: readiness, reload, stop and watchdog notifications to the service manager.
//! - [`progress`]: progress bars of the long commands.
//! - [`fuzzing`]: the fuzz targets' entry points (`fuzz/`): untrusted bytes fed to the code that
//!   reads them, the way a listener or the upstream link does.
//! - [`cli`]: the subcommands.

pub mod access;
pub mod admin;
pub mod allocator;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content;
pub mod error;
pub mod fuzzing;
pub mod http;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod progress;
pub mod report;
pub mod served;
pub mod server;
pub mod simulate;
pub mod soap;
pub mod soap_client;
pub mod state;
pub mod systemd;
pub mod testkit;
pub mod tls;
pub mod upstream;
pub mod wsusss;
pub mod wusp;
