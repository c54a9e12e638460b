//! FuryMesh: a thread-per-core peer-to-peer seed server, throughput harness and bulk
//! publishing CLI.
//!
//! - [`node`] runs the shards (one pinned glommio executor per core) and is the only module
//!   that touches sockets, files on the data path, timers and the clock. The seeder serves
//!   chunks from memory maps without user-space copies; `get` downloads, verifies and
//!   persists resumable state.
//! - [`manifest`] is the file manifest (`FileInfo`) and the check that authenticates it;
//!   [`collection`] is a release's list of files and the rules for its entry paths.
//! - [`wire`] turns `schemas/furymesh.fbs` FlatBuffers into verified, owned messages.
//! - [`storage`] owns the data directory: the catalog of published files, chunking and
//!   hashing, memory maps (the crate's only `unsafe`), atomic writes.
//! - [`crypto`] defines file IDs and chunk hashes.
//! - [`transfer`] and [`dht`] are sans-IO state machines: bytes and time in, messages,
//!   timers and events out. Both, and the node's bandwidth limits, use the token bucket in
//!   [`throttle`]. `sim` (feature `sim`) runs thousands of DHT nodes on virtual
//!   time.
//! - [`api`] is the control API and `/metrics` of a running `seed` (HTTP on a thread of
//!   its own, a client of the node's handle); [`gateway`] is the public HTTP gateway of
//!   `seed --http` (published files and collections to curl and browsers, same stack).
//! - [`link`] reads and writes `furymesh:` share links.
//! - [`cli`], [`demo`] and [`bench`] are the binary's front ends; [`output`] is their one
//!   writer of stdout; [`service`] resolves `seed`'s configuration file and sets up logs.
//!
//! ARCHITECTURE.md records each design decision and why.
#![deny(unsafe_code)]

/// A warning or error worth an operator's attention, as a `tracing` event at WARN level
/// (the subscriber of [`service::init_logging`] writes it on stderr and drops it if stderr
/// is closed: `furymesh seed 2>&1 | head -1` must not crash the seeder later). Progress
/// worth logging uses `tracing::info!`; stdout goes through [`output::say`].
macro_rules! note {
    ($($arg:tt)*) => {
        tracing::warn!($($arg)*)
    };
}

mod addr;
pub mod api;
pub mod bench;
pub mod cli;
pub mod collection;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod dht;
pub mod gateway;
pub mod link;
pub mod manifest;
pub mod node;
pub mod output;
pub mod peer;
mod server_thread;
pub mod service;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod storage;
pub mod throttle;
pub mod transfer;
pub mod wire;
