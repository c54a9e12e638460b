//! Transfer logic as sans-IO: which chunks a download has ([`Bitfield`]) and which chunk to
//! ask which peer for ([`Scheduler`]).
//!
//! **Owns** chunk availability, per-peer request windows and measurements, endgame and the
//! decisions to ban or sideline a peer. **May not touch** storage, sockets, glommio, the
//! clock or the OS RNG: time enters as the `now` argument of every `handle_*`/`poll_*` call
//! and randomness as the `seed` of [`Scheduler::new`], so a test replays any run exactly.
//!
//! Files: `scheduler` ([`Scheduler`], its config and events), `peer` (per-peer state and
//! estimators), `picker` (the ordered pool of chunks nobody has been asked for).

mod peer;
mod picker;
mod scheduler;

pub use scheduler::{
    BanReason, ConnId, ParseStrategyError, PeerStats, Scheduler, SchedulerConfig,
    SchedulerConfigError, SchedulerEvent, SchedulerStats, Strategy, WINDOW_MAX_LIMIT,
};

/// One bit per chunk, least significant bit first within each byte: the persisted form of
/// "chunk verified and durable".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
}

impl Bitfield {
    /// All clear, for `len` chunks.
    pub fn new(len: u32) -> Self {
        Self { bytes: vec![0; (len as usize).div_ceil(8)], len }
    }

    /// From persisted bytes; `None` if the length does not fit `len` chunks or bits past the
    /// end are set (a corrupt or foreign state).
    pub fn from_bytes(bytes: Vec<u8>, len: u32) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let tail = len % 8;
        if tail != 0 && bytes.last().is_some_and(|b| b >> tail != 0) {
            return None;
        }
        Some(Self { bytes, len })
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Sets bit `i`. Panics if `i` is out of range: callers index chunks of this file only.
    pub fn set(&mut self, i: u32) {
        assert!(i < self.len, "chunk {i} out of range for {} chunks", self.len);
        self.bytes[(i / 8) as usize] |= 1 << (i % 8);
    }

    /// Clears bit `i`; out of range is a no-op (a peer retracting a chunk it never had).
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] &= !(1 << (i % 8));
        }
    }

    /// Indices of the set bits, ascending; skips zero bytes, so sparse fields iterate fast.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.bytes.iter().enumerate().filter(|(_, b)| **b != 0).flat_map(|(i, &b)| {
            (0..8u32).filter(move |k| b & (1 << k) != 0).map(move |k| i as u32 * 8 + k)
        })
    }

    pub fn count_ones(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A bitfield several threads read and one sets, lock-free: what a downloader that also
/// seeds (partial seeding) has verified and written so far.
#[derive(Debug)]
pub struct SharedBitfield {
    bytes: Vec<std::sync::atomic::AtomicU8>,
    len: u32,
}

impl SharedBitfield {
    pub fn new(from: &Bitfield) -> Self {
        let bytes = from.as_bytes().iter().map(|&b| std::sync::atomic::AtomicU8::new(b)).collect();
        Self { bytes, len: from.len() }
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len
            && self.bytes[(i / 8) as usize].load(std::sync::atomic::Ordering::Acquire)
                & (1 << (i % 8))
                != 0
    }

    /// Sets bit `i` (ignored when out of range). Release ordering: a reader that sees the
    /// bit also sees the chunk's bytes written before it.
    pub fn set(&self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize]
                .fetch_or(1 << (i % 8), std::sync::atomic::Ordering::Release);
        }
    }

    /// Sets bit `i` and says whether it was already set (false when out of range).
    pub fn test_and_set(&self, i: u32) -> bool {
        i < self.len
            && self.bytes[(i / 8) as usize]
                .fetch_or(1 << (i % 8), std::sync::atomic::Ordering::AcqRel)
                & (1 << (i % 8))
                != 0
    }

    pub fn snapshot(&self) -> Bitfield {
        let bytes =
            self.bytes.iter().map(|b| b.load(std::sync::atomic::Ordering::Acquire)).collect();
        Bitfield { bytes, len: self.len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_reject_garbage() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert!(b.get(0) && b.get(9) && !b.get(5) && !b.get(10));
        assert_eq!(b.count_ones(), 2);
        let back = Bitfield::from_bytes(b.as_bytes().to_vec(), 10).unwrap();
        assert_eq!(back, b);
        assert!(Bitfield::from_bytes(vec![0; 3], 10).is_none());
        assert!(Bitfield::from_bytes(vec![0, 0b100], 10).is_none());
        assert!(Bitfield::new(0).is_empty());
        let shared = SharedBitfield::new(&b);
        shared.set(5);
        shared.set(99);
        assert!(shared.get(5) && shared.get(0) && !shared.get(99));
        assert_eq!(shared.snapshot().count_ones(), 3);
    }

    #[test]
    fn clear_and_ones() {
        let mut b = Bitfield::new(20);
        for i in [0, 7, 8, 19] {
            b.set(i);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 7, 8, 19]);
        b.clear(7);
        b.clear(25); // out of range: ignored
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 8, 19]);
        assert_eq!(b.count_ones(), 3);
        assert_eq!(Bitfield::new(0).ones().count(), 0);
    }
}
