//! `/metrics`: the node's counters in the Prometheus text exposition format (version
//! 0.0.4, <https://prometheus.io/docs/instrumenting/exposition_formats/>), taken live from
//! [`NodeStats`] at each scrape.
//!
//! Names follow Prometheus conventions: the `furymesh_` prefix, base units in the name
//! (`_bytes`, `_seconds`), `_total` on counters, labels for the dimension that splits a
//! total (`blame`, `direction`, `outcome`, `reason`, `shard`). The per-shard families
//! (`furymesh_shard_…{shard="N"}`) split the node totals of the same name; each scrape
//! takes the totals and the shards' counters in two round trips, so they can differ by
//! what happened in between. The process metrics use the standard
//! names every exporter uses (`process_resident_memory_bytes`, `process_cpu_seconds_total`)
//! so existing dashboards find them.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::node::{NodeActivity, NodeStats, SeedStats};

/// Upper bounds of the chunk-serve histogram's buckets, in seconds (`+Inf` is added): a
/// 256 KiB chunk leaves in tens of microseconds on loopback and in seconds behind a slow
/// link or an upload limit (pacing is part of serving).
const SERVE_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `Content-Type` of the exposition.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// A sample with labels (`[("blame", "peer")]`); values are integers or floats.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Integers print without a fraction; other values as Rust floats (which Prometheus
/// parses, including `NaN` and `+Inf`).
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A text exposition under construction.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &'static str, kind: &str, help: &str) -> Family<'_> {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        Family { out: &mut self.out, name }
    }

    fn counter(&mut self, name: &'static str, help: &str, value: u64) {
        self.family(name, "counter", help).sample(&[], value as f64);
    }

    fn gauge(&mut self, name: &'static str, help: &str, value: f64) {
        self.family(name, "gauge", help).sample(&[], value);
    }

    /// A histogram family from an hdrhistogram of microseconds: cumulative `_bucket`s at
    /// `bounds` (seconds) and `+Inf`, `_sum` (seconds, from the recorded values at the
    /// histogram's precision) and `_count`.
    fn histogram(&mut self, name: &'static str, help: &str, h: &Histogram<u64>, bounds: &[f64]) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} histogram");
        for b in bounds {
            let us = (b * 1e6) as u64;
            let n = h.count_between(0, us);
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{}\"}} {n}", number(*b));
        }
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
        let sum_us: f64 = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum();
        let _ = writeln!(self.out, "{name}_sum {}", number(sum_us / 1e6));
        let _ = writeln!(self.out, "{name}_count {}", h.len());
    }
}

/// Process figures read from `/proc/self`.
pub(super) struct ProcessFigures {
    pub(super) resident_bytes: u64,
    pub(super) cpu_seconds: f64,
    pub(super) start_unix: u64,
}

impl ProcessFigures {
    /// Reads RSS from `/proc/self/statm` (pages) and CPU time from `/proc/self/stat`.
    pub(super) fn read(start_unix: u64) -> Self {
        let page = rustix::param::page_size() as u64;
        let resident_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        Self {
            resident_bytes: resident_pages * page,
            cpu_seconds: crate::node::process_cpu_seconds(),
            start_unix,
        }
    }
}

