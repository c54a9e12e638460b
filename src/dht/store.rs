//! Provider records this node stores for others, with expiry and three caps: providers per
//! key, keys per announcing node, records in total. When a cap is reached, existing records
//! are kept (and can be refreshed by their provider) and newcomers are refused, so a flood
//! of fresh ids cannot push out established providers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::dht::config::DhtConfig;
use crate::dht::id::{Contact, Key, NodeId};

/// Result of [`ProviderStore::put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Put {
    Stored,
    Refreshed,
    KeyFull,
    ProviderFull,
    StoreFull,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    provider: Contact,
    expires_at: Instant,
}

#[derive(Debug)]
pub(crate) struct ProviderStore {
    providers_per_key_max: usize,
    keys_per_provider_max: usize,
    records_max: usize,
    ttl: Duration,
    records: BTreeMap<Key, Vec<Record>>,
    keys_per_provider: BTreeMap<NodeId, usize>,
    len: usize,
}

impl ProviderStore {
    pub(crate) fn new(config: &DhtConfig) -> Self {
        Self {
            providers_per_key_max: config.providers_per_key_max,
            keys_per_provider_max: config.keys_per_provider_max,
            records_max: config.provider_records_max,
            ttl: config.provider_ttl,
            records: BTreeMap::new(),
            keys_per_provider: BTreeMap::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores or refreshes `provider` for `key` until `now + provider_ttl`.
    pub(crate) fn put(&mut self, now: Instant, key: Key, provider: Contact) -> Put {
        let expires_at = now + self.ttl;
        let list = self.records.get(&key);
        if let Some(record) = list.and_then(|l| l.iter().position(|r| r.provider.id == provider.id))
        {
            let records = self.records.entry(key).or_default();
            records[record] = Record { provider, expires_at };
            return Put::Refreshed;
        }
        if list.is_some_and(|l| l.len() >= self.providers_per_key_max) {
            return Put::KeyFull;
        }
        if self.keys_per_provider.get(&provider.id).copied().unwrap_or(0)
            >= self.keys_per_provider_max
        {
            return Put::ProviderFull;
        }
        if self.len >= self.records_max {
            return Put::StoreFull;
        }
        self.records.entry(key).or_default().push(Record { provider, expires_at });
        *self.keys_per_provider.entry(provider.id).or_default() += 1;
        self.len += 1;
        Put::Stored
    }

    /// Up to `n` unexpired providers of `key`, oldest record first.
    pub(crate) fn providers(&self, now: Instant, key: &Key, n: usize) -> Vec<Contact> {
        self.records.get(key).map_or_else(Vec::new, |records| {
            records.iter().filter(|r| r.expires_at > now).take(n).map(|r| r.provider).collect()
        })
    }

    /// Drops expired records.
    pub(crate) fn expire(&mut self, now: Instant) {
        let keys_per_provider = &mut self.keys_per_provider;
        let mut removed = 0;
        self.records.retain(|_, records| {
            records.retain(|r| {
                let keep = r.expires_at > now;
                if !keep {
                    removed += 1;
                    if let Some(count) = keys_per_provider.get_mut(&r.provider.id) {
                        *count -= 1;
                        if *count == 0 {
                            keys_per_provider.remove(&r.provider.id);
                        }
                    }
                }
                keep
            });
            !records.is_empty()
        });
        self.len -= removed;
    }

    /// Panics if the counters disagree with the records or a cap is exceeded.
    pub(crate) fn assert_invariants(&self) {
        let mut per_provider: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut total = 0;
        for records in self.records.values() {
            assert!(!records.is_empty());
            assert!(records.len() <= self.providers_per_key_max);
            for record in records {
                *per_provider.entry(record.provider.id).or_default() += 1;
                total += 1;
            }
        }
        assert_eq!(total, self.len);
        assert!(self.len <= self.records_max);
        assert_eq!(per_provider, self.keys_per_provider);
        assert!(per_provider.values().all(|&n| n <= self.keys_per_provider_max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(n: u8) -> Contact {
        Contact {
            id: NodeId::from_bytes([n; 20]),
            addr: format!("10.0.0.{n}:4000").parse().expect("addr"),
        }
    }

    #[test]
    fn caps_keep_existing_records() {
        let now = crate::sim::epoch();
        let mut store = ProviderStore::new(&DhtConfig {
            providers_per_key_max: 2,
            keys_per_provider_max: 2,
            provider_records_max: 3,
            ..DhtConfig::default()
        });
        let (k1, k2, k3) =
            (Key::from_bytes([1; 20]), Key::from_bytes([2; 20]), Key::from_bytes([3; 20]));
        assert_eq!(store.put(now, k1, provider(1)), Put::Stored);
        assert_eq!(store.put(now, k1, provider(2)), Put::Stored);
        assert_eq!(store.put(now, k1, provider(3)), Put::KeyFull);
        assert_eq!(store.put(now, k1, provider(1)), Put::Refreshed);
        assert_eq!(store.put(now, k2, provider(1)), Put::Stored);
        assert_eq!(store.put(now, k3, provider(1)), Put::ProviderFull);
        assert_eq!(store.put(now, k3, provider(4)), Put::StoreFull);
        assert_eq!(store.providers(now, &k1, 10), vec![provider(1), provider(2)]);
        assert_eq!(store.providers(now, &k1, 1), vec![provider(1)]);
        store.assert_invariants();
    }

    #[test]
    fn records_expire_after_ttl() {
        let now = crate::sim::epoch();
        let config = DhtConfig::default();
        let mut store = ProviderStore::new(&config);
        let key = Key::from_bytes([1; 20]);
        store.put(now, key, provider(1));
        store.put(now + Duration::from_secs(10), key, provider(2));
        let expiry = now + config.provider_ttl;
        assert_eq!(store.providers(expiry, &key, 10), vec![provider(2)]);
        store.expire(expiry);
        assert_eq!(store.len(), 1);
        store.expire(expiry + Duration::from_secs(10));
        assert_eq!(store.len(), 0);
        store.assert_invariants();
    }
}
