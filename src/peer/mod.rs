//! The peer wire as sans-IO state machines: one [`ClientSession`] per download connection,
//! one [`ServerSession`] per served connection, in the vocabulary of the other cores
//! (`handle_*(now, …)` in, `poll_transmit` / `poll_event` / `poll_timeout` out).
//!
//! **Owns** the protocol decisions of an established connection: matching responses to
//! requests (answers come in request order), request windows (sized by the swarm
//! [`Scheduler`](crate::transfer::Scheduler)), bitfield refresh from partial seeders, the
//! verify decision (a chunk counts only if its SHA-256 matches the manifest), the ban check,
//! what a server refuses and with which [`ErrorCode`], idle deadlines.
//!
//! **May not touch** sockets, files, memory maps, glommio, the clock or the OS RNG. Time
//! enters as `now`; bytes enter as control-record bodies and whole chunk payloads (already
//! deframed and opened by [`crate::wire::frame`]); what to send leaves as encoded frames
//! and, on the server, as an instruction naming a byte range of a file, so only the
//! transport touches the file's bytes (zero copy from the map, or pread and seal).
//!
//! A pump drives a session like this (the node's TCP pump does exactly this; a simulation
//! can do it over virtual links):
//!
//! ```text
//! server: deframer → handle_frame(now, body, files) → poll_transmit → Frame | Chunk{range}
//!         transport errors → handle_frame_error; a file that changed → handle_chunk_failed
//! client: drive(now, swarm) → poll_transmit(now) → request frames
//!         deframer → handle_frame(now, body); payload_expected() → deframer.expect_payload
//!                  → handle_payload(now, bytes) → poll_event: Verified | Corrupt | Done | Failed
//!         sleep until poll_timeout(), then drive again
//! ```

mod client;
mod server;

pub use client::{
    manifest_from, ClientConfig, ClientEvent, ClientSession, PeerError, Swarm, BITFIELD_REFRESH,
};
pub use server::{ChunkFailure, Served, ServedFiles, ServerSession, ServerStats, ServerTransmit};

pub use crate::transfer::ConnId;
pub use crate::wire::{ErrorCode, Request, Response};
