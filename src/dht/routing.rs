//! The routing table: 160 k-buckets indexed by the number of leading zero bits of a contact's
//! XOR distance to the local id, with per-IP and per-subnet caps.
//!
//! Eviction follows Kademlia: a full bucket never drops its least-recently-seen (LRS) contact
//! because a newcomer showed up. The newcomer waits in the bucket's replacement cache while
//! the caller pings the LRS contact ([`Insertion::Full`]); only if that ping fails does the
//! caller [`RoutingTable::remove`] it, which promotes the newest replacement.
//!
//! The table does not decide who is genuine: the engine inserts only contacts that answered
//! one of its requests from their own address, and asks [`RoutingTable::admission`] first
//! whether a newcomer is worth that check. Each entry remembers when it last answered
//! ([`RoutingTable::silent_since`] lists those to ping again), so a contact that dies is
//! found and evicted even if this node never queries it.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::dht::config::DhtConfig;
use crate::dht::id::{Contact, NodeId, ID_BITS};

/// What [`RoutingTable::insert`] did with a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// Stored as the most-recently-seen entry of its bucket.
    Added,
    /// Already stored; moved to the most-recently-seen end.
    Refreshed,
    /// The bucket is full: the contact waits as a replacement candidate. The caller should
    /// ping `lrs` and [`RoutingTable::remove`] it if the ping fails.
    Full {
        /// The bucket's least-recently-seen contact.
        lrs: Contact,
    },
    /// Not stored.
    Rejected(TableRejection),
}

/// Why a contact was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableRejection {
    /// The contact has the local node's id.
    LocalId,
    /// The id is stored under another address. The stored address wins until it fails, so
    /// a spoofed message cannot move a contact.
    AddrChanged,
    /// The address is stored under another id (a restarted node gets in once the old entry
    /// fails).
    AddrTaken,
    /// The table already holds `per_ip_max` entries with this IP.
    IpCap,
    /// The table already holds `per_subnet_max` entries in this /24 or /64.
    SubnetCap,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Least-recently-seen first.
    entries: Vec<Contact>,
    /// When each entry of `entries` (same index) was last heard from.
    seen_at: Vec<Instant>,
    /// Oldest first, with the time each was heard from; the newest is promoted first.
    replacements: Vec<(Contact, Instant)>,
    /// Last time a contact of this bucket was added or heard from, or the bucket refreshed.
    active_at: Option<Instant>,
}

/// Kademlia k-buckets around a local id.
#[derive(Debug)]
pub struct RoutingTable {
    local: NodeId,
    k: usize,
    replacements_max: usize,
    per_ip_max: usize,
    per_subnet_max: usize,
    buckets: Vec<Bucket>,
    ip_counts: BTreeMap<IpAddr, usize>,
    subnet_counts: BTreeMap<IpAddr, usize>,
    /// Every stored contact by address (so its size is the table's length).
    addrs: BTreeMap<SocketAddr, NodeId>,
}

/// Number of buckets: one per possible count of leading zero bits of a non-zero distance.
pub const BUCKETS: usize = ID_BITS;

impl RoutingTable {
    /// An empty table for `local`, bounded by `config.k`, `replacements_per_bucket_max`,
    /// `per_ip_max` and `per_subnet_max`.
    pub fn new(local: NodeId, config: &DhtConfig) -> Self {
        Self {
            local,
            k: config.k,
            replacements_max: config.replacements_per_bucket_max,
            per_ip_max: config.per_ip_max,
            per_subnet_max: config.per_subnet_max,
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            ip_counts: BTreeMap::new(),
            subnet_counts: BTreeMap::new(),
            addrs: BTreeMap::new(),
        }
    }

    /// Number of stored contacts.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether no contact is stored.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Whether `contact` is stored (same id and address).
    pub fn contains(&self, contact: &Contact) -> bool {
        self.addrs.get(&contact.addr) == Some(&contact.id)
    }

    /// The stored contact with `id`, if any (its address may differ from a claim's).
    pub fn get(&self, id: &NodeId) -> Option<Contact> {
        let index = self.bucket_index(id)?;
        self.buckets[index].entries.iter().find(|c| c.id == *id).copied()
    }

