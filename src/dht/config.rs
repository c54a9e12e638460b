//! Every tunable of the DHT core, with its unit in the name and its default documented once.

use std::time::Duration;

use crate::dht::message::CONTACTS_PER_MESSAGE_MAX;

/// Tunables of [`crate::dht::Dht`]. `Default` gives the production values; see each field.
#[derive(Clone, Debug, PartialEq)]
pub struct DhtConfig {
    /// Bucket size and replication factor `k`: contacts per k-bucket, contacts returned per
    /// `Nodes` reply, nodes a lookup converges on, nodes an announcement is stored at.
    /// Default 20 (Kademlia). At most [`CONTACTS_PER_MESSAGE_MAX`].
    pub k: usize,
    /// Lookup parallelism α: requests a lookup keeps in flight. Default 3.
    pub alpha: usize,
    /// Replacement candidates kept per full bucket while its least-recently-seen contact is
    /// pinged. Default 8.
    pub replacements_per_bucket_max: usize,
    /// Routing-table entries allowed per IP address, table-wide. Default 2 (a few nodes
    /// behind one NAT). Caps how much of a table one host can occupy (eclipse resistance,
    /// as in libtorrent's `restrict_routing_ips`). Loopback tests, where every node is
    /// 127.0.0.1, must raise this and `per_subnet_max` (see [`Self::for_loopback`]).
    pub per_ip_max: usize,
    /// Routing-table entries allowed per /24 (IPv4) or /64 (IPv6) subnet, table-wide.
    /// Default 8: one provider or one rented subnet cannot fill a table.
    pub per_subnet_max: usize,
    /// Time after which an unanswered request is resent once, and after the resend, declared
    /// failed. Default 1 s (well above one round trip on the Internet).
    pub rpc_timeout: Duration,
    /// Resends of a request before it is declared failed. Default 1.
    pub rpc_retries_max: u8,
    /// Requests awaiting a reply, all purposes together. Further requests wait. Default 512.
    pub rpcs_inflight_max: usize,
    /// Contact checks in flight: pings that verify a newcomer (a node that sent us a
    /// request enters the table only once it answers a ping from its address), and pings
    /// of contacts silent for `contact_recheck_after`. Each kind has this bound; newcomers
    /// beyond it are not pinged (they get in by answering one of our lookups later).
    /// Default 64.
    pub contact_checks_inflight_max: usize,
    /// A table contact that has not answered this node for this long is *questionable*
    /// (BEP 5): it is pinged at the next maintenance, and if the ping fails (after its
    /// resend) it is evicted and the newest replacement promoted. Bounds how long a dead
    /// contact is handed out to others. A newcomer to a full bucket is checked only when
    /// the bucket's least-recently-seen contact is questionable. Default 15 min (BEP 5).
    pub contact_recheck_after: Duration,
    /// Concurrent lookups (app, bootstrap, refresh and announce together); a command beyond
    /// it is rejected with [`crate::dht::Rejection::LookupsFull`]. Default 32.
    pub lookups_inflight_max: usize,
    /// Candidates a lookup remembers, closest first. Default 80 (4 k).
    pub lookup_candidates_max: usize,
    /// Places among a lookup's k closest candidates that contacts from one /24 (IPv4) or
    /// /64 (IPv6) subnet may take; the next closest from other subnets take the rest.
    /// Default 2. An attacker's Sybils from a few rented subnets, all answering lookups
    /// with each other, then fill at most a few places of the k a lookup queries and
    /// converges on, so it still reaches the honest nodes near the key (BEP 42's reasoning
    /// about IP diversity, applied to the lookup's shortlist; measured in
    /// `tests/sim.rs`, 20% Sybils from 3 subnets). Loopback tests raise it.
    pub lookup_per_subnet_max: usize,
    /// A provider lookup stops early once it has this many distinct providers. Default 16.
    pub lookup_providers_wanted: usize,
    /// A bucket without activity for this long is refreshed with a lookup for a random id in
    /// its range. Default 15 min (BEP 5).
    pub bucket_refresh_interval: Duration,
    /// Refresh lookups running at once (the next starts when one finishes). Default 2.
    pub refresh_lookups_inflight_max: usize,
    /// Period of housekeeping: provider-record expiry, republish scheduling, bucket refresh
    /// checks, rate-limiter cleanup. Default 60 s.
    pub maintenance_interval: Duration,
    /// Lifetime of a stored provider record. Default 4 h: a seed that goes away stops being
    /// handed out within hours, while a republish every 2 h keeps live records alive with
    /// one missed republish of slack.
    pub provider_ttl: Duration,
    /// How often this node re-announces each key it provides. Default 2 h. Must leave room
    /// for the announce queue to drain: `republish_interval + published_keys_max /
    /// announces_per_s` should stay below `provider_ttl`.
    pub republish_interval: Duration,
    /// Announce lookups started per second (pacing of the announce queue). Default 10: a node
    /// with 10,000 files re-announces all of them in about 17 minutes.
    pub announces_per_s: u32,
    /// Announcements (lookup plus stores) in progress at once. Default 4.
    pub announces_inflight_max: usize,
    /// Keys this node announces and republishes. Default 65,536.
    pub published_keys_max: usize,
    /// Providers stored per key; when full, existing records are kept (and refreshed) and
    /// newcomers are rejected. Default 32.
    pub providers_per_key_max: usize,
    /// Keys stored per announcing node id. Default 4,096: enough for a seed with many files
    /// in a small network, small enough that one node cannot fill the store.
    pub keys_per_provider_max: usize,
    /// Provider records stored in total. Default 65,536 (a few MiB).
    pub provider_records_max: usize,
    /// Datagrams per second accepted from one source IP (token refill rate). Default 100.
    /// Loopback tests raise it.
    pub source_messages_per_s: u32,
    /// Burst of datagrams accepted from one source IP (token bucket depth). Default 200.
    pub source_burst_messages: u32,
    /// Source IPs tracked by the rate limiter; sources beyond it share one bucket.
    /// Default 4,096.
    pub rate_limited_sources_max: usize,
    /// Outgoing datagrams queued for [`crate::dht::Dht::poll_transmit`]; beyond it, replies are
    /// dropped and counted. Default 1,024.
    pub transmits_queued_max: usize,
    /// Events queued for [`crate::dht::Dht::poll_event`]; beyond it, misbehaviour events are
    /// dropped and counted (lookup results are bounded by `lookups_inflight_max`).
    /// Default 1,024.
    pub events_queued_max: usize,
    /// A client-only node: it queries but is never added to others' routing tables (it
    /// marks its messages read-only). For `get` and the operator tools.
    pub read_only: bool,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            replacements_per_bucket_max: 8,
            per_ip_max: 2,
            per_subnet_max: 8,
            rpc_timeout: Duration::from_secs(1),
            rpc_retries_max: 1,
            rpcs_inflight_max: 512,
            contact_checks_inflight_max: 64,
            contact_recheck_after: Duration::from_secs(15 * 60),
            lookups_inflight_max: 32,
            lookup_candidates_max: 80,
            lookup_per_subnet_max: 2,
            lookup_providers_wanted: 16,
            bucket_refresh_interval: Duration::from_secs(15 * 60),
            refresh_lookups_inflight_max: 2,
            maintenance_interval: Duration::from_secs(60),
            provider_ttl: Duration::from_secs(4 * 3600),
            republish_interval: Duration::from_secs(2 * 3600),
            announces_per_s: 10,
            announces_inflight_max: 4,
            published_keys_max: 65_536,
            providers_per_key_max: 32,
            keys_per_provider_max: 4_096,
            provider_records_max: 65_536,
            source_messages_per_s: 100,
            source_burst_messages: 200,
            rate_limited_sources_max: 4_096,
            transmits_queued_max: 1_024,
            events_queued_max: 1_024,
            read_only: false,
        }
    }
}

