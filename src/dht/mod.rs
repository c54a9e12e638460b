//! Kademlia DHT as a sans-IO core: 160-bit ids, XOR metric, k-buckets, iterative lookups,
//! RPC timeouts, provider records and their paced announcement.
//!
//! **Owns** the routing table, lookups, pending requests and their timeouts, the provider
//! store, the announce queue, per-source rate limiting and the owned message types.
//! **May not touch** glommio, sockets, files, the wall clock, the OS RNG, FlatBuffers types
//! or other shards. Time enters as the `now` argument of every `handle_*` call, randomness
//! as the `seed` of [`Dht::new`], datagrams as owned [`DhtMessage`]s (`wire/` encodes them).
//!
//! Vocabulary (quinn style): feed [`Dht::handle_datagram`], [`Dht::handle_command`] and
//! [`Dht::handle_timeout`]; drain [`Dht::poll_transmit`] and [`Dht::poll_event`]; wake at
//! [`Dht::poll_timeout`]. Bad peer input never returns an error: it is dropped, counted in
//! [`DhtStats`] and reported as [`DhtEvent::PeerMisbehaved`]. Every queue and table has a
//! named bound in [`DhtConfig`], so memory stays bounded under floods.
//!
//! Files: `id` (ids, distance, contacts), `message` (wire-level data), `config` (tunables),
//! `routing` (k-buckets), `lookup` (iterative lookup state), `store` (provider records),
//! `announce` (publish and republish queue), `rate` (token buckets), `engine` ([`Dht`]).

mod announce;
mod config;
mod engine;
mod id;
mod lookup;
mod message;
mod rate;
mod routing;
mod store;

pub use config::{DhtConfig, DhtConfigError};
pub use engine::{Dht, DhtCommand, DhtEvent, DhtStats, Misbehavior, Rejection, RpcCounts};
pub use id::{Contact, Distance, IdParseError, Key, NodeId, ID_BITS, ID_BYTES};
pub use lookup::LookupStats;
pub use message::{
    DhtBody, DhtMessage, Transports, CONTACTS_PER_MESSAGE_MAX, PROVIDERS_PER_MESSAGE_MAX,
};
pub use routing::{Insertion, RoutingTable, TableRejection, BUCKETS};