    /// What [`Self::insert`] would do with a contact not stored yet, without storing it:
    /// `Ok` if it would be added or wait as a replacement, else why it would be refused.
    /// The engine asks before spending a verification ping on a newcomer.
    pub fn admission(&self, contact: &Contact) -> Result<(), TableRejection> {
        if self.bucket_index(&contact.id).is_none() {
            return Err(TableRejection::LocalId);
        }
        if self.get(&contact.id).is_some_and(|stored| stored.addr != contact.addr) {
            return Err(TableRejection::AddrChanged);
        }
        if self.contains(contact) {
            return Ok(());
        }
        self.admissible(contact)
    }

    /// Records that `contact` was heard from at `now`. See [`Insertion`].
    pub fn insert(&mut self, now: Instant, contact: Contact) -> Insertion {
        let Some(index) = self.bucket_index(&contact.id) else {
            return Insertion::Rejected(TableRejection::LocalId);
        };
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket.entries.iter().position(|c| c.id == contact.id) {
            if bucket.entries[pos].addr != contact.addr {
                return Insertion::Rejected(TableRejection::AddrChanged);
            }
            let entry = bucket.entries.remove(pos);
            bucket.seen_at.remove(pos);
            let pos = bucket.seen_at.partition_point(|at| *at <= now);
            bucket.entries.insert(pos, entry);
            bucket.seen_at.insert(pos, now);
            bucket.active_at = Some(now);
            return Insertion::Refreshed;
        }
        if let Err(rejection) = self.admissible(&contact) {
            return Insertion::Rejected(rejection);
        }
        let bucket = &mut self.buckets[index];
        if bucket.entries.len() < self.k {
            bucket.active_at = Some(now);
            self.add(index, contact, now);
            return Insertion::Added;
        }
        bucket.replacements.retain(|(c, _)| c.id != contact.id);
        if bucket.replacements.len() >= self.replacements_max {
            bucket.replacements.remove(0);
        }
        if self.replacements_max > 0 {
            bucket.replacements.push((contact, now));
        }
        Insertion::Full { lrs: bucket.entries[0] }
    }

    /// Removes `contact` (after it failed to answer) and promotes the newest replacement
    /// candidate of its bucket that still passes the caps. Returns whether it was stored.
    pub fn remove(&mut self, contact: &Contact) -> bool {
        if !self.contains(contact) {
            return false;
        }
        let Some(index) = self.bucket_index(&contact.id) else {
            return false;
        };
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket.entries.iter().position(|c| c.id == contact.id) {
            bucket.entries.remove(pos);
            bucket.seen_at.remove(pos);
        }
        self.addrs.remove(&contact.addr);
        decrement(&mut self.ip_counts, ip_of(&contact.addr));
        decrement(&mut self.subnet_counts, subnet_of(&contact.addr));
        while let Some((candidate, seen_at)) = self.buckets[index].replacements.pop() {
            if self.admissible(&candidate).is_ok() {
                self.add(index, candidate, seen_at);
                break;
            }
        }
        true
    }

    /// Whether the bucket `id` would go into is full and its least-recently-seen contact
    /// answered within `fresh_for` before `now`: a bucket full of good contacts, where a
    /// newcomer is not worth a ping (BEP 5 discards it).
    pub fn is_full_of_fresh(&self, id: &NodeId, now: Instant, fresh_for: Duration) -> bool {
        let Some(index) = self.bucket_index(id) else {
            return false;
        };
        let bucket = &self.buckets[index];
        bucket.entries.len() >= self.k
            && bucket.seen_at.first().is_some_and(|at| *at + fresh_for > now)
    }

    /// Up to `max` stored contacts not heard from since `since`, least recently seen first
    /// within each bucket: the ones to ping again (Kademlia's stale-contact check).
    pub fn silent_since(&self, since: Instant, max: usize) -> Vec<Contact> {
        let mut silent = Vec::new();
        for bucket in &self.buckets {
            // Entries are ordered by last-seen time, so the silent ones are a prefix.
            let stale = bucket.seen_at.iter().take_while(|at| **at < since).count();
            silent.extend(bucket.entries[..stale].iter().copied());
            if silent.len() >= max {
                silent.truncate(max);
                break;
            }
        }
        silent
    }

