//! The test kit: what the tests, the demo and load generation use and a serving node never
//! does. A synthetic catalog shaped like Microsoft's ([`generate`]) and its random source
//! ([`random`]); driver updates and a Windows 11 PC's devices ([`drivers`]); cabinets as WSUS sends large update documents ([`cabinet`]); an emulated WAN
//! between a branch and its upstream ([`wan`]), whose TUN device (the crate's one use of
//! `ioctl`) is built only with the `wan-tun` feature.
//!
//! May call `soap` (GUIDs and base64 of the documents it writes), nothing above it: the node's
//! modules never call the kit, only their tests do.

pub mod cabinet;
pub mod drivers;
pub mod generate;
pub mod random;
pub mod wan;
