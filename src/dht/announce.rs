//! The keys this node provides, and the paced queue that announces and republishes them.
//!
//! An announcement is a lookup for the key followed by `AnnounceProvider` to the k closest
//! nodes that answered (about 25–60 datagrams). To keep a node with 10,000 files from
//! flooding the network at start-up or at every republish, keys wait in a FIFO queue and
//! leave it at most `announces_per_s` per second (one every `1 s / announces_per_s`, tracked
//! as the earliest instant the next may start), with at most `announces_inflight_max`
//! announcements in progress. Every key is queued again `republish_interval` after its last
//! announcement started; records elsewhere expire `provider_ttl` after it arrived.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::dht::config::DhtConfig;
use crate::dht::id::Key;

#[derive(Debug)]
struct StorePhase {
    key: Key,
    waiting: u32,
    stored: u32,
}

#[derive(Debug)]
pub(crate) struct Publisher {
    keys_max: usize,
    inflight_max: usize,
    republish_interval: Duration,
    pace: Duration,
    /// Provided keys and when each is due for republishing.
    keys: BTreeMap<Key, Instant>,
    queue: VecDeque<Key>,
    queued: BTreeSet<Key>,
    next_start_at: Option<Instant>,
    inflight: usize,
    phases: BTreeMap<u64, StorePhase>,
    next_phase: u64,
}

impl Publisher {
    pub(crate) fn new(config: &DhtConfig) -> Self {
        Self {
            keys_max: config.published_keys_max,
            inflight_max: config.announces_inflight_max,
            republish_interval: config.republish_interval,
            pace: Duration::from_secs(1) / config.announces_per_s.max(1),
            keys: BTreeMap::new(),
            queue: VecDeque::new(),
            queued: BTreeSet::new(),
            next_start_at: None,
            inflight: 0,
            phases: BTreeMap::new(),
            next_phase: 0,
        }
    }

    /// Keys queued and not yet started.
    pub(crate) fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// Adds `key` (or re-announces it now); `false` if `published_keys_max` keys are provided.
    pub(crate) fn publish(&mut self, now: Instant, key: Key) -> bool {
        if !self.keys.contains_key(&key) && self.keys.len() >= self.keys_max {
            return false;
        }
        self.keys.insert(key, now);
        self.enqueue(key);
        true
    }

    /// Stops announcing `key`; its records elsewhere expire after `provider_ttl`.
    pub(crate) fn withdraw(&mut self, key: &Key) {
        self.keys.remove(key);
        self.queued.remove(key);
    }

    /// Whether this node provides `key` (it answers `GetProviders` for it itself).
    pub(crate) fn provides(&self, key: &Key) -> bool {
        self.keys.contains_key(key)
    }

    /// Queues every provided key for a new announcement (the set of nodes that should hold
    /// its records changed). Keys already queued keep their place.
    pub(crate) fn requeue_all(&mut self) {
        if self.queued.len() == self.keys.len() {
            return;
        }
        let keys: Vec<Key> = self.keys.keys().copied().collect();
        for key in keys {
            self.enqueue(key);
        }
    }

    /// Queues every key whose republish time has come.
    pub(crate) fn schedule_due(&mut self, now: Instant) {
        let due: Vec<Key> =
            self.keys.iter().filter(|(_, at)| **at <= now).map(|(k, _)| *k).collect();
        for key in due {
            self.enqueue(key);
        }
    }

    /// The next key to announce, if pacing and the in-flight bound allow one now.
    pub(crate) fn next_to_start(&mut self, now: Instant) -> Option<Key> {
        while self.inflight < self.inflight_max && self.next_start_at.is_none_or(|at| at <= now) {
            let key = self.queue.pop_front()?;
            if !self.queued.remove(&key) {
                continue; // withdrawn while queued
            }
            let Some(due) = self.keys.get_mut(&key) else {
                continue;
            };
            *due = now + self.republish_interval;
            let earliest = self.next_start_at.map_or(now, |at| at.max(now));
            self.next_start_at = Some(earliest + self.pace);
            self.inflight += 1;
            return Some(key);
        }
        None
    }

