//! The pool of chunks that are missing and not in flight anywhere, kept in the order the
//! strategy wants them handed out.
//!
//! One ordered set serves both strategies, keyed `(class, order, chunk)`:
//! - rarest-first: `class` = how many usable peers have the chunk, `order` = a seeded hash of
//!   the chunk index (the random tie-break: peers that start together spread out instead of
//!   all asking for chunk 0, and a test replays it from the seed);
//! - round-robin: `class` = 1 if any usable peer has it (0 otherwise), `order` = the index,
//!   so chunks go out in file order.
//!
//! Chunks nobody has sort under class 0 and are skipped by [`Pending::requestable`], which
//! starts at class 1. Why a `BTreeSet` rather than libtorrent's sorted vector with per-count
//! boundaries: updates are O(log n) with no hand-written index fixing, and at the
//! `CHUNKS_PER_FILE_MAX` bound (2^20 chunks) it costs ~20 MiB, the same order as the manifest.

use std::collections::BTreeSet;

use crate::transfer::Strategy;

type Key = (u32, u32, u32);

#[derive(Debug)]
pub(super) struct Pending {
    strategy: Strategy,
    salt: u64,
    set: BTreeSet<Key>,
}

impl Pending {
    pub(super) fn new(strategy: Strategy, salt: u64) -> Self {
        Self { strategy, salt, set: BTreeSet::new() }
    }

    fn key(&self, chunk: u32, avail: u32) -> Key {
        match self.strategy {
            Strategy::RarestFirst => (avail, mix32(self.salt, chunk), chunk),
            Strategy::RoundRobin => (u32::from(avail > 0), chunk, chunk),
        }
    }

    /// Adds `chunk`, which `avail` usable peers have. Returns false if it was already there.
    pub(super) fn insert(&mut self, chunk: u32, avail: u32) -> bool {
        let k = self.key(chunk, avail);
        self.set.insert(k)
    }

    /// Removes `chunk`, inserted with (or last re-keyed to) `avail`.
    pub(super) fn remove(&mut self, chunk: u32, avail: u32) -> bool {
        let k = self.key(chunk, avail);
        self.set.remove(&k)
    }

    /// Moves `chunk` from availability `old` to `new`, if it is in the pool.
    pub(super) fn rekey(&mut self, chunk: u32, old: u32, new: u32) {
        let (ko, kn) = (self.key(chunk, old), self.key(chunk, new));
        if ko != kn && self.set.remove(&ko) {
            self.set.insert(kn);
        }
    }

    /// Replaces the pool with `items` (chunk, availability): one sort and a bulk build,
    /// for changes that touch most chunks at once.
    pub(super) fn rebuild(&mut self, items: impl Iterator<Item = (u32, u32)>) {
        let mut keys: Vec<Key> = items.map(|(c, a)| self.key(c, a)).collect();
        keys.sort_unstable();
        self.set = keys.into_iter().collect();
    }

    /// Chunks some usable peer has, best first.
    pub(super) fn requestable(&self) -> impl Iterator<Item = u32> + '_ {
        self.set.range((1, 0, 0)..).map(|k| k.2)
    }

    #[cfg(test)]
    pub(super) fn has_requestable(&self) -> bool {
        self.requestable().next().is_some()
    }

    /// Chunks some usable peer has whose index is below `limit`, best first. In file order
    /// (round-robin) this stops at `limit` without looking further; rarest-first has to
    /// skip the chunks past it.
    pub(super) fn requestable_below(&self, limit: u32) -> Box<dyn Iterator<Item = u32> + '_> {
        match self.strategy {
            Strategy::RoundRobin => Box::new(self.set.range((1, 0, 0)..(1, limit, 0)).map(|k| k.2)),
            Strategy::RarestFirst => Box::new(self.requestable().filter(move |&c| c < limit)),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether `chunk` is in the pool under availability `avail` (invariant checks).
    pub(super) fn contains(&self, chunk: u32, avail: u32) -> bool {
        self.set.contains(&self.key(chunk, avail))
    }
}

/// SplitMix64 finaliser of `salt ^ chunk`, truncated: a well-spread, seed-dependent order.
fn mix32(salt: u64, chunk: u32) -> u32 {
    let mut z = salt ^ u64::from(chunk);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarest_first_orders_by_availability_then_seeded_hash() {
        let mut p = Pending::new(Strategy::RarestFirst, 7);
        for c in 0..10 {
            p.insert(c, if c == 6 { 1 } else { 3 });
        }
        p.insert(10, 0);
        let order: Vec<u32> = p.requestable().collect();
        assert_eq!(order[0], 6);
        assert_eq!(order.len(), 10, "nobody has chunk 10: not requestable");
        assert_ne!(order[1..], (0..10).filter(|&c| c != 6).collect::<Vec<_>>()[..]);
        p.rekey(3, 3, 1);
        assert!(p.contains(3, 1) && !p.contains(3, 3));
        assert!(p.remove(6, 1));
        assert_eq!(p.requestable().next(), Some(3));
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn round_robin_orders_by_index() {
        let mut p = Pending::new(Strategy::RoundRobin, 7);
        for c in [5, 1, 3] {
            p.insert(c, 2);
        }
        p.insert(0, 0);
        assert_eq!(p.requestable().collect::<Vec<_>>(), vec![1, 3, 5]);
        p.rekey(0, 0, 1);
        p.rekey(5, 2, 9); // same class: no move needed
        assert_eq!(p.requestable().collect::<Vec<_>>(), vec![0, 1, 3, 5]);
        assert!(p.has_requestable());
        assert_eq!(p.requestable_below(3).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(p.requestable_below(0).count(), 0);
        p.rebuild([(9, 0), (4, 3)].into_iter());
        assert_eq!(p.requestable().collect::<Vec<_>>(), vec![4]);
        assert_eq!(p.len(), 2);
    }
}
