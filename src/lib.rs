//! FuryMesh: a thread-per-core peer-to-peer seed server.
#![deny(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod dht;
pub mod node;
pub mod storage;
pub mod transfer;
pub mod wire;