/// A [`DhtConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtConfigError {
    /// A bound is zero or exceeds what a message can carry.
    #[error("{field} = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// Configured value.
        value: usize,
        /// Smallest allowed value.
        min: usize,
        /// Largest allowed value.
        max: usize,
    },
    /// Records would expire before the owner republishes them.
    #[error("republish_interval must be shorter than provider_ttl")]
    RepublishAfterExpiry,
}

impl DhtConfig {
    /// Raises the per-IP, per-subnet (table and lookup) and rate limits so that many nodes sharing 127.0.0.1
    /// can form a network (loopback and single-host tests only).
    pub fn for_loopback(self) -> Self {
        Self {
            per_ip_max: usize::MAX,
            per_subnet_max: usize::MAX,
            lookup_per_subnet_max: usize::MAX,
            source_messages_per_s: 1_000_000,
            source_burst_messages: 1_000_000,
            ..self
        }
    }

    /// Checks the bounds [`crate::dht::Dht::new`] relies on.
    pub fn validate(&self) -> Result<(), DhtConfigError> {
        let ranges = [
            ("k", self.k, 1, CONTACTS_PER_MESSAGE_MAX),
            ("alpha", self.alpha, 1, 64),
            ("per_ip_max", self.per_ip_max, 1, usize::MAX),
            ("per_subnet_max", self.per_subnet_max, 1, usize::MAX),
            ("rpcs_inflight_max", self.rpcs_inflight_max, 1, usize::MAX),
            ("contact_checks_inflight_max", self.contact_checks_inflight_max, 1, usize::MAX),
            ("lookups_inflight_max", self.lookups_inflight_max, 1, usize::MAX),
            ("lookup_candidates_max", self.lookup_candidates_max, self.k, usize::MAX),
            ("lookup_per_subnet_max", self.lookup_per_subnet_max, 1, usize::MAX),
            ("lookup_providers_wanted", self.lookup_providers_wanted, 1, usize::MAX),
            ("refresh_lookups_inflight_max", self.refresh_lookups_inflight_max, 1, usize::MAX),
            ("announces_per_s", self.announces_per_s as usize, 1, usize::MAX),
            ("announces_inflight_max", self.announces_inflight_max, 1, usize::MAX),
            ("providers_per_key_max", self.providers_per_key_max, 1, usize::MAX),
            ("keys_per_provider_max", self.keys_per_provider_max, 1, usize::MAX),
            ("provider_records_max", self.provider_records_max, 1, usize::MAX),
            ("published_keys_max", self.published_keys_max, 1, usize::MAX),
            ("source_messages_per_s", self.source_messages_per_s as usize, 1, usize::MAX),
            ("source_burst_messages", self.source_burst_messages as usize, 1, usize::MAX),
            ("rate_limited_sources_max", self.rate_limited_sources_max, 1, usize::MAX),
        ];
        for (field, value, min, max) in ranges {
            if value < min || value > max {
                return Err(DhtConfigError::OutOfRange { field, value, min, max });
            }
        }
        if self.republish_interval >= self.provider_ttl {
            return Err(DhtConfigError::RepublishAfterExpiry);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_loopback_raises_caps() {
        assert_eq!(DhtConfig::default().validate(), Ok(()));
        let loopback = DhtConfig::default().for_loopback();
        assert_eq!(loopback.validate(), Ok(()));
        assert_eq!(loopback.per_ip_max, usize::MAX);
        assert_eq!(loopback.k, 20);
    }

    #[test]
    fn validate_rejects_oversized_k_and_late_republish() {
        let config = DhtConfig { k: CONTACTS_PER_MESSAGE_MAX + 1, ..DhtConfig::default() };
        assert!(matches!(config.validate(), Err(DhtConfigError::OutOfRange { field: "k", .. })));
        let config =
            DhtConfig { republish_interval: Duration::from_secs(5 * 3600), ..DhtConfig::default() };
        assert_eq!(config.validate(), Err(DhtConfigError::RepublishAfterExpiry));
    }
}
