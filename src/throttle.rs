//! Rate limits, shared by the transfer path and the DHT (a neutral module so neither
//! imports the other): a token bucket in its GCRA form (one "theoretical arrival time" per
//! bucket), so a bucket is a single atomic word that every shard can charge without a lock.
//! Bandwidth limits charge bytes and wait (`reserve`); the DHT's per-IP limiter and its
//! verification budget charge messages and drop what does not fit (`try_take`). Sans-IO:
//! the caller passes `now`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A byte-rate limit shared by any number of threads.
#[derive(Debug)]
pub struct Throttle {
    epoch: Instant,
    /// Nanoseconds one byte costs, in units of 2^-16 ns (fixed point keeps high rates exact).
    cost_per_byte: u64,
    /// How far ahead of `now` the schedule may run before callers wait: the burst.
    burst_ns: u64,
    burst_bytes: u64,
    /// Theoretical arrival time of the next byte, in ns since `epoch`.
    tat_ns: AtomicU64,
}

const FRACTION_BITS: u32 = 16;

impl Throttle {
    /// A limit of `bytes_per_sec` that lets `burst_bytes` through at once. `epoch` is any
    /// instant at or before the first call.
    pub fn new(bytes_per_sec: u64, burst_bytes: u64, epoch: Instant) -> Self {
        let rate = bytes_per_sec.max(1);
        let cost_per_byte = ((1_000_000_000u128 << FRACTION_BITS) / rate as u128) as u64;
        let burst_ns = ((burst_bytes as u128 * cost_per_byte as u128) >> FRACTION_BITS) as u64;
        Self {
            epoch,
            cost_per_byte: cost_per_byte.max(1),
            burst_ns,
            burst_bytes,
            tat_ns: AtomicU64::new(0),
        }
    }

    /// The burst given to [`Throttle::new`], in bytes (or units).
    pub fn burst_bytes(&self) -> u64 {
        self.burst_bytes
    }

    /// Charges `bytes` at `now` and returns how long the caller must wait before sending
    /// them so that the long-run rate stays at the limit.
    pub fn reserve(&self, now: Instant, bytes: u64) -> Duration {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let cost = ((bytes as u128 * self.cost_per_byte as u128) >> FRACTION_BITS) as u64;
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_ns);
            let next = start.saturating_add(cost);
            match self.tat_ns.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Duration::from_nanos(next.saturating_sub(now_ns + self.burst_ns)),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Whether everything charged has drained by `now`: the bucket holds a full burst, so
    /// forgetting it loses nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.tat_ns.load(Ordering::Relaxed) <= now_ns
    }

    /// Charges `units` at `now` only if they fit in the burst without waiting; `false`
    /// (and nothing charged) otherwise. For budgets that drop work instead of delaying it:
    /// rejected attempts cost nothing, so a flood cannot push the schedule into the future.
    pub fn try_take(&self, now: Instant, units: u64) -> bool {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let cost = ((units as u128 * self.cost_per_byte as u128) >> FRACTION_BITS) as u64;
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns).saturating_add(cost);
            if next > now_ns.saturating_add(self.burst_ns) {
                return false;
            }
            match self.tat_ns.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_take_admits_the_burst_then_the_rate_and_never_charges_a_refusal() {
        let t0 = crate::sim::epoch();
        let t = Throttle::new(500, 500, t0);
        assert_eq!((0..1500).filter(|_| t.try_take(t0, 1)).count(), 500);
        // A tenth of a second later, a tenth of the rate is back, despite the refusals.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..500).filter(|_| t.try_take(t1, 1)).count(), 50);
        // Idle for a minute: still one burst's worth.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..1500).filter(|_| t.try_take(t2, 1)).count(), 500);
    }

    /// Simulates senders that sleep exactly as told and counts what got through in 10 s.
    fn bytes_sent_in_10s(rate: u64, burst: u64, chunk: u64, senders: usize) -> u64 {
        let epoch = crate::sim::epoch();
        let t = Throttle::new(rate, burst, epoch);
        let horizon = Duration::from_secs(10);
        let mut clocks = vec![Duration::ZERO; senders];
        let mut sent = 0;
        loop {
            // The sender whose clock is earliest goes next.
            let (i, at) = clocks.iter().copied().enumerate().min_by_key(|&(_, c)| c).unwrap();
            if at >= horizon {
                return sent;
            }
            let wait = t.reserve(epoch + at, chunk);
            if at + wait < horizon {
                sent += chunk;
            }
            clocks[i] = at + wait + Duration::from_micros(1);
        }
    }

    #[test]
    fn long_run_rate_is_within_five_percent_over_ten_seconds() {
        for (rate, chunk, senders) in
            [(8 << 20, 512 << 10, 1), (100_000, 16 << 10, 3), (1 << 30, 1 << 20, 4)]
        {
            let burst = 2 * chunk;
            let sent = bytes_sent_in_10s(rate, burst, chunk, senders);
            let want = rate * 10;
            let err = (sent as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.05, "rate {rate}, chunk {chunk}: sent {sent}, want {want}");
            // Never more than the rate plus one burst.
            assert!(sent <= want + burst + chunk, "rate {rate}: sent {sent}");
        }
    }

    #[test]
    fn burst_passes_at_once_then_waits() {
        let epoch = crate::sim::epoch();
        let t = Throttle::new(1000, 3000, epoch);
        assert_eq!(t.reserve(epoch, 1000), Duration::ZERO);
        assert_eq!(t.reserve(epoch, 1000), Duration::ZERO);
        assert_eq!(t.reserve(epoch, 1000), Duration::ZERO);
        let w = t.reserve(epoch, 1000);
        assert!(w >= Duration::from_millis(999) && w <= Duration::from_millis(1001), "{w:?}");
        // Idle time refills the bucket, but never beyond the burst.
        let later = epoch + Duration::from_secs(100);
        assert_eq!(t.reserve(later, 3000), Duration::ZERO);
        assert!(t.reserve(later, 1000) > Duration::ZERO);
    }
}
