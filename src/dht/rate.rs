//! Per-source-IP token buckets, consulted before any other work on an incoming datagram.
//!
//! Memory is bounded by `rate_limited_sources_max`: once that many sources are tracked, new
//! sources share one overflow bucket until housekeeping forgets sources whose buckets have
//! refilled (a full bucket carries no information).

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::dht::config::DhtConfig;
use crate::throttle::Throttle;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate_per_s: u64,
    burst: u64,
    sources_max: usize,
    sources: BTreeMap<IpAddr, Throttle>,
    overflow: Option<Throttle>,
}

impl RateLimiter {
    pub(crate) fn new(config: &DhtConfig) -> Self {
        Self {
            rate_per_s: u64::from(config.source_messages_per_s),
            burst: u64::from(config.source_burst_messages),
            sources_max: config.rate_limited_sources_max,
            sources: BTreeMap::new(),
            overflow: None,
        }
    }

    /// Takes one message from `ip`'s bucket; `false` if it is empty (nothing is charged).
    pub(crate) fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let fresh = || Throttle::new(self.rate_per_s, self.burst, now);
        let bucket = if self.sources.contains_key(&ip) || self.sources.len() < self.sources_max {
            self.sources.entry(ip).or_insert_with(fresh)
        } else {
            self.overflow.get_or_insert_with(fresh)
        };
        bucket.try_take(now, 1)
    }

    /// Forgets sources whose buckets have refilled.
    pub(crate) fn purge(&mut self, now: Instant) {
        self.sources.retain(|_, b| !b.is_full(now));
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(sources_max: usize) -> RateLimiter {
        RateLimiter::new(&DhtConfig {
            source_messages_per_s: 10,
            source_burst_messages: 5,
            rate_limited_sources_max: sources_max,
            ..DhtConfig::default()
        })
    }

    #[test]
    fn burst_then_refill() {
        let now = crate::sim::epoch();
        let mut limiter = limiter(8);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!((0..10).filter(|_| limiter.allow(now, ip)).count(), 5);
        let later = now + Duration::from_millis(200);
        assert_eq!((0..10).filter(|_| limiter.allow(later, ip)).count(), 2);
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(limiter.allow(later, other), "sources are independent");
    }

    #[test]
    fn bounded_sources_share_overflow_and_purge() {
        let now = crate::sim::epoch();
        let mut limiter = limiter(2);
        let allowed =
            (1..=20u8).filter(|i| limiter.allow(now, IpAddr::from([10, 0, 1, *i]))).count();
        // Two tracked sources get one each; the other 18 share the 5-token overflow bucket.
        assert_eq!(allowed, 2 + 5);
        assert_eq!(limiter.tracked(), 2);
        limiter.purge(now + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 0);
    }
}
