//! Per-peer state of the swarm scheduler: what the peer has, what we asked it for, and what
//! we measured about it.
//!
//! Measurements (why these):
//! - **Throughput** is a delivery rate, not bytes over request latency: a sample is the bytes
//!   verified since the last sample divided by the time since the later of that sample and
//!   the request's send time. With a pipeline, per-request latency includes queueing behind
//!   earlier requests and would understate the rate by the window; the inter-delivery time
//!   does not. Samples shorter than [`SAMPLE_INTERVAL_MIN`] accumulate (several chunks
//!   handled with one `now`).
//! - **RTT** comes from requests sent to an idle peer (nothing queued ahead): request to
//!   verified chunk, which is exactly the time one request needs, so `throughput × rtt` is
//!   the data that must be in flight to keep the peer busy. Any later sample below the
//!   estimate pulls it down at once (a queued request cannot be faster than the path).
//! - **Window** = `gain × throughput × rtt / chunk_size`, clamped. The gain (default 2, as
//!   BBR's cwnd gain) matters: a window of exactly the measured BDP can never discover more
//!   bandwidth, because the window itself caps the measured throughput.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::transfer::Bitfield;

/// Weight of a new sample in the throughput and RTT averages: a quarter, so a handful of
/// chunks adapts the estimate and one outlier moves it by 25% at most.
const EWMA_WEIGHT: f64 = 0.25;
/// Shortest interval a throughput sample may span; shorter spans accumulate.
const SAMPLE_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// One outstanding request to a peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request {
    pub(super) sent_at: Instant,
    /// Requests already in flight at this peer when this one was sent.
    pub(super) ahead: u32,
}

#[derive(Debug)]
pub(super) struct Peer {
    pub(super) connected: bool,
    pub(super) banned: bool,
    /// What the peer has; empty (length 0) while disconnected or banned.
    pub(super) has: Bitfield,
    /// Chunks the peer has that we lack (kept in step with `has` and our bitfield).
    pub(super) useful: u32,
    pub(super) inflight: BTreeMap<u32, Request>,
    pub(super) window: u32,
    /// Last time the peer answered (or got its first request after being idle); a peer with
    /// requests in flight and nothing since `stall_timeout` is stalled.
    pub(super) progress_at: Option<Instant>,
    /// While set and in the future, the peer gets no requests (after a stall).
    pub(super) rest_until: Option<Instant>,
    /// The scheduler generation at which a poll found nothing for this peer.
    pub(super) starved_at: Option<u64>,
    last_sample_at: Option<Instant>,
    unsampled_bytes: u64,
    /// Bytes per second.
    pub(super) throughput: Option<f64>,
    /// Seconds.
    pub(super) rtt: Option<f64>,
    pub(super) bytes_verified: u64,
    pub(super) chunks_verified: u64,
    pub(super) corrupt: u32,
    pub(super) refused: u32,
    pub(super) stalls: u32,
}

impl Peer {
    pub(super) fn new(chunk_count: u32, window_min: u32) -> Self {
        Self {
            connected: true,
            banned: false,
            has: Bitfield::new(chunk_count),
            useful: 0,
            inflight: BTreeMap::new(),
            window: window_min,
            progress_at: None,
            rest_until: None,
            starved_at: None,
            last_sample_at: None,
            unsampled_bytes: 0,
            throughput: None,
            rtt: None,
            bytes_verified: 0,
            chunks_verified: 0,
            corrupt: 0,
            refused: 0,
            stalls: 0,
        }
    }

    pub(super) fn is_resting(&self, now: Instant) -> bool {
        self.rest_until.is_some_and(|t| now < t)
    }

    /// Connected, not banned, not resting after a stall.
    pub(super) fn is_usable(&self, now: Instant) -> bool {
        self.connected && !self.banned && !self.is_resting(now)
    }

    /// Records a request sent now.
    pub(super) fn add_request(&mut self, now: Instant, chunk: u32) {
        if self.inflight.is_empty() {
            self.progress_at = Some(now);
        }
        let ahead = self.inflight.len() as u32;
        self.inflight.insert(chunk, Request { sent_at: now, ahead });
    }