    /// The `n` stored contacts closest to `target` by XOR distance, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Contact> {
        let mut all: Vec<Contact> =
            self.buckets.iter().flat_map(|b| b.entries.iter().copied()).collect();
        let by_distance = |c: &Contact| c.id.distance(target);
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by_key(n - 1, by_distance);
        }
        all.truncate(n);
        all.sort_unstable_by_key(by_distance);
        all
    }

    /// All stored contacts, for persistence by the node; feed them back with
    /// [`crate::dht::DhtCommand::Restore`] after a restart.
    pub fn snapshot(&self) -> Vec<Contact> {
        self.buckets.iter().flat_map(|b| b.entries.iter().copied()).collect()
    }

    /// Contacts of bucket `index` (`0..BUCKETS`), least-recently-seen first.
    pub fn bucket_contacts(&self, index: usize) -> &[Contact] {
        &self.buckets[index].entries
    }

    /// The first bucket, among those that can hold nodes (up to the deepest non-empty one),
    /// without activity for `interval`. Marks it refreshed at `now`.
    pub(crate) fn take_refresh_due(&mut self, now: Instant, interval: Duration) -> Option<usize> {
        let deepest = self.buckets.iter().rposition(|b| !b.entries.is_empty())?;
        let index = self.buckets[..=deepest]
            .iter()
            .position(|b| b.active_at.is_none_or(|at| at + interval <= now))?;
        self.buckets[index].active_at = Some(now);
        Some(index)
    }

    /// Panics if an internal invariant is broken (sim and tests call this).
    pub fn assert_invariants(&self) {
        let mut ips: BTreeMap<IpAddr, usize> = BTreeMap::new();
        let mut subnets: BTreeMap<IpAddr, usize> = BTreeMap::new();
        let mut total = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            assert!(bucket.entries.len() <= self.k, "bucket {index} over k");
            assert_eq!(bucket.entries.len(), bucket.seen_at.len(), "bucket {index} seen times");
            assert!(bucket.seen_at.is_sorted(), "bucket {index} not in last-seen order");
            assert!(bucket.replacements.len() <= self.replacements_max);
            for contact in &bucket.entries {
                assert_eq!(self.bucket_index(&contact.id), Some(index), "misfiled contact");
                assert_eq!(self.addrs.get(&contact.addr), Some(&contact.id));
                *ips.entry(ip_of(&contact.addr)).or_default() += 1;
                *subnets.entry(subnet_of(&contact.addr)).or_default() += 1;
                total += 1;
            }
        }
        assert_eq!(total, self.addrs.len());
        assert_eq!(ips, self.ip_counts);
        assert_eq!(subnets, self.subnet_counts);
        assert!(ips.values().all(|&n| n <= self.per_ip_max), "per-IP cap");
        assert!(subnets.values().all(|&n| n <= self.per_subnet_max), "per-subnet cap");
    }

    fn bucket_index(&self, id: &NodeId) -> Option<usize> {
        let zeros = self.local.distance(id).leading_zeros();
        (zeros < BUCKETS).then_some(zeros)
    }

    fn admissible(&self, contact: &Contact) -> Result<(), TableRejection> {
        if self.addrs.contains_key(&contact.addr) {
            return Err(TableRejection::AddrTaken);
        }
        if self.ip_counts.get(&ip_of(&contact.addr)).copied().unwrap_or(0) >= self.per_ip_max {
            return Err(TableRejection::IpCap);
        }
        let subnet = subnet_of(&contact.addr);
        if self.subnet_counts.get(&subnet).copied().unwrap_or(0) >= self.per_subnet_max {
            return Err(TableRejection::SubnetCap);
        }
        Ok(())
    }

    /// Appends `contact`, heard from at `seen_at`, keeping the bucket in last-seen order (a
    /// promoted replacement may have been heard from before the newest entries).
    fn add(&mut self, index: usize, contact: Contact, seen_at: Instant) {
        let bucket = &mut self.buckets[index];
        let pos = bucket.seen_at.partition_point(|at| *at <= seen_at);
        bucket.entries.insert(pos, contact);
        bucket.seen_at.insert(pos, seen_at);
        self.addrs.insert(contact.addr, contact.id);
        *self.ip_counts.entry(ip_of(&contact.addr)).or_default() += 1;
        *self.subnet_counts.entry(subnet_of(&contact.addr)).or_default() += 1;
    }
}

fn decrement(counts: &mut BTreeMap<IpAddr, usize>, key: IpAddr) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