/// A per-shard family: name, type, help, and the counter it reads.
type PerShard = (&'static str, &'static str, &'static str, fn(&SeedStats) -> u64);

/// The exposition of `s`, each shard's counters and the process figures.
pub(super) fn render(
    s: &NodeStats,
    shards: &[SeedStats],
    a: &NodeActivity,
    p: &ProcessFigures,
    catalog: &crate::node::CatalogCounts,
) -> String {
    let mut e = Exposition { out: String::with_capacity(8 * 1024) };
    let v = &s.serving;
    let per_shard: [PerShard; 7] = [
        (
            "furymesh_shard_served_payload_bytes_total",
            "counter",
            "Chunk payload bytes sent to peers, by shard.",
            |s| s.payload_bytes_from_map + s.payload_bytes_sealed,
        ),
        ("furymesh_shard_chunks_served_total", "counter", "Chunks sent to peers, by shard.", |s| {
            s.chunks_served
        }),
        (
            "furymesh_shard_requests_total",
            "counter",
            "Requests received from peers, by shard.",
            |s| s.requests,
        ),
        (
            "furymesh_shard_connections_accepted_total",
            "counter",
            "Incoming connections accepted, by shard.",
            |s| s.connections,
        ),
        (
            "furymesh_shard_connections_open",
            "gauge",
            "Incoming connections open now, by shard.",
            |s| s.connections_open,
        ),
        (
            "furymesh_shard_webrtc_connections_total",
            "counter",
            "Incoming WebRTC data channels that opened, by shard.",
            |s| s.webrtc_connections,
        ),
        (
            "furymesh_shard_browser_connections_total",
            "counter",
            "Of those, browsers' sessions (signaled over the HTTP gateway's share page), by shard.",
            |s| s.browser_connections,
        ),
    ];
    for (name, kind, help, value) in per_shard {
        let mut f = e.family(name, kind, help);
        for (i, s) in shards.iter().enumerate() {
            f.sample(&[("shard", &i.to_string())], value(s) as f64);
        }
    }
    e.gauge("furymesh_shards", "Shards (pinned executors) of the node.", s.shards as f64);
    e.gauge(
        "furymesh_files_served",
        "Files the node serves now (published files and partial downloads).",
        s.files_served as f64,
    );
    e.gauge(
        "furymesh_published_files",
        "Files published (collections not counted).",
        catalog.files as f64,
    );
    e.gauge("furymesh_published_collections", "Collections published.", catalog.collections as f64);
    e.gauge(
        "furymesh_published_files_changed",
        "Published files changed or missing on disk since publish: refused to peers and \
         withdrawn from the DHT until republished.",
        catalog.files_changed as f64,
    );
    e.counter(
        "furymesh_served_payload_bytes_total",
        "Chunk payload bytes sent to peers (from memory maps, plaintext or sealed).",
        v.payload_bytes_from_map + v.payload_bytes_sealed,
    );
    e.family(
        "furymesh_served_payload_by_encryption_bytes_total",
        "counter",
        "Chunk payload bytes sent to peers, by how they left: sealed (AES-256-GCM) or plaintext.",
    )
    .sample(&[("encryption", "on")], v.payload_bytes_sealed as f64)
    .sample(&[("encryption", "off")], v.payload_bytes_from_map as f64);
    e.counter("furymesh_chunks_served_total", "Chunks sent to peers.", v.chunks_served);
    e.counter("furymesh_requests_total", "Requests received from peers.", v.requests);
    e.counter("furymesh_manifests_served_total", "Manifests sent to peers.", v.manifests_served);
    e.counter(
        "furymesh_error_replies_total",
        "Error replies sent to peers (unknown file, bad range, ...).",
        v.error_replies,
    );
    e.counter(
        "furymesh_bad_frames_total",
        "Connections closed because the peer sent an undecodable or oversized frame.",
        v.bad_frames,
    );
    e.counter(
        "furymesh_records_rejected_total",
        "Connections closed because a sealed record failed authentication.",
        v.records_rejected,
    );
    e.counter(
        "furymesh_connections_accepted_total",
        "Incoming connections accepted.",
        v.connections,
    );
    e.counter(
        "furymesh_connections_refused_total",
        "Incoming connections closed at accept (over the per-shard limits).",
        v.connections_refused,
    );
    e.gauge(
        "furymesh_connections_open",
        "Incoming connections open now.",
        v.connections_open as f64,
    );
    let d = &s.downloading;
    e.family(
        "furymesh_handshake_failures_total",
        "counter",
        "Failed handshakes, by direction and by whose fault (peer or local).",
    )
    .sample(&[("direction", "incoming"), ("blame", "peer")], v.handshakes_failed_peer as f64)
    .sample(&[("direction", "incoming"), ("blame", "local")], v.handshakes_failed_local as f64)
    .sample(&[("direction", "outgoing"), ("blame", "peer")], d.handshakes_failed_peer as f64)
    .sample(&[("direction", "outgoing"), ("blame", "local")], d.handshakes_failed_local as f64);
    e.counter(
        "furymesh_chunk_verification_failures_total",
        "Downloaded chunks whose SHA-256 did not match the manifest.",
        d.chunks_corrupt,
    );
    e.counter(
        "furymesh_peers_banned_total",
        "Peers banned by downloads for sending corrupt chunks.",
        d.peers_banned,
    );
    e.counter(
        "furymesh_peers_stalled_total",
        "Peers given up on by downloads for making no progress.",
        d.peers_stalled,
    );
    e.counter(
        "furymesh_downloaded_bytes_total",
        "Payload bytes verified by finished downloads (added when each download ends).",
        d.bytes_verified,
    );
    e.counter("furymesh_downloads_started_total", "Downloads started.", d.started);
    e.family("furymesh_downloads_finished_total", "counter", "Downloads ended, by outcome.")
        .sample(&[("outcome", "completed")], d.completed as f64)
        .sample(&[("outcome", "failed")], d.failed as f64)
        .sample(&[("outcome", "cancelled")], d.cancelled as f64);
    e.gauge("furymesh_downloads_active", "Downloads running now.", s.downloads_active as f64);
    if let Some(h) = &v.dht {
        e.family("furymesh_dht_datagrams_total", "counter", "DHT datagrams, by direction.")
            .sample(&[("direction", "in")], h.datagrams_in as f64)
            .sample(&[("direction", "out")], h.datagrams_out as f64);
        e.family(
            "furymesh_dht_datagrams_dropped_total",
            "counter",
            "DHT datagrams dropped or not sent, by reason.",
        )
        .sample(&[("reason", "undecodable")], h.bad_datagrams as f64)
        .sample(&[("reason", "wrong_network")], h.wrong_network as f64)
        .sample(&[("reason", "send_error")], h.send_errors as f64);
        e.counter(
            "furymesh_dht_announcements_total",
            "Provider announcements this node accepted from others.",
            h.announcements,
        );
        e.family(
            "furymesh_dht_announcements_rejected_total",
            "counter",
            "Provider announcements dropped, by reason (invalid signature or certificate, or over the verification budget).",
        )
        .sample(&[("reason", "invalid")], h.announcements_rejected as f64)
        .sample(&[("reason", "throttled")], h.announcements_throttled as f64);
        e.counter(
            "furymesh_dht_contact_verify_pings_total",
            "Pings sent to verify a node before it may enter the routing table.",
            h.contacts_verify_pings,
        );
        e.counter(
            "furymesh_dht_contacts_evicted_total",
            "Contacts evicted from the routing table after failing to answer.",
            h.contacts_evicted,
        );
        e.gauge(
            "furymesh_dht_routing_table_contacts",
            "Contacts in the DHT routing table.",
            h.table_len as f64,
        );
        e.gauge(
            "furymesh_dht_provider_records",
            "Provider records this node stores for others.",
            h.provider_records as f64,
        );
        let mut f = e.family(
            "furymesh_dht_rpcs_total",
            "counter",
            "DHT requests, by direction (sent, or answered for others) and type.",
        );
        for (dir, c) in [("sent", &h.rpcs_sent), ("answered", &h.rpcs_answered)] {
            for (ty, n) in [
                ("ping", c.ping),
                ("find_node", c.find_node),
                ("get_providers", c.get_providers),
                ("announce_provider", c.announce_provider),
            ] {
                f.sample(&[("direction", dir), ("type", ty)], n as f64);
            }
        }
        e.counter(
            "furymesh_dht_rpc_failures_total",
            "DHT requests that got no answer after their resends.",
            h.rpcs_failed,
        );
        e.counter(
            "furymesh_dht_lookups_total",
            "DHT lookups started (joins, refreshes, announcements, queries).",
            h.lookups,
        );
        e.counter(
            "furymesh_dht_lookup_failures_total",
            "DHT lookups that ended with no node having answered.",
            h.lookups_failed,
        );
        e.gauge(
            "furymesh_dht_announcement_backlog",
            "Provided keys waiting in the paced announcement queue.",
            h.announcement_backlog as f64,
        );
    }
    {
        let mut f = e.family(
            "furymesh_incoming_handshake_failures_total",
            "counter",
            "Incoming handshakes that failed, by reason.",
        );
        // Always the common reasons, so a dashboard's series exist before the first one.
        for r in ["timeout", "closed", "wrong_network", "encryption_mismatch", "malformed"] {
            if !v.handshakes_failed_by_reason.contains_key(r) {
                f.sample(&[("reason", r)], 0.0);
            }
        }
        for (r, n) in &v.handshakes_failed_by_reason {
            f.sample(&[("reason", r)], *n as f64);
        }
    }
    e.histogram(
        "furymesh_chunk_serve_seconds",
        "Time to serve one chunk to a peer (read, seal, pace and write), in seconds.",
        &a.serve_latency_us,
        &SERVE_BUCKETS_SECONDS,
    );
    e.gauge(
        "furymesh_open_memory_maps",
        "Published files the shards have mapped now.",
        a.open_maps.iter().sum::<usize>() as f64,
    );
    {
        let mut f = e.family(
            "furymesh_shard_open_memory_maps",
            "gauge",
            "Published files a shard has mapped now, by shard.",
        );
        for (i, n) in a.open_maps.iter().enumerate() {
            f.sample(&[("shard", &i.to_string())], *n as f64);
        }
    }
    e.gauge(
        "process_resident_memory_bytes",
        "Resident set size of the process in bytes.",
        p.resident_bytes as f64,
    );
    e.family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time of the process in seconds.",
    )
    .sample(&[], p.cpu_seconds);
    e.gauge(
        "process_start_time_seconds",
        "Start time of the API (about the node's) since the Unix epoch in seconds.",
        p.start_unix as f64,
    );
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_labels_follow_the_text_format() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let activity = NodeActivity {
            connections: Vec::new(),
            files: Default::default(),
            serve_latency_us: Histogram::new(2).unwrap(),
            open_maps: vec![0],
        };
        let text = render(
            &NodeStats::default(),
            &[SeedStats::default()],
            &activity,
            &ProcessFigures::read(0),
            &crate::node::CatalogCounts {
                files: 2,
                files_bytes: 10,
                collections: 1,
                files_changed: 1,
            },
        );
        assert!(text.contains("\nfurymesh_published_files_changed 1\n"), "{text}");
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                // A histogram's samples carry suffixes on the family's name.
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|sfx| name.strip_suffix(sfx).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} sampled before its TYPE line");
            }
        }
        assert!(text.ends_with('\n'));
    }
}
