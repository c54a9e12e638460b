//! [`Dht`]: the sans-IO node that ties routing table, lookups, RPC timeouts, provider store
//! and announce queue together behind the `handle_*` / `poll_*` vocabulary.

use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::dht::announce::Publisher;
use crate::dht::config::DhtConfig;
use crate::dht::id::{Contact, Key, NodeId};
use crate::dht::lookup::{Lookup, LookupStats, Purpose};
use crate::dht::message::{
    DhtBody, DhtMessage, CONTACTS_PER_MESSAGE_MAX, PROVIDERS_PER_MESSAGE_MAX,
};
use crate::dht::rate::RateLimiter;
use crate::dht::routing::{ip_of, Insertion, RoutingTable, TableRejection};
use crate::dht::store::{ProviderStore, Put};

/// What the application asks of the DHT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtCommand {
    /// Join through these addresses (node ids unknown): a self-lookup seeded by them and by
    /// the table. Ends with [`DhtEvent::Bootstrapped`]. At most `k` addresses are used.
    Bootstrap(Vec<SocketAddr>),
    /// Rejoin from a [`Dht::snapshot`] saved before a restart: the contacts go into the table
    /// unverified (this node's own earlier table; failures evict them) and a self-lookup
    /// runs through them.
    Restore(Vec<Contact>),
    /// Find the k closest nodes to an id. Ends with [`DhtEvent::LookupFinished`].
    FindNode(NodeId),
    /// Find providers of a key. Ends with [`DhtEvent::ProvidersFound`].
    FindProviders(Key),
    /// Provide a key: announce it now (paced) and republish it until withdrawn. Each
    /// announcement ends with [`DhtEvent::Announced`].
    Announce(Key),
    /// Stop republishing a key; records elsewhere expire after `provider_ttl`.
    Withdraw(Key),
}

/// What the DHT reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// A `Bootstrap` or `Restore` self-lookup finished.
    Bootstrapped {
        /// Contacts in the routing table afterwards.
        table_len: usize,
    },
    /// A `FindNode` lookup finished.
    LookupFinished {
        /// The id looked up.
        target: NodeId,
        /// Up to k closest nodes that answered, closest first.
        closest: Vec<Contact>,
        /// Cost of the lookup.
        stats: LookupStats,
    },
    /// A `FindProviders` lookup finished (possibly with no providers).
    ProvidersFound {
        /// The key looked up.
        key: Key,
        /// Distinct providers found, at most `lookup_providers_wanted`.
        providers: Vec<Contact>,
        /// Cost of the lookup.
        stats: LookupStats,
    },
    /// An announcement (or republish) of a provided key finished.
    Announced {
        /// The key.
        key: Key,
        /// Nodes that acknowledged storing the record.
        stored: u32,
    },
    /// A peer sent something invalid; it was dropped. The node may penalise the address.
    PeerMisbehaved {
        /// Source address of the datagram.
        addr: SocketAddr,
        /// What it did.
        misbehavior: Misbehavior,
    },
    /// A command was refused because a bound was reached; the app may retry later.
    Rejected(Rejection),
}

/// Kinds of invalid peer input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehavior {
    /// The sender claimed our own node id.
    LocalIdClaimed,
    /// A reply with a valid transaction id is not the kind of reply the request wants.
    WrongReplyKind,
    /// A list was longer than its bound (it was truncated).
    ListTooLong,
    /// A contact with an unusable address (unspecified IP, port 0, multicast).
    InvalidContact,
    /// An `AnnounceProvider` whose provider is not the sender.
    ForeignProvider,
}

/// Commands refused because a bound was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `lookups_inflight_max` lookups are running.
    LookupsFull {
        /// The target of the refused lookup.
        target: NodeId,
    },
    /// `published_keys_max` keys are provided already.
    PublishedKeysFull {
        /// The refused key.
        key: Key,
    },
}

/// RPCs counted by request type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RpcCounts {
    pub ping: u64,
    pub find_node: u64,
    pub get_providers: u64,
    pub announce_provider: u64,
}

impl RpcCounts {
    /// Counts one request of `body`'s type (replies are not requests: not counted).
    pub fn count(&mut self, body: &DhtBody) {
        match body {
            DhtBody::Ping => self.ping += 1,
            DhtBody::FindNode { .. } => self.find_node += 1,
            DhtBody::GetProviders { .. } => self.get_providers += 1,
            DhtBody::AnnounceProvider { .. } => self.announce_provider += 1,
            DhtBody::Pong
            | DhtBody::Nodes { .. }
            | DhtBody::Providers { .. }
            | DhtBody::AnnounceAck { .. } => {}
        }
    }
}

/// Counters of everything the core did or absorbed. Monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Requests answered, by type.
    pub requests_by_type: RpcCounts,
    /// Requests sent (first transmissions), by type.
    pub rpcs_sent_by_type: RpcCounts,
    /// Lookups (all purposes) that ended with no node having answered.
    pub lookups_failed: u64,
    /// Datagrams past the rate limiter.
    pub datagrams_accepted: u64,
    /// Datagrams dropped by the per-source-IP rate limiter.
    pub rate_limited: u64,
    /// Requests answered.
    pub requests_answered: u64,
    /// Replies matched to a pending request.
    pub responses_accepted: u64,
    /// Replies with no pending transaction (late after a timeout, or forged).
    pub responses_unknown_tx: u64,
    /// Replies with a pending transaction id from an address the request did not go to.
    pub responses_wrong_source: u64,
    /// Replies of the wrong kind, or from a node id other than the one asked.
    pub responses_mismatched: u64,
    /// Invalid peer input of any kind (each also emits `PeerMisbehaved`).
    pub misbehaviors: u64,
    /// Requests sent (first transmissions).
    pub rpcs_sent: u64,
    /// Requests resent after a timeout.
    pub rpcs_resent: u64,
    /// Requests that failed after their resends.
    pub rpcs_failed: u64,
    /// Times a request had to wait because `rpcs_inflight_max` requests were pending.
    pub rpcs_deferred: u64,
    /// Lookups started (all purposes).
    pub lookups_started: u64,
    /// Contacts evicted from the table after failing to answer.
    pub contacts_evicted: u64,
    /// Pings sent to verify a node that sent us a request before it may enter the table.
    pub contacts_verify_pings: u64,
    /// Newcomers not verified because `contact_checks_inflight_max` checks were pending.
    pub contacts_verify_skipped: u64,
    /// Pings sent to table contacts silent for `contact_recheck_after`.
    pub contacts_recheck_pings: u64,
    /// Contacts the table refused (caps, address conflicts).
    pub table_rejections: u64,
    /// Provider records stored or refreshed for others.
    pub provider_records_stored: u64,
    /// Provider records refused (caps or invalid announcement).
    pub provider_records_refused: u64,
    /// Outgoing datagrams dropped because `transmits_queued_max` were queued.
    pub transmits_dropped: u64,
    /// Misbehaviour events dropped because `events_queued_max` were queued.
    pub events_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RpcPurpose {
    Lookup(u64),
    /// Liveness check of a table contact: a full bucket's least-recently-seen one, a
    /// silent one, or one whose id showed up at another address.
    Ping,
    /// Check of a node that sent us a request: it enters the table if it answers.
    Verify,
    /// Store phase of an announcement.
    Announce(u64),
}

