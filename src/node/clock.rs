//! The node's only door to the clock and to operating-system randomness.
//!
//! The cores (`dht`, `transfer`, `crypto`, `wire`) never read either: they take `now` and a
//! seed as arguments, so a test or the simulation replays them exactly. Whatever is impure
//! reads time and randomness here, and `clippy.toml` forbids the underlying calls
//! (`Instant::now`, `SystemTime::now`, the thread RNG, OS-RNG seeding) everywhere else. One
//! place to swap for a virtual clock or a seeded RNG when a whole node runs in simulation.

// The one place the forbidden calls are made; see clippy.toml.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::distr::{Distribution, StandardUniform};
use rand::RngCore;

/// The monotonic clock: what every timer, deadline and rate limit of the node measures.
pub fn now() -> Instant {
    Instant::now()
}

/// Unix seconds now (wall clock): certificate and signed-record lifetimes are in wall-clock
/// time. 0 if the clock is set before 1970.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random value from the thread RNG (seeded from the OS): seeds for the sans-IO cores,
/// transaction IDs, throwaway node IDs.
pub fn random<T>() -> T
where
    StandardUniform: Distribution<T>,
{
    rand::random()
}

/// Fills `buf` from the thread RNG (a ChaCha CSPRNG seeded from the OS): key seeds and
/// handshake randomness.
pub fn fill_random(buf: &mut [u8]) {
    rand::rng().fill_bytes(buf);
}

/// The operating system's RNG in the `rand_core` 0.6 form that RSA key generation and
/// session-certificate signing take (`crypto::Identity::generate`, `issue_session`).
pub fn os_rng() -> crate::crypto::rand_core::OsRng {
    crate::crypto::rand_core::OsRng
}
