//! The client protocol (MS-WUSP): the SimpleAuth, Client and Reporting web services Windows
//! Update Agents call, answered from the local catalog.
//!
//! Owns: cookies ([`cookie`]). May call: `soap`, `catalog`, `error`.

pub mod cookie;