#[derive(Debug)]
struct Rpc {
    to: SocketAddr,
    /// The node id asked; `None` for bootstrap addresses.
    expect: Option<NodeId>,
    request: DhtBody,
    purpose: RpcPurpose,
    deadline: Instant,
    resends_left: u8,
}

impl Rpc {
    fn contact(&self) -> Option<Contact> {
        self.expect.map(|id| Contact { id, addr: self.to })
    }
}

/// A Kademlia node without I/O. Feed it datagrams, commands and timeouts with the current
/// time; drain `poll_transmit` and `poll_event` after each call; call `handle_timeout` at
/// `poll_timeout`.
#[derive(Debug)]
pub struct Dht {
    config: DhtConfig,
    local: Contact,
    rng: SmallRng,
    table: RoutingTable,
    rpcs: BTreeMap<u64, Rpc>,
    deadlines: BTreeSet<(Instant, u64)>,
    lookups: BTreeMap<u64, Lookup>,
    next_lookup: u64,
    refreshes_inflight: usize,
    /// Table contacts with a liveness ping in flight.
    lrs_pings: BTreeSet<NodeId>,
    /// Addresses of newcomers with a verification ping in flight.
    verifying: BTreeSet<SocketAddr>,
    store: ProviderStore,
    publisher: Publisher,
    limiter: RateLimiter,
    transmits: VecDeque<(SocketAddr, DhtMessage)>,
    events: VecDeque<DhtEvent>,
    stats: DhtStats,
    maintenance_at: Option<Instant>,
    /// Some lookup could not send because the RPC table was full.
    starved: bool,
}