/// The IP a cap counts: IPv4-mapped IPv6 addresses count as IPv4.
pub(crate) fn ip_of(addr: &SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

/// The subnet a cap counts: the /24 of an IPv4 address, the /64 of an IPv6 one.
pub(crate) fn subnet_of(addr: &SocketAddr) -> IpAddr {
    match ip_of(addr) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id_byte0: u8, id_byte19: u8, addr: &str) -> Contact {
        let mut bytes = [0; 20];
        bytes[0] = id_byte0;
        bytes[19] = id_byte19;
        Contact { id: NodeId::from_bytes(bytes), addr: addr.parse().expect("test address") }
    }

    fn table(k: usize) -> RoutingTable {
        let config = DhtConfig { k, replacements_per_bucket_max: 2, ..DhtConfig::default() };
        RoutingTable::new(NodeId::from_bytes([0; 20]), &config)
    }

    #[test]
    fn full_bucket_keeps_lrs_until_removed() {
        let now = crate::sim::epoch();
        let mut table = table(2);
        let a = contact(0x80, 1, "10.0.1.1:1");
        let b = contact(0x80, 2, "10.0.2.1:1");
        let c = contact(0x80, 3, "10.0.3.1:1");
        assert_eq!(table.insert(now, a), Insertion::Added);
        assert_eq!(table.insert(now, b), Insertion::Added);
        assert_eq!(table.insert(now, c), Insertion::Full { lrs: a });
        assert!(table.contains(&a) && !table.contains(&c));
        // a answers the ping: it becomes most recently seen, b is now the LRS.
        assert_eq!(table.insert(now, a), Insertion::Refreshed);
        assert_eq!(table.insert(now, c), Insertion::Full { lrs: b });
        assert!(table.remove(&b));
        assert!(table.contains(&c), "replacement promoted");
        assert_eq!(table.bucket_contacts(0), &[a, c]);
        table.assert_invariants();
    }

    #[test]
    fn caps_and_address_conflicts() {
        let now = crate::sim::epoch();
        let mut table = table(20);
        let a = contact(0x80, 1, "10.0.0.1:1");
        assert_eq!(table.insert(now, a), Insertion::Added);
        assert_eq!(table.insert(now, contact(0x80, 2, "10.0.0.1:2")), Insertion::Added);
        assert_eq!(
            table.insert(now, contact(0x80, 3, "10.0.0.1:3")),
            Insertion::Rejected(TableRejection::IpCap)
        );
        let moved = Contact { addr: "10.9.9.9:9".parse().expect("addr"), ..a };
        assert_eq!(table.insert(now, moved), Insertion::Rejected(TableRejection::AddrChanged));
        assert_eq!(
            table.insert(now, contact(0x40, 1, "10.0.0.1:1")),
            Insertion::Rejected(TableRejection::AddrTaken)
        );
        for host in 2..=7 {
            let c = contact(0x40, host, &format!("10.0.0.{host}:1"));
            assert_eq!(table.insert(now, c), Insertion::Added);
        }
        assert_eq!(
            table.insert(now, contact(0x20, 1, "10.0.0.99:1")),
            Insertion::Rejected(TableRejection::SubnetCap)
        );
        assert_eq!(
            table.insert(now, contact(0, 0, "10.1.0.1:1")),
            Insertion::Rejected(TableRejection::LocalId)
        );
        // IPv6 counts per /64, and mapped IPv4 counts as IPv4.
        assert_eq!(
            table.insert(now, contact(0x20, 2, "[::ffff:10.0.0.1]:5")),
            Insertion::Rejected(TableRejection::IpCap)
        );
        table.assert_invariants();
    }

    #[test]
    fn closest_sorts_by_xor_distance() {
        let now = crate::sim::epoch();
        let mut table = table(20);
        let far = contact(0x80, 0, "10.0.1.1:1");
        let mid = contact(0x08, 0, "10.0.2.1:1");
        let near = contact(0x00, 1, "10.0.3.1:1");
        for c in [far, mid, near] {
            table.insert(now, c);
        }
        assert_eq!(table.closest(&NodeId::from_bytes([0; 20]), 2), vec![near, mid]);
        assert_eq!(table.closest(&far.id, 3), vec![far, near, mid]);
        assert_eq!(table.closest(&far.id, 0), vec![]);
    }

    #[test]
    fn refresh_visits_stale_buckets_once() {
        let now = crate::sim::epoch();
        let interval = Duration::from_secs(60);
        let mut table = table(20);
        assert_eq!(table.take_refresh_due(now, interval), None, "empty table");
        table.insert(now, contact(0x01, 0, "10.0.1.1:1")); // bucket 7
        assert_eq!(table.take_refresh_due(now, interval), Some(0));
        for expected in 1..7 {
            assert_eq!(table.take_refresh_due(now, interval), Some(expected));
        }
        assert_eq!(table.take_refresh_due(now, interval), None, "bucket 7 is active");
        assert_eq!(table.take_refresh_due(now + interval, interval), Some(0));
    }
}
