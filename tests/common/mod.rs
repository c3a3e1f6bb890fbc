//! Shared harness of the integration tests, one module per role; everything is re-exported here
//! so that a test says `use common::*;`. Everything listens on loopback only.
//!
//! - [`node`]: nodes started from TOML on 127.0.0.1:0, in this process or as one of their own
//! - [`origin`]: a scriptable origin server (counts every request and byte, injects faults)
//! - [`http`]: a small HTTP client, a node's URLs and metrics
//! - [`soap`]: SOAP calls and the Python (zeep) checks
//! - [`logs`]: the nodes' logs, kept for tests to search
//! - [`wait`]: the one polling wait for a condition
//! - [`payload`]: deterministic bytes and their content names
//! - [`pki`]: certificates made at run time, a node serving TLS
//! - [`state`]: where a test node's state lives (state.db, or PostgreSQL when CI says so)
#![allow(dead_code)]

mod http;
mod logs;
mod node;
mod origin;
mod payload;
pub mod pki;
mod soap;
mod state;
mod wait;

// Each test binary uses a part of the harness: the rest of these is unused there.
#[allow(unused_imports)]
pub use self::{http::*, logs::*, node::*, origin::*, payload::*, soap::*, state::*, wait::*};