impl Dht {
    /// A node with identity `local`; `seed` drives every random choice (transaction ids,
    /// refresh targets).
    ///
    /// # Panics
    /// If `config` fails [`DhtConfig::validate`] (a local configuration bug).
    pub fn new(config: DhtConfig, local: Contact, seed: u64) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid DhtConfig: {e}");
        }
        Self {
            table: RoutingTable::new(local.id, &config),
            store: ProviderStore::new(&config),
            publisher: Publisher::new(&config),
            limiter: RateLimiter::new(&config),
            config,
            local,
            rng: SmallRng::seed_from_u64(seed),
            rpcs: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            lookups: BTreeMap::new(),
            next_lookup: 0,
            refreshes_inflight: 0,
            lrs_pings: BTreeSet::new(),
            verifying: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: DhtStats::default(),
            maintenance_at: None,
            starved: false,
        }
    }

    /// This node's contact, as sent in every message.
    pub fn local(&self) -> Contact {
        self.local
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// Keys waiting in the announcement queue (not yet started).
    pub fn announcement_backlog(&self) -> usize {
        self.publisher.backlog()
    }

    /// Counters.
    pub fn stats(&self) -> &DhtStats {
        &self.stats
    }

    /// The routing table (read-only).
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Routing-table contacts to persist; feed them to [`DhtCommand::Restore`] on restart.
    pub fn snapshot(&self) -> Vec<Contact> {
        self.table.snapshot()
    }

    /// Provider records stored for other nodes.
    pub fn stored_records(&self) -> usize {
        self.store.len()
    }

    /// A datagram from `from` arrived.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, msg: DhtMessage) {
        if self.admit(now, from) {
            self.handle_admitted(now, from, msg);
        }
    }

    /// The per-source-IP rate limit, on its own: a caller with expensive checks of its own
    /// (signature verification) asks first, then hands the datagram to
    /// [`Dht::handle_admitted`]. `false`: drop it (counted).
    pub fn admit(&mut self, now: Instant, from: SocketAddr) -> bool {
        let allowed = self.limiter.allow(now, ip_of(&from));
        if !allowed {
            self.stats.rate_limited += 1;
        }
        allowed
    }

    /// A datagram [`Dht::admit`] let through.
    pub fn handle_admitted(&mut self, now: Instant, from: SocketAddr, msg: DhtMessage) {
        self.stats.datagrams_accepted += 1;
        self.start_clock(now);
        if msg.sender.id == self.local.id {
            self.misbehaved(from, Misbehavior::LocalIdClaimed);
        } else if msg.body.is_request() {
            self.handle_request(now, from, msg);
        } else {
            self.handle_response(now, from, msg);
        }
        self.start_background(now);
    }

    /// An application command.
    pub fn handle_command(&mut self, now: Instant, cmd: DhtCommand) {
        self.start_clock(now);
        match cmd {
            DhtCommand::Bootstrap(addrs) => {
                let addrs: Vec<SocketAddr> = addrs
                    .into_iter()
                    .filter(|a| *a != self.local.addr)
                    .take(self.config.k)
                    .collect();
                self.start_lookup(now, Purpose::Bootstrap, self.local.id, &addrs);
            }
            DhtCommand::Restore(contacts) => {
                for contact in contacts {
                    self.table.insert(now, contact);
                }
                self.start_lookup(now, Purpose::Bootstrap, self.local.id, &[]);
            }
            DhtCommand::FindNode(target) => {
                self.start_lookup(now, Purpose::FindNode, target, &[]);
            }
            DhtCommand::FindProviders(key) => {
                self.start_lookup(now, Purpose::FindProviders(key), key.target(), &[]);
            }
            DhtCommand::Announce(key) => {
                if !self.publisher.publish(now, key) {
                    self.events.push_back(DhtEvent::Rejected(Rejection::PublishedKeysFull { key }));
                }
            }
            DhtCommand::Withdraw(key) => self.publisher.withdraw(&key),
        }
        self.start_background(now);
    }

    /// Time passed; call at (or after) [`Self::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.start_clock(now);
        while let Some(&(deadline, tx)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.expire_rpc(now, tx);
        }
        if self.maintenance_at.is_some_and(|at| at <= now) {
            self.maintenance_at = Some(now + self.config.maintenance_interval);
            self.store.expire(now);
            self.limiter.purge(now);
            self.publisher.schedule_due(now);
            self.recheck_silent(now);
        }
        self.start_background(now);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, DhtMessage)> {
        self.transmits.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.deadlines.first().map(|(at, _)| *at),
            self.maintenance_at,
            // Only a wake-up that can start an announcement; otherwise the end of whatever
            // unblocks the queue starts it, and a past instant here would spin the caller.
            self.publisher.poll_at().filter(|_| !self.announces_blocked()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// Panics if an internal invariant or bound is broken (the simulation calls this).
    pub fn assert_invariants(&self) {
        self.table.assert_invariants();
        self.store.assert_invariants();
        assert!(self.rpcs.len() <= self.config.rpcs_inflight_max);
        assert_eq!(self.rpcs.len(), self.deadlines.len());
        for (deadline, tx) in &self.deadlines {
            assert_eq!(self.rpcs.get(tx).map(|r| r.deadline), Some(*deadline));
        }
        assert!(self.lookups.len() <= self.config.lookups_inflight_max);
        assert!(self.verifying.len() <= self.config.contact_checks_inflight_max);
        assert!(self.transmits.len() <= self.config.transmits_queued_max);
        assert!(!self.table.snapshot().iter().any(|c| c.id == self.local.id));
    }

    fn start_clock(&mut self, now: Instant) {
        if self.maintenance_at.is_none() {
            self.maintenance_at = Some(now + self.config.maintenance_interval);
        }
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, msg: DhtMessage) {
        let sender = Contact { id: msg.sender.id, addr: from };
        if !msg.read_only {
            self.check_newcomer(now, sender);
        }
        let k = self.config.k;
        let mut by_type = self.stats.requests_by_type;
        by_type.count(&msg.body);
        let reply = match msg.body {
            DhtBody::Ping => DhtBody::Pong,
            DhtBody::FindNode { target } => {
                DhtBody::Nodes { contacts: self.table.closest(&target, k) }
            }
            DhtBody::GetProviders { key } => DhtBody::Providers {
                providers: self.providers_of(now, &key),
                closer: self.table.closest(&key.target(), k),
            },
            DhtBody::AnnounceProvider { key, provider } => {
                let stored = if provider.id == sender.id {
                    match self.store.put(now, key, sender) {
                        Put::Stored | Put::Refreshed => true,
                        Put::KeyFull | Put::ProviderFull | Put::StoreFull => false,
                    }
                } else {
                    self.misbehaved(from, Misbehavior::ForeignProvider);
                    false
                };
                if stored {
                    self.stats.provider_records_stored += 1;
                } else {
                    self.stats.provider_records_refused += 1;
                }
                DhtBody::AnnounceAck { stored }
            }
            DhtBody::Pong
            | DhtBody::Nodes { .. }
            | DhtBody::Providers { .. }
            | DhtBody::AnnounceAck { .. } => {
                return; // unreachable: the caller routes replies to handle_response
            }
        };
        self.stats.requests_answered += 1;
        self.stats.requests_by_type = by_type;
        let msg = DhtMessage {
            tx: msg.tx,
            sender: self.local,
            body: reply,
            read_only: self.config.read_only,
        };
        self.transmit(from, msg);
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, msg: DhtMessage) {
        let Some(rpc) = self.rpcs.get(&msg.tx) else {
            self.stats.responses_unknown_tx += 1;
            return;
        };
        if rpc.to != from {
            self.stats.responses_wrong_source += 1;
            return;
        }
        if !msg.body.answers(&rpc.request) {
            self.stats.responses_mismatched += 1;
            self.misbehaved(from, Misbehavior::WrongReplyKind);
            return;
        }
        let Some(rpc) = self.take_rpc(msg.tx) else {
            return;
        };
        if rpc.expect.is_some_and(|id| id != msg.sender.id) {
            // Another node now answers at this address: the one we asked is gone.
            self.stats.responses_mismatched += 1;
            self.fail_rpc(now, rpc);
            return;
        }
        self.stats.responses_accepted += 1;
        let sender = Contact { id: msg.sender.id, addr: from };
        if rpc.purpose == RpcPurpose::Verify {
            self.verifying.remove(&rpc.to);
        }
        // It answered a request of ours from the address we sent it to: it exists there.
        if !msg.read_only {
            self.observe(now, sender);
        }
        self.lrs_pings.remove(&sender.id);
        let (contacts, mut providers, stored) = match msg.body {
            DhtBody::Nodes { contacts } => (contacts, Vec::new(), false),
            DhtBody::Providers { providers, closer } => (closer, providers, false),
            DhtBody::AnnounceAck { stored } => (Vec::new(), Vec::new(), stored),
            _ => (Vec::new(), Vec::new(), false),
        };
        // A node that provides the key itself names itself; it is reachable where it just
        // answered from (it may not know its own address, e.g. when bound to 0.0.0.0).
        for provider in providers.iter_mut().filter(|p| p.id == sender.id) {
            provider.addr = from;
        }
        let contacts = self.sanitize(from, contacts, CONTACTS_PER_MESSAGE_MAX);
        let providers = self.sanitize(from, providers, PROVIDERS_PER_MESSAGE_MAX);
        match rpc.purpose {
            RpcPurpose::Lookup(id) => {
                if let Some(lookup) = self.lookups.get_mut(&id) {
                    lookup.on_response(sender, rpc.expect.is_none(), &contacts, &providers);
                    self.drive_lookup(now, id);
                }
            }
            RpcPurpose::Announce(phase) => self.store_done(phase, stored),
            RpcPurpose::Ping | RpcPurpose::Verify => {}
        }
    }

    /// Providers of `key` to hand out: this node first if it provides the key itself (so a
    /// provider is found by any lookup that reaches it, even before its announcement was
    /// stored anywhere, or after the nodes that stored it restarted), then stored records.
    fn providers_of(&self, now: Instant, key: &Key) -> Vec<Contact> {
        let own = (!self.config.read_only && self.publisher.provides(key)).then_some(self.local);
        let room = PROVIDERS_PER_MESSAGE_MAX - usize::from(own.is_some());
        let stored = self.store.providers(now, key, room + 1);
        own.into_iter()
            .chain(stored.into_iter().filter(|p| p.id != self.local.id))
            .take(PROVIDERS_PER_MESSAGE_MAX)
            .collect()
    }

    /// A node sent us a request. It is not trusted to exist: its source address can be
    /// forged and its id is whatever it claims. A stored contact is left as it is (only
    /// answers refresh it); a newcomer the table would take — its bucket has room, or its
    /// least-recently-seen contact has been silent for `contact_recheck_after` — is pinged,
    /// and enters the table only if it answers from that address with that id. A known id at a new address gets
    /// the stored address pinged: if that fails, the stale entry goes, and the node gets in
    /// at its new address the next time it is heard from.
    fn check_newcomer(&mut self, now: Instant, sender: Contact) {
        if self.table.contains(&sender) {
            return;
        }
        match self.table.admission(&sender) {
            Ok(()) => {}
            Err(TableRejection::AddrChanged) => {
                if let Some(stored) = self.table.get(&sender.id) {
                    self.ping_contact(now, stored);
                }
                return;
            }
            Err(_) => {
                self.stats.table_rejections += 1;
                return;
            }
        }
        // A bucket full of contacts that answered lately keeps them (BEP 5): no ping.
        if self.table.is_full_of_fresh(&sender.id, now, self.config.contact_recheck_after) {
            self.stats.table_rejections += 1;
            return;
        }
        if self.verifying.contains(&sender.addr) {
            return;
        }
        if self.verifying.len() >= self.config.contact_checks_inflight_max {
            self.stats.contacts_verify_skipped += 1;
            return;
        }
        if self.send_request(now, sender.addr, Some(sender.id), DhtBody::Ping, RpcPurpose::Verify) {
            self.verifying.insert(sender.addr);
            self.stats.contacts_verify_pings += 1;
        }
    }

    /// Pings a table contact (at most one ping per contact in flight); if it fails, the
    /// contact is evicted.
    fn ping_contact(&mut self, now: Instant, contact: Contact) -> bool {
        if self.lrs_pings.contains(&contact.id)
            || self.lrs_pings.len() >= self.config.contact_checks_inflight_max
        {
            return false;
        }
        let sent =
            self.send_request(now, contact.addr, Some(contact.id), DhtBody::Ping, RpcPurpose::Ping);
        if sent {
            self.lrs_pings.insert(contact.id);
        }
        sent
    }

    /// Kademlia's stale-contact rule for contacts nobody queries: ping those silent for
    /// `contact_recheck_after`; the ones that do not answer are evicted.
    fn recheck_silent(&mut self, now: Instant) {
        let Some(since) = now.checked_sub(self.config.contact_recheck_after) else {
            return;
        };
        let room = self.config.contact_checks_inflight_max.saturating_sub(self.lrs_pings.len());
        for contact in self.table.silent_since(since, room) {
            if self.ping_contact(now, contact) {
                self.stats.contacts_recheck_pings += 1;
            }
        }
    }

    /// Drops invalid contacts and truncates to `max`, reporting either as misbehaviour.
    fn sanitize(
        &mut self,
        from: SocketAddr,
        mut contacts: Vec<Contact>,
        max: usize,
    ) -> Vec<Contact> {
        if contacts.len() > max {
            contacts.truncate(max);
            self.misbehaved(from, Misbehavior::ListTooLong);
        }
        let before = contacts.len();
        contacts.retain(|c| {
            let ip = c.addr.ip();
            c.addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast()
        });
        if contacts.len() != before {
            self.misbehaved(from, Misbehavior::InvalidContact);
        }
        contacts
    }

    /// A node answered one of our requests from its address: update the table, pinging a
    /// full bucket's LRS contact. While the table holds at most k contacts, every new one is
    /// among the k closest to every key, so the keys this node provides are announced again
    /// (paced) to reach it: an announcement made when the table was empty or smaller would
    /// otherwise wait for the next republish.
    fn observe(&mut self, now: Instant, contact: Contact) {
        match self.table.insert(now, contact) {
            Insertion::Added => {
                if self.table.len() <= self.config.k {
                    self.publisher.requeue_all();
                }
            }
            Insertion::Refreshed => {}
            Insertion::Full { lrs } => {
                self.ping_contact(now, lrs);
            }
            Insertion::Rejected(TableRejection::AddrChanged) => {
                self.stats.table_rejections += 1;
                if let Some(stored) = self.table.get(&contact.id) {
                    self.ping_contact(now, stored);
                }
            }
            Insertion::Rejected(_) => self.stats.table_rejections += 1,
        }
    }

    fn misbehaved(&mut self, addr: SocketAddr, misbehavior: Misbehavior) {
        self.stats.misbehaviors += 1;
        if self.events.len() >= self.config.events_queued_max {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(DhtEvent::PeerMisbehaved { addr, misbehavior });
        }
    }

    fn transmit(&mut self, to: SocketAddr, msg: DhtMessage) {
        if self.transmits.len() >= self.config.transmits_queued_max {
            self.stats.transmits_dropped += 1;
        } else {
            self.transmits.push_back((to, msg));
        }
    }

    /// Sends a request and tracks it; `false` if `rpcs_inflight_max` requests are pending.
    fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<NodeId>,
        request: DhtBody,
        purpose: RpcPurpose,
    ) -> bool {
        if self.rpcs.len() >= self.config.rpcs_inflight_max {
            self.stats.rpcs_deferred += 1;
            self.starved = true;
            return false;
        }
        let mut tx = self.rng.random::<u64>();
        while self.rpcs.contains_key(&tx) {
            tx = self.rng.random::<u64>();
        }
        let deadline = now + self.config.rpc_timeout;
        let msg = DhtMessage {
            tx,
            sender: self.local,
            body: request.clone(),
            read_only: self.config.read_only,
        };
        self.rpcs.insert(
            tx,
            Rpc {
                to,
                expect,
                request,
                purpose,
                deadline,
                resends_left: self.config.rpc_retries_max,
            },
        );
        self.deadlines.insert((deadline, tx));
        self.stats.rpcs_sent += 1;
        self.stats.rpcs_sent_by_type.count(&self.rpcs[&tx].request);
        self.transmit(to, msg);
        true
    }

    fn take_rpc(&mut self, tx: u64) -> Option<Rpc> {
        let rpc = self.rpcs.remove(&tx)?;
        self.deadlines.remove(&(rpc.deadline, tx));
        Some(rpc)
    }

    /// The deadline of `tx` passed (its deadline entry is already removed): resend or fail.
    fn expire_rpc(&mut self, now: Instant, tx: u64) {
        let Some(rpc) = self.rpcs.get_mut(&tx) else {
            return;
        };
        if rpc.resends_left == 0 {
            if let Some(rpc) = self.rpcs.remove(&tx) {
                self.fail_rpc(now, rpc);
            }
            return;
        }
        rpc.resends_left -= 1;
        rpc.deadline = now + self.config.rpc_timeout;
        self.deadlines.insert((rpc.deadline, tx));
        let (to, purpose, contact) = (rpc.to, rpc.purpose, rpc.contact());
        let msg = DhtMessage {
            tx,
            sender: self.local,
            body: rpc.request.clone(),
            read_only: self.config.read_only,
        };
        self.stats.rpcs_resent += 1;
        self.transmit(to, msg);
        if let (RpcPurpose::Lookup(id), Some(contact)) = (purpose, contact) {
            if let Some(lookup) = self.lookups.get_mut(&id) {
                lookup.on_slow(&contact);
                self.drive_lookup(now, id);
            }
        }
    }

    /// A request failed for good: evict the contact and tell whoever waited.
    fn fail_rpc(&mut self, now: Instant, rpc: Rpc) {
        self.stats.rpcs_failed += 1;
        let contact = rpc.contact();
        if rpc.purpose == RpcPurpose::Verify {
            self.verifying.remove(&rpc.to);
        }
        if let Some(contact) = contact {
            self.lrs_pings.remove(&contact.id);
            if self.table.remove(&contact) {
                self.stats.contacts_evicted += 1;
            }
        }
        match rpc.purpose {
            RpcPurpose::Lookup(id) => {
                if let Some(lookup) = self.lookups.get_mut(&id) {
                    lookup.on_failure(contact.as_ref());
                    self.drive_lookup(now, id);
                }
            }
            RpcPurpose::Announce(phase) => self.store_done(phase, false),
            RpcPurpose::Ping | RpcPurpose::Verify => {}
        }
    }

    fn store_done(&mut self, phase: u64, stored: bool) {
        if let Some((key, stored)) = self.publisher.on_store_done(phase, stored) {
            self.events.push_back(DhtEvent::Announced { key, stored });
        }
    }

    /// Starts a lookup, or emits `Rejected` if `lookups_inflight_max` are running (background
    /// work checks the bound before calling).
    fn start_lookup(
        &mut self,
        now: Instant,
        purpose: Purpose,
        target: NodeId,
        addrs: &[SocketAddr],
    ) {
        if self.lookups.len() >= self.config.lookups_inflight_max {
            self.events.push_back(DhtEvent::Rejected(Rejection::LookupsFull { target }));
            return;
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.stats.lookups_started += 1;
        let seeds = self.table.closest(&target, self.config.k);
        let mut lookup = Lookup::new(purpose, target, self.local.id, &seeds, &self.config);
        for addr in addrs {
            let request = DhtBody::FindNode { target };
            if self.send_request(now, *addr, None, request, RpcPurpose::Lookup(id)) {
                lookup.add_anonymous();
            }
        }
        self.lookups.insert(id, lookup);
        self.drive_lookup(now, id);
    }

    /// Sends what lookup `id` wants to send, or finishes it.
    fn drive_lookup(&mut self, now: Instant, id: u64) {
        loop {
            let Some(lookup) = self.lookups.get_mut(&id) else {
                return;
            };
            if lookup.is_finished() {
                if let Some(lookup) = self.lookups.remove(&id) {
                    self.finish_lookup(now, lookup);
                }
                return;
            }
            if self.rpcs.len() >= self.config.rpcs_inflight_max {
                self.stats.rpcs_deferred += 1;
                self.starved = true;
                return;
            }
            let Some(contact) = lookup.next_query() else {
                return;
            };
            let request = match lookup.purpose {
                Purpose::FindProviders(key) => DhtBody::GetProviders { key },
                _ => DhtBody::FindNode { target: lookup.target },
            };
            // Cannot fail: capacity was checked above.
            self.send_request(now, contact.addr, Some(contact.id), request, RpcPurpose::Lookup(id));
        }
    }

    fn finish_lookup(&mut self, now: Instant, lookup: Lookup) {
        if lookup.closest_responded().is_empty() {
            self.stats.lookups_failed += 1;
        }
        match lookup.purpose {
            Purpose::FindNode => self.events.push_back(DhtEvent::LookupFinished {
                target: lookup.target,
                closest: lookup.closest_responded(),
                stats: lookup.stats,
            }),
            Purpose::FindProviders(key) => self.events.push_back(DhtEvent::ProvidersFound {
                key,
                providers: lookup.providers,
                stats: lookup.stats,
            }),
            Purpose::Bootstrap => {
                self.events.push_back(DhtEvent::Bootstrapped { table_len: self.table.len() })
            }
            Purpose::Refresh => self.refreshes_inflight -= 1,
            Purpose::Announce(key) => {
                let targets = lookup.closest_responded();
                if targets.is_empty() {
                    // No store phase: one would wait for stores that are never sent.
                    let (key, stored) = self.publisher.finish(key, 0);
                    self.events.push_back(DhtEvent::Announced { key, stored });
                    return;
                }
                let phase = self.publisher.begin_stores(key, targets.len() as u32);
                let mut sent = 0;
                for target in &targets {
                    let request = DhtBody::AnnounceProvider { key, provider: self.local };
                    let purpose = RpcPurpose::Announce(phase);
                    sent += u32::from(self.send_request(
                        now,
                        target.addr,
                        Some(target.id),
                        request,
                        purpose,
                    ));
                }
                for _ in sent..targets.len() as u32 {
                    self.store_done(phase, false);
                }
            }
        }
    }

    /// Work that waits for capacity: starved lookups, bucket refreshes, queued announcements.
    fn start_background(&mut self, now: Instant) {
        if self.starved && self.rpcs.len() < self.config.rpcs_inflight_max {
            self.starved = false;
            let ids: Vec<u64> = self.lookups.keys().copied().collect();
            for id in ids {
                self.drive_lookup(now, id);
            }
        }
        while !self.bootstrapping()
            && self.refreshes_inflight < self.config.refresh_lookups_inflight_max
            && self.lookups.len() < self.config.lookups_inflight_max
        {
            let Some(index) = self.table.take_refresh_due(now, self.config.bucket_refresh_interval)
            else {
                break;
            };
            let target = self.local.id.random_in_bucket(index, &mut self.rng);
            self.refreshes_inflight += 1;
            self.start_lookup(now, Purpose::Refresh, target, &[]);
        }
        while !self.announces_blocked() {
            let Some(key) = self.publisher.next_to_start(now) else {
                break;
            };
            self.start_lookup(now, Purpose::Announce(key), key.target(), &[]);
        }
    }

    fn bootstrapping(&self) -> bool {
        self.lookups.values().any(|l| l.purpose == Purpose::Bootstrap)
    }

    /// Announcements wait for a joined table (an announcement through an empty table would
    /// store nowhere and not be retried until the next republish) and for lookup capacity.
    fn announces_blocked(&self) -> bool {
        self.table.is_empty()
            || self.bootstrapping()
            || self.lookups.len() >= self.config.lookups_inflight_max
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn contact(n: u16) -> Contact {
        let mut id = [0x55; 20];
        id[..2].copy_from_slice(&n.to_be_bytes());
        Contact { id: NodeId::from_bytes(id), addr: crate::sim::node_addr(usize::from(n)) }
    }

    fn node(n: u16, config: DhtConfig) -> Dht {
        Dht::new(config, contact(n), u64::from(n))
    }

    fn request(from: Contact, tx: u64, body: DhtBody) -> DhtMessage {
        DhtMessage { tx, sender: from, body, read_only: false }
    }

    fn drain(dht: &mut Dht) -> (Vec<(SocketAddr, DhtMessage)>, Vec<DhtEvent>) {
        let sent = std::iter::from_fn(|| dht.poll_transmit()).collect();
        let events = std::iter::from_fn(|| dht.poll_event()).collect();
        (sent, events)
    }

    /// Delivers every queued datagram between `nodes` (no loss, no delay) until quiet.
    fn pump(now: Instant, nodes: &mut [Dht]) -> Vec<DhtEvent> {
        let mut events = Vec::new();
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                let from = nodes[i].local().addr;
                let (sent, evs) = drain(&mut nodes[i]);
                events.extend(evs);
                for (to, msg) in sent {
                    if let Some(dest) = nodes.iter_mut().find(|n| n.local().addr == to) {
                        dest.handle_datagram(now, from, msg);
                        moved = true;
                    }
                }
            }
            if !moved {
                return events;
            }
        }
    }

    #[test]
    fn bootstrap_announce_and_find_providers() {
        let now = crate::sim::epoch();
        let mut nodes: Vec<Dht> = (0..5).map(|n| node(n, DhtConfig::default())).collect();
        for i in 1..5 {
            nodes[i].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
            let events = pump(now, &mut nodes);
            assert!(events.contains(&DhtEvent::Bootstrapped { table_len: i }), "{events:?}");
        }
        let key = Key::from_bytes([9; 20]);
        nodes[1].handle_command(now, DhtCommand::Announce(key));
        let events = pump(now, &mut nodes);
        assert!(events.contains(&DhtEvent::Announced { key, stored: 4 }), "{events:?}");
        nodes[3].handle_command(now, DhtCommand::FindProviders(key));
        let events = pump(now, &mut nodes);
        let found = events.iter().find_map(|e| match e {
            DhtEvent::ProvidersFound { providers, stats, .. } => Some((providers.clone(), *stats)),
            _ => None,
        });
        let (providers, stats) = found.expect("lookup finished");
        assert_eq!(providers, vec![contact(1)]);
        assert_eq!(stats.rounds, 1, "everyone knows everyone in a 5-node network");
        for n in &nodes {
            n.assert_invariants();
        }
    }

    #[test]
    fn read_only_clients_are_answered_but_never_stored() {
        let now = crate::sim::epoch();
        let client_config = DhtConfig { read_only: true, ..DhtConfig::default() };
        let mut nodes = vec![node(0, DhtConfig::default()), node(1, DhtConfig::default())];
        nodes.push(node(2, client_config));
        nodes[1].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        pump(now, &mut nodes);
        nodes[2].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        let events = pump(now, &mut nodes);
        // The client learned both servers; the servers learned each other, not the client.
        assert!(events.contains(&DhtEvent::Bootstrapped { table_len: 2 }), "{events:?}");
        assert_eq!(nodes[0].table().len(), 1);
        assert_eq!(nodes[1].table().len(), 1);
    }

    #[test]
    fn announce_waits_for_bootstrap() {
        let now = crate::sim::epoch();
        let mut nodes: Vec<Dht> = (0..3).map(|n| node(n, DhtConfig::default())).collect();
        let key = Key::from_bytes([9; 20]);
        nodes[1].handle_command(now, DhtCommand::Announce(key));
        assert_eq!(drain(&mut nodes[1]), (vec![], vec![]), "nothing to announce to yet");
        assert!(nodes[1].poll_timeout().is_some_and(|at| at > now), "no busy wake-up");
        nodes[2].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        pump(now, &mut nodes);
        // (Node 0 answers node 1 with node 2 once node 2 answered its check.)
        nodes[1].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        let events = pump(now, &mut nodes);
        assert!(events.contains(&DhtEvent::Announced { key, stored: 2 }), "{events:?}");
    }

    #[test]
    fn an_announcement_that_reaches_nobody_ends_and_leaves_no_state() {
        let mut now = crate::sim::epoch();
        let mut nodes: Vec<Dht> = (0..2).map(|n| node(n, DhtConfig::default())).collect();
        nodes[1].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        pump(now, &mut nodes);
        // Node 0 goes silent: the announce lookup reaches nobody.
        let mut a = nodes.remove(1);
        let key = Key::from_bytes([9; 20]);
        a.handle_command(now, DhtCommand::Announce(key));
        let mut events = Vec::new();
        for _ in 0..30 {
            drain(&mut a);
            now += Duration::from_secs(2);
            a.handle_timeout(now);
            events.extend(drain(&mut a).1);
            if events.iter().any(|e| matches!(e, DhtEvent::Announced { .. })) {
                break;
            }
        }
        assert!(events.contains(&DhtEvent::Announced { key, stored: 0 }), "{events:?}");
        assert_eq!(a.publisher.store_phases(), 0, "a store phase was left behind");
    }

    #[test]
    fn bad_replies_are_dropped_counted_and_reported() {
        let now = crate::sim::epoch();
        let mut a = node(1, DhtConfig::default());
        let b = contact(2);
        a.handle_command(now, DhtCommand::Bootstrap(vec![b.addr]));
        let (sent, _) = drain(&mut a);
        let [(to, find)] = sent.as_slice() else {
            panic!("one bootstrap request expected: {sent:?}");
        };
        assert_eq!(*to, b.addr);
        let nodes = DhtBody::Nodes { contacts: vec![] };
        a.handle_datagram(now, b.addr, request(b, find.tx ^ 1, nodes.clone()));
        a.handle_datagram(now, contact(3).addr, request(b, find.tx, nodes));
        a.handle_datagram(now, b.addr, request(b, find.tx, DhtBody::Pong));
        a.handle_datagram(now, b.addr, request(contact(1), 7, DhtBody::Ping));
        let stats = a.stats().clone();
        assert_eq!(stats.responses_unknown_tx, 1);
        assert_eq!(stats.responses_wrong_source, 1);
        assert_eq!(stats.responses_mismatched, 1);
        assert_eq!(stats.responses_accepted, 0);
        let mut contacts: Vec<Contact> = (10..40).map(contact).collect();
        contacts[0].addr.set_port(0);
        a.handle_datagram(now, b.addr, request(b, find.tx, DhtBody::Nodes { contacts }));
        assert_eq!(a.stats().responses_accepted, 1);
        let (_, events) = drain(&mut a);
        let misbehaviors: Vec<Misbehavior> = events
            .iter()
            .filter_map(|e| match e {
                DhtEvent::PeerMisbehaved { misbehavior, .. } => Some(*misbehavior),
                _ => None,
            })
            .collect();
        assert_eq!(
            misbehaviors,
            vec![
                Misbehavior::WrongReplyKind,
                Misbehavior::LocalIdClaimed,
                Misbehavior::ListTooLong,
                Misbehavior::InvalidContact
            ]
        );
        assert!(a.table().contains(&b));
    }

    #[test]
    fn rate_limit_applies_before_anything_else() {
        let now = crate::sim::epoch();
        let config = DhtConfig::default();
        let burst = config.source_burst_messages as usize;
        let mut a = node(1, config);
        for tx in 0..1_000 {
            a.handle_datagram(now, contact(2).addr, request(contact(2), tx, DhtBody::Ping));
        }
        assert_eq!(a.stats().rate_limited, 1_000 - burst as u64);
        assert_eq!(a.stats().requests_answered, burst as u64);
        let later = now + Duration::from_secs(1);
        a.handle_datagram(later, contact(2).addr, request(contact(2), 0, DhtBody::Ping));
        assert_eq!(a.stats().requests_answered, burst as u64 + 1, "tokens refill");
    }

    #[test]
    fn flood_from_many_sources_stays_bounded() {
        let now = crate::sim::epoch();
        let config = DhtConfig {
            provider_records_max: 100,
            transmits_queued_max: 50,
            events_queued_max: 20,
            rate_limited_sources_max: 64,
            ..DhtConfig::default()
        };
        let mut a = node(0, config);
        for n in 1..5_000u16 {
            let from = contact(n);
            let key = Key::from_bytes([n as u8; 20]);
            let body = DhtBody::AnnounceProvider { key, provider: from };
            a.handle_datagram(now, from.addr, request(from, u64::from(n), body));
            let foreign = DhtBody::AnnounceProvider { key, provider: contact(n + 1) };
            a.handle_datagram(now, from.addr, request(from, 0, foreign));
        }
        assert_eq!(a.stored_records(), 100);
        assert_eq!(a.stats().provider_records_stored, 100);
        assert!(a.stats().transmits_dropped > 0);
        assert!(a.stats().events_dropped > 0);
        a.assert_invariants();
        let (sent, events) = drain(&mut a);
        assert_eq!(sent.len(), 50);
        assert_eq!(events.len(), 20);
        assert!(a.stats().rate_limited > 0, "sources beyond 64 share one bucket");
    }

    /// The tx of the ping `a` sent to `to`, if one is queued (drains `a`).
    fn ping_to(a: &mut Dht, to: SocketAddr) -> Option<u64> {
        let (sent, _) = drain(a);
        sent.iter().find(|(dest, m)| *dest == to && m.body == DhtBody::Ping).map(|(_, m)| m.tx)
    }

    /// `c` sends `a` a request, then answers the ping that checks it exists.
    fn introduce(now: Instant, a: &mut Dht, c: Contact) {
        a.handle_datagram(now, c.addr, request(c, 1, DhtBody::Ping));
        let tx = ping_to(a, c.addr).expect("the newcomer is pinged");
        assert!(!a.table().contains(&c), "in the table before answering");
        a.handle_datagram(now, c.addr, request(c, tx, DhtBody::Pong));
    }

    #[test]
    fn lrs_is_evicted_only_after_failing_its_ping() {
        let now = crate::sim::epoch();
        // Every contact counts as silent at once, so a newcomer to a full bucket is checked.
        let config =
            DhtConfig { k: 1, contact_recheck_after: Duration::ZERO, ..DhtConfig::default() };
        let rpc_timeout = config.rpc_timeout;
        let mut a = node(0x0000, config);
        let (x, y) = (contact(0x8000), contact(0x8001));
        introduce(now, &mut a, x);
        assert!(a.table().contains(&x));
        introduce(now, &mut a, y);
        let ping = ping_to(&mut a, x.addr).expect("LRS pinged");
        assert!(a.table().contains(&x) && !a.table().contains(&y));
        // x answers: it stays, y waits.
        a.handle_datagram(now, x.addr, request(x, ping, DhtBody::Pong));
        assert!(a.table().contains(&x) && !a.table().contains(&y));
        // y again: x pinged again, and this time stays silent through the resend.
        introduce(now, &mut a, y);
        let mut t = now;
        for _ in 0..3 {
            t += rpc_timeout;
            a.handle_timeout(t);
        }
        assert!(!a.table().contains(&x) && a.table().contains(&y));
        assert_eq!(a.stats().contacts_evicted, 1);
        assert_eq!(a.stats().rpcs_resent, 1);
    }

    /// Issue 12 item 10: a real request replayed with one bit flipped in the sender id (or
    /// sent from an address where nothing answers) must not put a contact in the table.
    #[test]
    fn forged_senders_never_enter_the_table() {
        let mut now = crate::sim::epoch();
        let quiet = DhtConfig { read_only: true, ..DhtConfig::default() };
        let mut nodes = vec![node(0, DhtConfig::default()), node(1, DhtConfig::default())];
        nodes.push(node(2, quiet));
        nodes[1].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        pump(now, &mut nodes);
        assert!(nodes[0].table().contains(&contact(1)), "a genuine node gets in");
        // Node 1's request replayed with one bit of its id flipped, from the address of
        // node 2 (which node 0 does not know): node 2 answers the check with its own id.
        let mut flipped = *contact(1).id.as_bytes();
        flipped[19] ^= 1;
        let forged = Contact { id: NodeId::from_bytes(flipped), addr: contact(2).addr };
        let find = DhtBody::FindNode { target: forged.id };
        nodes[0].handle_datagram(now, forged.addr, request(forged, 5, find.clone()));
        pump(now, &mut nodes);
        // The same from an address where nothing answers.
        let ghost = Contact { id: NodeId::from_bytes(flipped), addr: contact(77).addr };
        nodes[0].handle_datagram(now, ghost.addr, request(ghost, 6, find));
        for _ in 0..4 {
            pump(now, &mut nodes);
            now += Duration::from_secs(1);
            for n in &mut nodes {
                n.handle_timeout(now);
            }
        }
        let table = nodes[0].snapshot();
        assert_eq!(table, vec![contact(1)], "only the genuine node");
        assert_eq!(nodes[0].stats().contacts_verify_pings, 3);
        assert_eq!(nodes[0].stats().contacts_evicted, 0, "the genuine one was never evicted");
        nodes[0].assert_invariants();
    }

    /// The stale-contact rule: a contact that stops answering is evicted even if this node
    /// never queries it; one that keeps answering stays.
    #[test]
    fn contacts_that_stop_answering_are_evicted() {
        let mut now = crate::sim::epoch();
        // No bucket refreshes: nothing but the recheck can notice the dead contact.
        let day = Duration::from_secs(24 * 3600);
        let config = DhtConfig { bucket_refresh_interval: day, ..DhtConfig::default() };
        let mut nodes: Vec<Dht> = (0..3).map(|n| node(n, config.clone())).collect();
        for i in 1..3 {
            nodes[i].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
            pump(now, &mut nodes);
        }
        assert_eq!(nodes[0].table().len(), 2);
        // Node 2 dies. Time passes with node 0 never looking anything up.
        let dead = nodes.pop().expect("node 2");
        let end = now + config.contact_recheck_after * 3;
        while now < end {
            now += Duration::from_secs(1);
            for n in &mut nodes {
                n.handle_timeout(now);
            }
            pump(now, &mut nodes);
        }
        assert_eq!(nodes[0].snapshot(), vec![contact(1)], "the dead contact was evicted");
        assert_eq!(nodes[0].stats().contacts_evicted, 1);
        // Node 1 was checked twice (at 15 and 30 min) and stayed, node 2 once.
        assert_eq!(nodes[0].stats().contacts_recheck_pings, 3, "rechecks");
        assert!(!nodes[1].snapshot().contains(&dead.local()));
    }

    /// Lets `nodes` run for `secs` seconds of virtual time (timers and deliveries).
    fn settle(now: &mut Instant, nodes: &mut [Dht], secs: u64) {
        for _ in 0..secs * 10 {
            *now += Duration::from_millis(100);
            for n in nodes.iter_mut() {
                n.handle_timeout(*now);
            }
            pump(*now, nodes);
        }
    }

    /// Providers of `key` found by a new read-only client that joins through `via`.
    fn find_via(now: Instant, nodes: &mut Vec<Dht>, via: usize, key: Key) -> Vec<Contact> {
        let config = DhtConfig { read_only: true, ..DhtConfig::default() };
        nodes.push(node(100, config));
        let c = nodes.len() - 1;
        nodes[c].handle_command(now, DhtCommand::Bootstrap(vec![contact(via as u16).addr]));
        pump(now, nodes);
        nodes[c].handle_command(now, DhtCommand::FindProviders(key));
        let events = pump(now, nodes);
        nodes.pop();
        events
            .into_iter()
            .find_map(|e| match e {
                DhtEvent::ProvidersFound { providers, .. } => Some(providers),
                _ => None,
            })
            .expect("lookup finished")
    }

    /// Issue 12 item 1: a provider is found through it alone, through any node of two or
    /// three, before and after the others restart, whatever the order of announcing and
    /// joining; and its announcement reaches the nodes that join after it.
    #[test]
    fn a_provider_is_found_in_networks_of_one_two_and_three() {
        let mut now = crate::sim::epoch();
        let key = Key::from_bytes([9; 20]);
        // One node, announcing before anyone else exists.
        let mut nodes = vec![node(0, DhtConfig::default())];
        nodes[0].handle_command(now, DhtCommand::Announce(key));
        settle(&mut now, &mut nodes, 1);
        assert_eq!(find_via(now, &mut nodes, 0, key), vec![contact(0)], "network of one");
        for n in 1..3u16 {
            nodes.push(node(n, DhtConfig::default()));
            let last = nodes.len() - 1;
            nodes[last].handle_command(now, DhtCommand::Bootstrap(vec![contact(n - 1).addr]));
            settle(&mut now, &mut nodes, 2);
            let stored: Vec<usize> = nodes.iter().map(Dht::stored_records).collect();
            assert!(stored[1..].iter().all(|&s| s == 1), "{} nodes: {stored:?}", n + 1);
            for via in 0..nodes.len() {
                let found = find_via(now, &mut nodes, via, key);
                assert_eq!(found, vec![contact(0)], "{} nodes", n + 1);
            }
            // Every other node restarts (records and all in memory lost).
            for i in 1..nodes.len() {
                let saved = nodes[i].snapshot();
                nodes[i] = node(i as u16, DhtConfig::default());
                nodes[i].handle_command(now, DhtCommand::Restore(saved));
                settle(&mut now, &mut nodes, 1);
            }
            assert!(nodes[1..].iter().all(|n| n.stored_records() == 0));
            for via in 0..nodes.len() {
                let found = find_via(now, &mut nodes, via, key);
                assert_eq!(found, vec![contact(0)], "{} nodes, after restarts", n + 1);
            }
        }
    }

    #[test]
    fn a_provider_that_does_not_know_its_address_is_found_where_it_answers() {
        let now = crate::sim::epoch();
        let key = Key::from_bytes([9; 20]);
        let real = contact(0).addr;
        // Bound to 0.0.0.0: the node names itself with an unspecified address.
        let unspecified = Contact { addr: "0.0.0.0:4000".parse().expect("addr"), ..contact(0) };
        let mut provider = Dht::new(DhtConfig::default(), unspecified, 0);
        provider.handle_command(now, DhtCommand::Announce(key));
        let config = DhtConfig { read_only: true, ..DhtConfig::default() };
        let mut client = node(1, config);
        client.handle_command(now, DhtCommand::Bootstrap(vec![real]));
        let mut events = Vec::new();
        for _ in 0..4 {
            for (_, msg) in drain(&mut client).0 {
                provider.handle_datagram(now, client.local().addr, msg);
            }
            for (_, msg) in drain(&mut provider).0 {
                client.handle_datagram(now, real, msg);
            }
            let (_, evs) = drain(&mut client);
            for e in evs {
                if matches!(e, DhtEvent::Bootstrapped { .. }) {
                    client.handle_command(now, DhtCommand::FindProviders(key));
                }
                events.push(e);
            }
        }
        let found = events.iter().find_map(|e| match e {
            DhtEvent::ProvidersFound { providers, .. } => Some(providers.clone()),
            _ => None,
        });
        assert_eq!(found, Some(vec![contact(0)]), "{events:?}");
    }

    #[test]
    fn pending_rpcs_are_bounded_and_lookups_still_finish() {
        let now = crate::sim::epoch();
        let config =
            DhtConfig { rpcs_inflight_max: 4, lookups_inflight_max: 8, ..DhtConfig::default() };
        let mut a = node(0, config);
        let known: Vec<Contact> = (1..40).map(contact).collect();
        a.handle_command(now, DhtCommand::Restore(known));
        for n in 0..10u8 {
            a.handle_command(now, DhtCommand::FindNode(NodeId::from_bytes([n; 20])));
        }
        let mut t = now;
        let mut events = Vec::new();
        while let Some(at) = a.poll_timeout().filter(|at| *at < now + Duration::from_secs(600)) {
            a.assert_invariants();
            t = t.max(at);
            a.handle_timeout(t);
            events.extend(drain(&mut a).1);
        }
        let finished =
            events.iter().filter(|e| matches!(e, DhtEvent::LookupFinished { .. })).count();
        let rejected = events.iter().filter(|e| matches!(e, DhtEvent::Rejected(_))).count();
        assert_eq!(rejected, 3, "1 bootstrap + 10 lookups against a bound of 8");
        assert_eq!(finished, 7);
        assert!(a.stats().rpcs_deferred > 0);
        assert!(a.table().is_empty(), "silent contacts were evicted");
    }

    #[test]
    fn restore_rejoins_through_saved_contacts() {
        let now = crate::sim::epoch();
        let mut nodes: Vec<Dht> = (0..3).map(|n| node(n, DhtConfig::default())).collect();
        nodes[1].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        nodes[2].handle_command(now, DhtCommand::Bootstrap(vec![contact(0).addr]));
        pump(now, &mut nodes);
        let saved = nodes[2].snapshot();
        assert_eq!(saved.len(), 2);
        nodes[2] = node(2, DhtConfig::default());
        nodes[2].handle_command(now, DhtCommand::Restore(saved));
        let events = pump(now, &mut nodes);
        assert!(events.contains(&DhtEvent::Bootstrapped { table_len: 2 }), "{events:?}");
    }
}