    /// When the queue may next release a key (`None` if empty or at the in-flight bound).
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        if self.queue.is_empty() || self.inflight >= self.inflight_max {
            return None;
        }
        self.next_start_at
    }

    /// The lookup for `key` found `targets` nodes; returns the id their acks refer to.
    pub(crate) fn begin_stores(&mut self, key: Key, targets: u32) -> u64 {
        let phase = self.next_phase;
        self.next_phase += 1;
        self.phases.insert(phase, StorePhase { key, waiting: targets, stored: 0 });
        phase
    }

    /// Store phases waiting for acks.
    #[cfg(test)]
    pub(crate) fn store_phases(&self) -> usize {
        self.phases.len()
    }

    /// One store of `phase` answered (`stored`) or failed. Returns the key and the number of
    /// nodes that stored it once all have answered.
    pub(crate) fn on_store_done(&mut self, phase: u64, stored: bool) -> Option<(Key, u32)> {
        let state = self.phases.get_mut(&phase)?;
        state.waiting = state.waiting.saturating_sub(1);
        state.stored += u32::from(stored);
        if state.waiting > 0 {
            return None;
        }
        let done = self.phases.remove(&phase)?;
        Some(self.finish(done.key, done.stored))
    }

    /// Ends an announcement; returns what to report.
    pub(crate) fn finish(&mut self, key: Key, stored: u32) -> (Key, u32) {
        self.inflight -= 1;
        (key, stored)
    }

    fn enqueue(&mut self, key: Key) {
        if self.queued.insert(key) {
            self.queue.push_back(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_paced_and_bounded_in_flight() {
        let now = crate::sim::epoch();
        let config =
            DhtConfig { announces_per_s: 2, announces_inflight_max: 2, ..DhtConfig::default() };
        let mut publisher = Publisher::new(&config);
        for n in 0..4 {
            assert!(publisher.publish(now, Key::from_bytes([n; 20])));
        }
        assert_eq!(publisher.next_to_start(now), Some(Key::from_bytes([0; 20])));
        assert_eq!(publisher.next_to_start(now), None, "paced: one per 500 ms");
        let half = now + Duration::from_millis(500);
        assert_eq!(publisher.poll_at(), Some(half));
        assert_eq!(publisher.next_to_start(half), Some(Key::from_bytes([1; 20])));
        assert_eq!(publisher.next_to_start(half + Duration::from_secs(9)), None, "2 in flight");
        let phase = publisher.begin_stores(Key::from_bytes([0; 20]), 2);
        assert_eq!(publisher.on_store_done(phase, true), None);
        assert_eq!(publisher.on_store_done(phase, false), Some((Key::from_bytes([0; 20]), 1)));
        publisher.withdraw(&Key::from_bytes([2; 20]));
        let later = half + Duration::from_secs(10);
        assert_eq!(publisher.next_to_start(later), Some(Key::from_bytes([3; 20])));
    }

    #[test]
    fn republish_requeues_after_interval() {
        let now = crate::sim::epoch();
        let config = DhtConfig::default();
        let mut publisher = Publisher::new(&config);
        let key = Key::from_bytes([1; 20]);
        publisher.publish(now, key);
        assert_eq!(publisher.next_to_start(now), Some(key));
        publisher.finish(key, 20);
        publisher.schedule_due(now + config.republish_interval / 2);
        assert_eq!(publisher.poll_at(), None);
        let due = now + config.republish_interval;
        publisher.schedule_due(due);
        assert_eq!(publisher.next_to_start(due), Some(key));
        let small = Publisher::new(&DhtConfig { published_keys_max: 1, ..config });
        let mut small = small;
        assert!(small.publish(now, key));
        assert!(!small.publish(now, Key::from_bytes([2; 20])));
    }
}
