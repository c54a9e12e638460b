//! FuryMesh: a thread-per-core peer-to-peer seed server.
#![deny(unsafe_code)]

pub mod dht;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