    /// Good data arrived: updates counters and, if it answered `req`, the estimates and the
    /// window.
    pub(super) fn record_delivery(
        &mut self,
        now: Instant,
        req: Option<Request>,
        bytes: u32,
        window: WindowRule,
    ) {
        self.bytes_verified += u64::from(bytes);
        self.chunks_verified += 1;
        self.progress_at = Some(now);
        self.rest_until = None;
        let Some(req) = req else { return };

        let elapsed = now.saturating_duration_since(req.sent_at).as_secs_f64();
        if req.ahead == 0 {
            self.rtt = Some(ewma(self.rtt, elapsed));
        } else if self.rtt.is_none_or(|r| elapsed < r) {
            self.rtt = Some(elapsed);
        }

        self.unsampled_bytes += u64::from(bytes);
        let start = self.last_sample_at.map_or(req.sent_at, |t| t.max(req.sent_at));
        let span = now.saturating_duration_since(start);
        if span >= SAMPLE_INTERVAL_MIN {
            let rate = self.unsampled_bytes as f64 / span.as_secs_f64();
            self.throughput = Some(ewma(self.throughput, rate));
            self.unsampled_bytes = 0;
            self.last_sample_at = Some(now);
        }
        if let (Some(tp), Some(rtt)) = (self.throughput, self.rtt) {
            self.window = window.size(tp, rtt);
        }
    }

    /// Ranking score: throughput (or `prior` before the first sample) divided by a penalty
    /// that grows with corrupt chunks (×2 each) and stalls (×1 each).
    pub(super) fn score(&self, prior: f64) -> f64 {
        let tp = self.throughput.unwrap_or(prior);
        tp / (1.0 + 2.0 * f64::from(self.corrupt) + f64::from(self.stalls))
    }
}

/// How a window follows from the estimates.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowRule {
    pub(super) chunk_bytes: u32,
    pub(super) gain: f64,
    pub(super) min: u32,
    pub(super) max: u32,
}

impl WindowRule {
    pub(super) fn size(self, throughput: f64, rtt: f64) -> u32 {
        let w = (self.gain * throughput * rtt / f64::from(self.chunk_bytes)).ceil();
        // `as` saturates on overflow and maps NaN to 0; the clamp does the rest.
        (w as u32).clamp(self.min, self.max)
    }
}

fn ewma(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(o) => o + EWMA_WEIGHT * (sample - o),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: WindowRule = WindowRule { chunk_bytes: 1000, gain: 2.0, min: 2, max: 64 };

    #[test]
    fn window_rule_clamps() {
        assert_eq!(RULE.size(0.0, 0.0), 2);
        assert_eq!(RULE.size(10_000.0, 0.5), 10);
        assert_eq!(RULE.size(1e12, 1.0), 64);
        assert_eq!(RULE.size(f64::NAN, 1.0), 2);
    }

    #[test]
    fn idle_request_sets_rtt_and_pipelined_ones_measure_rate() {
        let t0 = crate::sim::epoch();
        let ms = Duration::from_millis;
        let mut p = Peer::new(10, 2);
        p.add_request(t0, 0);
        p.add_request(t0, 1);
        let req = p.inflight.remove(&0);
        p.record_delivery(t0 + ms(100), req, 1000, RULE);
        assert_eq!(p.rtt, Some(0.1));
        assert_eq!(p.throughput, Some(10_000.0));
        // The second chunk lands 10 ms later: 1000 B / 10 ms = 100 kB/s, averaged in.
        let req = p.inflight.remove(&1);
        p.record_delivery(t0 + ms(110), req, 1000, RULE);
        assert_eq!(p.rtt, Some(0.1), "a queued request does not raise the RTT");
        assert_eq!(p.throughput, Some(10_000.0 + 0.25 * 90_000.0));
        assert_eq!(p.chunks_verified, 2);
        assert!(p.window > 2);
    }
}
