//! Descriptor budgets from the process's real limit.
//!
//! Every connection, mapped file, io_uring ring and eventfd is a file descriptor, and the
//! soft `RLIMIT_NOFILE` is often 1,024. At start the node raises the soft limit to the hard
//! one (as servers do), then sizes its per-shard pools from what it got, so the pools run
//! into their own bounds (evict, refuse one connection) before the process runs into
//! EMFILE.

use std::io;
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept aside for everything that is not a pool: stdio, the listeners, the DHT
/// socket, io_uring rings and eventfds of every executor, the catalog and state files.
const RESERVED_DESCRIPTORS_MAX: u64 = 256;

/// Raises the soft limit on open files to the hard limit and returns the soft limit now
/// in force (unchanged if raising fails, e.g. under a sandbox that forbids it).
pub fn raise_open_files_limit() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (lim.current, lim.maximum) {
        if soft < hard && setrlimit(Resource::Nofile, Rlimit { current: Some(hard), ..lim }).is_ok()
        {
            return hard;
        }
    }
    open_files_limit()
}

/// The soft limit on open files now in force (`u64::MAX` when unlimited).
pub fn open_files_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Pool bounds for one shard of a node with `shards` shards, under a soft descriptor
/// limit of `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardBudget {
    /// Connections served at once; more are closed at accept.
    pub connections_max: usize,
    /// Files kept open and mapped between requests.
    pub open_files_max: usize,
}

impl ShardBudget {
    /// Splits what is left of `limit` after a reserve (an eighth of it, at most
    /// [`RESERVED_DESCRIPTORS_MAX`]) over the shards: half for connections, a quarter
    /// for cached maps (the last quarter is slack for maps opened for one request while
    /// the cache is full), each capped by its config constant and at least 4.
    pub fn new(limit: u64, shards: usize, connections_cap: usize, open_files_cap: usize) -> Self {
        let reserve = (limit / 8).min(RESERVED_DESCRIPTORS_MAX);
        let per_shard = limit.saturating_sub(reserve) / shards.max(1) as u64;
        let part = |share: u64, cap: usize| {
            usize::try_from(per_shard / share).unwrap_or(usize::MAX).clamp(4, cap.max(4))
        };
        Self { connections_max: part(2, connections_cap), open_files_max: part(4, open_files_cap) }
    }
}

/// Whether an I/O error is descriptor exhaustion (EMFILE for the process, ENFILE for the
/// system): a local resource running out, not a fault of the request or the file.
pub(super) fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// First pause after a failed accept; it doubles per failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accepts while they keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What an accept loop does when `accept(2)` fails (EMFILE above all: the connection stays
/// queued in the kernel): wait, doubling the pause from 10 ms to 1 s while failures go on,
/// and say so on stderr once per run of failures rather than once per failure.
#[derive(Debug, Default)]
pub(super) struct AcceptBackoff {
    failures: u64,
    delay: Duration,
}

impl AcceptBackoff {
    /// After a failed accept: reports the first failure of a run, then waits.
    pub(super) async fn failed(&mut self, shard: usize, e: &io::Error) {
        if self.failures == 0 {
            let hint = if is_out_of_descriptors(e) {
                "; out of file descriptors, backing off until connections or files close"
            } else {
                ""
            };
            note!("furymesh seed: shard {shard}: accept failed: {e}{hint}");
        }
        self.failures += 1;
        self.delay = (self.delay * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        glommio::timer::sleep(self.delay).await;
    }

    /// After a successful accept: ends a run of failures, saying how long it was.
    pub(super) fn succeeded(&mut self, shard: usize) {
        if self.failures > 0 {
            tracing::info!(
                "furymesh seed: shard {shard}: accepting again after {} failures",
                self.failures
            );
            *self = Self::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_fit_under_the_limit() {
        for limit in [64, 128, 1024, 4096, 1 << 20] {
            for shards in [1, 2, 8, 64] {
                let b = ShardBudget::new(limit, shards, 4096, 1024);
                let used = shards as u64 * (b.connections_max + 2 * b.open_files_max) as u64;
                // The floors of 4 may exceed a tiny limit; any realistic one fits.
                if limit / shards as u64 >= 64 {
                    assert!(used <= limit, "{limit} {shards}: {b:?}");
                }
                assert!(b.connections_max <= 4096 && b.open_files_max <= 1024);
            }
        }
        assert_eq!(ShardBudget::new(1 << 20, 2, 4096, 1024).open_files_max, 1024);
        assert_eq!(ShardBudget::new(1024, 2, 4096, 1024).open_files_max, 112);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let now = raise_open_files_limit();
        assert_eq!(Some(now), hard.or(Some(u64::MAX)));
    }
}
