//! wsus-edge: a Windows update server for branch offices.
//!
//! A node answers Windows Update clients from local state and fetches what it lacks from its
//! upstream. This crate holds every part of a node; `main.rs` only parses the command line.
//!
//! The content path (the heart of it): `/Content/<XX>/<SHA1>.<ext>` is addressed by digest;
//! [`content`] serves exact RFC 9110 ranges from a memory tier and a disk tier, and fills misses
//! from [`upstream`] one aligned slice at a time, one fetch per slice however many clients wait.
//!
//! Modules, in dependency order (a module may call those listed before it, never after):
//! - [`clock`]: the wall clock, seconds since the epoch, where the node reads it.
//! - [`lock`]: how the node takes its standard locks (a poisoned one as it is).
//! - [`access`]: who sent a request (address, user agent, request id), for access lines.
//! - [`error`]: the one error type (which side failed, whether a retry helps).
//! - [`config`]: the typed configuration contract, human units, every problem with its key.
//! - [`metrics`]: the Prometheus registry of a node.
//! - [`soap`]: SOAP 1.1/1.2 envelopes and faults, sans-IO, with hard parser limits.
//! - [`catalog`]: updates, their fragments, target groups and deployments; `state.db`.
//! - [`tls`]: the rustls configurations (server and upstream client, TCP and QUIC).
//! - [`upstream`]: the link to the parent server (HTTP/1.1, HTTP/2 and HTTP/3, TLS), retries and
//!   the shared WAN bandwidth limit.
//! - [`content`]: range math, slices, the fill, memory and disk tiers, verification, eviction.
//! - [`wusp`]: the client protocol (MS-WUSP) answered from the catalog.
//! - [`wsusss`]: the server-server protocol (MS-WSUSSS), upstream side.
//! - [`auth`]: bearer tokens (admin writers, downstream servers).
//! - [`admin`]: `/livez`, `/readyz`, `/metrics`, `/api/v1/status`.
//! - [`server`]: listeners, routing, the running node.
//! - [`simulate`]: a client that downloads like Windows' Delivery Optimization (for the demo,
//!   tests and load); it only speaks HTTP to a node. Also the WAN emulator.
//! - [`logging`]: where log lines go and how they look; the filter SIGHUP changes.
//! - [`systemd`]: readiness, reload, stop and watchdog notifications to the service manager.
//! - [`fuzzing`]: the fuzz targets' entry points (`fuzz/`): untrusted bytes fed to the code that
//!   reads them, the way a listener or the upstream link does.
//! - [`cli`]: the subcommands.

pub mod access;
pub mod admin;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content;
pub mod error;
pub mod fuzzing;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod progress;
pub mod report;
pub mod server;
pub mod simulate;
pub mod soap;
pub mod systemd;
pub mod tls;
pub mod upstream;
pub mod wsusss;
pub mod wusp;
