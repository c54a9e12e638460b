//! The DHT on a node: one UDP socket on the node's address, driving the sans-IO
//! [`crate::dht::Dht`].
//!
//! In `seed`, shard 0 owns the DHT (control plane: a few datagrams per second, no reason to
//! spread it). It binds UDP on the same address and port as the TCP listeners, so one
//! `HOST:PORT` names a node for both, announces every published file, answers queries and
//! saves its routing table so a restart rejoins without a bootstrap. Other shards never
//! touch it; when they need it (swarm downloads) they will send it commands over a channel.
//!
//! `get --bootstrap` and the `dht` operator commands run a short-lived client node on an
//! ephemeral port with the same driver.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::UdpSocket;
use serde::Serialize;

use super::clock::{self, now_unix};
use super::run_local;
use super::secure::NodeSecurity;
use crate::config::{NodeConfig, DHT_EVENTS_QUEUED_MAX, DHT_PING_TIMEOUT, DHT_PING_TRIES};
use crate::crypto::handshake::NETWORK_TAG_BYTES;
use crate::crypto::{
    network_tag, sign_provider_record, verify_network_tag, verify_provider_record, Certificate,
    NetworkSecret,
};
use crate::dht::{
    Contact, Dht, DhtBody, DhtCommand, DhtConfig, DhtEvent, DhtMessage, Key, LookupStats, NodeId,
};
use crate::storage::write_atomic;
use crate::throttle::Throttle;
use crate::wire::{self, provider_addr_bytes, AnnounceProof, DHT_DATAGRAM_MAX_BYTES};

/// Why a DHT operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot bind a UDP socket on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("no DHT node answered at {0}")]
    NoAnswer(String),
    #[error("DHT lookup did not finish within {0:?}")]
    Timeout(Duration),
    #[error("cannot start the DHT executor: {0}")]
    Executor(io::Error),
}

/// The DHT configuration for a node bound to `ip`: loopback-only nodes lift the per-IP caps
/// (every node there shares 127.0.0.1); everything else keeps them.
pub fn config_for(ip: IpAddr) -> DhtConfig {
    if ip.is_loopback() {
        DhtConfig::default().for_loopback()
    } else {
        DhtConfig::default()
    }
}

/// Counters of the glue (the core counts the rest in `DhtStats`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DhtNodeStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Datagrams that failed decoding (dropped before the core saw them).
    pub bad_datagrams: u64,
    pub send_errors: u64,
    /// Datagrams dropped because their network tag did not verify (a node outside this
    /// private network, or a public node talking to a private one).
    pub wrong_network: u64,
    /// `AnnounceProvider`s dropped because the provider's signature, certificate or node ID
    /// did not verify: forged or unsigned provider records.
    pub announcements_rejected: u64,
    /// `AnnounceProvider`s dropped unverified because the verification budget
    /// (`NodeConfig::dht_announce_verifications_per_s`) was spent: a flood.
    pub announcements_throttled: u64,
    pub table_len: usize,
    pub provider_records: usize,
    pub announcements: u64,
    /// Pings sent to nodes that sent a request, before they may enter the routing table
    /// (`DhtStats::contacts_verify_pings`).
    pub contacts_verify_pings: u64,
    /// Contacts evicted from the routing table after failing to answer.
    pub contacts_evicted: u64,
    /// Requests answered, by type.
    pub rpcs_answered: crate::dht::RpcCounts,
    /// Requests sent, by type.
    pub rpcs_sent: crate::dht::RpcCounts,
    /// Requests that got no answer after their resends.
    pub rpcs_failed: u64,
    /// Lookups started (all purposes: joins, refreshes, announcements, queries).
    pub lookups: u64,
    /// Lookups that ended with no node having answered.
    pub lookups_failed: u64,
    /// Provided keys waiting in the paced announcement queue.
    pub announcement_backlog: usize,
}

/// What secures a node's datagrams: the private network's secret (a tag on every
/// datagram), and for a node that announces, the identity that signs its provider records.
#[derive(Clone, Default)]
struct DhtAuth {
    network: Option<NetworkSecret>,
    signer: Option<Arc<NodeSecurity>>,
}

/// Appends the network tag (private networks only).
fn seal_datagram(buf: &mut Vec<u8>, network: Option<&NetworkSecret>) {
    if let Some(secret) = network {
        let tag = network_tag(secret, buf);
        buf.extend_from_slice(&tag);
    }
}

/// Strips and checks the network tag; `None`: not from this network.
fn open_datagram<'a>(datagram: &'a [u8], network: Option<&NetworkSecret>) -> Option<&'a [u8]> {
    let Some(secret) = network else { return Some(datagram) };
    let split = datagram.len().checked_sub(NETWORK_TAG_BYTES)?;
    let (body, tag) = datagram.split_at(split);
    verify_network_tag(secret, body, tag).then_some(body)
}

/// Checks that an `AnnounceProvider` was signed by the provider itself: a certificate that
/// verifies (RSA public key → node ID), names the provider's node ID, and whose session key
/// signed this key, this address and this expiry. Forged, replayed-elsewhere and unsigned
/// records fail.
fn verify_announce(
    msg: &DhtMessage,
    from: SocketAddr,
    proof: Option<&AnnounceProof>,
    now: u64,
    ttl_max: u64,
) -> Result<(), &'static str> {
    let DhtBody::AnnounceProvider { key, provider } = &msg.body else { return Ok(()) };
    let proof = proof.ok_or("unsigned")?;
    if *provider != msg.sender {
        return Err("provider is not the sender");
    }
    // The record is stored under the address the datagram came from, so the signed address
    // must be that one: a signed record replayed from elsewhere is refused. A node bound to
    // an unspecified address (0.0.0.0) does not know its own IP and signs the port only.
    let same_ip = provider.addr.ip().is_unspecified() || provider.addr.ip() == from.ip();
    if !same_ip || provider.addr.port() != from.port() {
        return Err("signed for another address");
    }
    if proof.expires > now.saturating_add(ttl_max) {
        return Err("expiry too far ahead");
    }
    let cert = Certificate::from_bytes(&proof.certificate)
        .and_then(|c| c.verify(now))
        .map_err(|_| "certificate does not verify")?;
    if cert.node_id() != provider.id {
        return Err("certificate of another node");
    }
    let addr = provider_addr_bytes(provider.addr);
    verify_provider_record(&cert, key.as_bytes(), &addr, proof.expires, &proof.signature, now)
        .map_err(|_| "signature does not verify")?;
    Ok(())
}

/// A sans-IO core plus its socket.
struct Driver {
    dht: RefCell<Dht>,
    socket: UdpSocket,
    events: RefCell<VecDeque<DhtEvent>>,
    stats: RefCell<DhtNodeStats>,
    auth: DhtAuth,
    provider_ttl_secs: u64,
    /// Announcement verifications per second (`NodeConfig::dht_announce_verifications_per_s`).
    verify_budget: Throttle,
    /// `NodeConfig::dht_tick_ms`.
    tick: Duration,
}

impl Driver {
    fn new(
        socket: UdpSocket,
        dht: Dht,
        auth: DhtAuth,
        provider_ttl_secs: u64,
        knobs: &NodeConfig,
    ) -> Rc<Self> {
        Rc::new(Self {
            dht: RefCell::new(dht),
            socket,
            events: RefCell::new(VecDeque::new()),
            stats: RefCell::new(DhtNodeStats::default()),
            auth,
            provider_ttl_secs,
            verify_budget: {
                let per_s = u64::from(knobs.dht_announce_verifications_per_s);
                Throttle::new(per_s, per_s, clock::now())
            },
            tick: knobs.dht_tick(),
        })
    }

    /// Our signature on an announcement of ourselves.
    fn proof_for(&self, msg: &DhtMessage) -> Option<AnnounceProof> {
        let DhtBody::AnnounceProvider { key, provider } = &msg.body else { return None };
        let session = self.auth.signer.as_ref()?.session();
        let expires = now_unix() + self.provider_ttl_secs;
        let addr = provider_addr_bytes(provider.addr);
        let signature = sign_provider_record(&session, key.as_bytes(), &addr, expires);
        Some(AnnounceProof {
            certificate: session.certificate_bytes().to_vec(),
            expires,
            signature,
        })
    }

    fn command(&self, cmd: DhtCommand) {
        self.dht.borrow_mut().handle_command(clock::now(), cmd);
    }

    /// Runs due timers, sends everything queued and collects events.
    async fn pump(&self) {
        {
            let mut dht = self.dht.borrow_mut();
            let now = clock::now();
            if dht.poll_timeout().is_some_and(|t| t <= now) {
                dht.handle_timeout(now);
            }
        }
        let out: Vec<(SocketAddr, DhtMessage)> =
            std::iter::from_fn(|| self.dht.borrow_mut().poll_transmit()).collect();
        let mut buf = Vec::with_capacity(DHT_DATAGRAM_MAX_BYTES);
        for (addr, msg) in out {
            let proof = self.proof_for(&msg);
            wire::encode_dht_proved(&msg, proof.as_ref(), &mut buf);
            seal_datagram(&mut buf, self.auth.network.as_ref());
            let sent = self.socket.send_to(&buf, addr).await;
            let mut st = self.stats.borrow_mut();
            match sent {
                Ok(_) => st.datagrams_out += 1,
                Err(_) => st.send_errors += 1,
            }
        }
        let mut dht = self.dht.borrow_mut();
        let mut events = self.events.borrow_mut();
        while let Some(ev) = dht.poll_event() {
            if let DhtEvent::Announced { .. } = ev {
                self.stats.borrow_mut().announcements += 1;
            }
            events.push_back(ev);
        }
        // Nobody reads events on a seeder except for counting: keep the queue bounded.
        while events.len() > DHT_EVENTS_QUEUED_MAX {
            events.pop_front();
        }
    }

    /// Receives datagrams forever (one long-lived receive future: dropping a pending
    /// `recv_from` could lose a datagram). Runs as its own task.
    async fn receive(self: Rc<Self>) {
        let mut buf = vec![0u8; DHT_DATAGRAM_MAX_BYTES + NETWORK_TAG_BYTES + 1];
        loop {
            let Ok((n, from)) = self.socket.recv_from(&mut buf).await else {
                glommio::timer::sleep(self.tick).await;
                continue;
            };
            self.stats.borrow_mut().datagrams_in += 1;
            // Cheapest check first: outsiders of a private network are dropped unread.
            let Some(datagram) = open_datagram(&buf[..n], self.auth.network.as_ref()) else {
                self.stats.borrow_mut().wrong_network += 1;
                continue;
            };
            match wire::decode_dht_proved(datagram) {
                Ok((msg, proof)) => {
                    // The per-IP rate limit first, so one source cannot spend the node-wide
                    // verification budget.
                    if !self.dht.borrow_mut().admit(clock::now(), from) {
                        continue;
                    }
                    if matches!(msg.body, DhtBody::AnnounceProvider { .. }) {
                        if !self.verify_budget.try_take(clock::now(), 1) {
                            self.stats.borrow_mut().announcements_throttled += 1;
                            continue;
                        }
                        let ttl_max = 2 * self.provider_ttl_secs;
                        let checked =
                            verify_announce(&msg, from, proof.as_ref(), now_unix(), ttl_max);
                        if checked.is_err() {
                            self.stats.borrow_mut().announcements_rejected += 1;
                            continue;
                        }
                    }
                    self.dht.borrow_mut().handle_admitted(clock::now(), from, msg);
                    // Answer now rather than at the next tick.
                    self.pump().await;
                }
                Err(_) => self.stats.borrow_mut().bad_datagrams += 1,
            }
        }
    }

    /// Pumps every tick until `done` says stop. (Datagrams are answered as they arrive by
    /// the receive task; the tick serves timers and commands.)
    async fn run_until(&self, mut done: impl FnMut(&Self) -> bool) {
        loop {
            self.pump().await;
            if done(self) {
                return;
            }
            glommio::timer::sleep(self.tick).await;
        }
    }

    fn snapshot_stats(&self) -> DhtNodeStats {
        let dht = self.dht.borrow();
        let mut st = self.stats.borrow().clone();
        st.table_len = dht.table().len();
        st.provider_records = dht.stored_records();
        st.contacts_verify_pings = dht.stats().contacts_verify_pings;
        st.contacts_evicted = dht.stats().contacts_evicted;
        st.rpcs_answered = dht.stats().requests_by_type;
        st.rpcs_sent = dht.stats().rpcs_sent_by_type;
        st.rpcs_failed = dht.stats().rpcs_failed;
        st.lookups = dht.stats().lookups_started;
        st.lookups_failed = dht.stats().lookups_failed;
        st.announcement_backlog = dht.announcement_backlog();
        st
    }
}

/// What a seeder's DHT does. Its node ID, network secret and announcement signatures come
/// from the seeder's `NodeSecurity`.
#[derive(Debug, Clone)]
pub struct DhtServerOptions {
    pub bootstrap: Vec<SocketAddr>,
    /// Where the routing table is saved and restored from.
    pub table_path: Option<PathBuf>,
    /// Keys this node provides (one per published file).
    pub provide: Vec<Key>,
    /// A client of the DHT only (BEP 43 read-only): it looks things up but answers no
    /// requests, enters no routing table and provides nothing. Always so for a node
    /// without a listen address (a `get` or `dht` command), whose UDP port is ephemeral.
    pub read_only: bool,
}

impl DhtServerOptions {
    /// A read-only client joining through `bootstrap`.
    pub fn client(bootstrap: Vec<SocketAddr>) -> Self {
        Self { bootstrap, table_path: None, provide: Vec::new(), read_only: true }
    }
}

/// Tries at resolving port 0 to a port free for both TCP and UDP.
const LISTEN_PORT_TRIES: usize = 16;

/// The address a seeder listens on: `listen` with port 0 resolved to a real port. Binds a
/// plain TCP listener once (no SO_REUSEPORT, so a port someone else holds is an error).
/// With the DHT on (`udp_too`), the DHT binds UDP on the same port, so port 0 resolves to
/// a port whose UDP twin is free as well (the kernel picks TCP and UDP ports separately:
/// a free TCP port can have its UDP twin held by another process's client socket).
pub(super) fn resolve_listen_addr(listen: SocketAddr, udp_too: bool) -> io::Result<SocketAddr> {
    for _ in 0..LISTEN_PORT_TRIES {
        let addr = std::net::TcpListener::bind(listen)?.local_addr()?;
        if !udp_too || listen.port() != 0 || std::net::UdpSocket::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no port is free for both TCP and UDP"))
}

/// Binds a client's DHT socket on an ephemeral port, on loopback if it talks to loopback.
pub(super) fn bind_client(toward: Option<SocketAddr>) -> Result<UdpSocket, DhtError> {
    let bind = client_bind_addr(toward.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))));
    UdpSocket::bind(bind).map_err(|e| DhtError::Bind { addr: bind, source: super::glommio_io(e) })
}

/// Binds the DHT socket of a seeder on `addr` (same address and port as its TCP listener).
pub(super) fn bind_server(addr: SocketAddr) -> Result<UdpSocket, DhtError> {
    super::sys::udp_socket(addr).map_err(|source| DhtError::Bind { addr, source })
}

/// What the node's handle asks of the DHT it runs (shard 0), handled at the next tick.
pub(super) enum DhtControl {
    /// Provide a key: announce it now and republish it until withdrawn (a file published
    /// while the node runs).
    Announce(Key),
    /// Stop republishing a key (an unpublished file); records elsewhere expire after the
    /// provider TTL.
    Withdraw(Key),
    /// A snapshot of the DHT's counters.
    Stats(flume::Sender<DhtNodeStats>),
    /// A lookup through this node's routing table; the answer is sent when it finishes.
    /// Lookups asked before the node has joined (its bootstrap lookup) wait for it.
    Query(DhtQuery, flume::Sender<Result<DhtAnswer, DhtError>>),
    /// Join again through the bootstrap nodes (they may know more nodes by now).
    Rejoin,
}

/// Runs a node's DHT until `stop`, taking commands from `control`, then saves the routing
/// table. Returns its counters.
pub(super) async fn serve(
    socket: UdpSocket,
    addr: SocketAddr,
    opts: DhtServerOptions,
    security: Arc<NodeSecurity>,
    control: flume::Receiver<DhtControl>,
    knobs: NodeConfig,
    stop: Arc<AtomicBool>,
) -> DhtNodeStats {
    // A read-only client is in nobody's table: a fresh random ID keeps it from mistaking a
    // node that runs with the same identity (a `seed` on the same data directory) for itself.
    let id = if opts.read_only { NodeId::from_bytes(clock::random()) } else { security.node_id() };
    let local = Contact { id, addr };
    let config = DhtConfig { read_only: opts.read_only, ..config_for(addr.ip()) };
    let ttl = config.provider_ttl.as_secs();
    let dht = Dht::new(config, local, clock::random());
    let auth = DhtAuth { network: security.network().cloned(), signer: Some(security) };
    let driver = Driver::new(socket, dht, auth, ttl, &knobs);
    let receiver = glommio::spawn_local(driver.clone().receive());
    let saved = opts.table_path.as_ref().and_then(|p| std::fs::read(p).ok());
    if let Some(contacts) = saved.and_then(|b| wire::decode_dht_table(&b).ok()) {
        if !contacts.is_empty() {
            driver.command(DhtCommand::Restore(contacts));
        }
    }
    // Until the first join finishes, lookups wait (a lookup through an empty table would
    // find nothing). With nothing to join through, there is nothing to wait for.
    let mut joined = true;
    if !opts.bootstrap.is_empty() {
        driver.command(DhtCommand::Bootstrap(opts.bootstrap.clone()));
        joined = false;
    } else if !driver.dht.borrow().table().is_empty() {
        joined = false;
    }
    if !opts.read_only {
        for key in &opts.provide {
            driver.command(DhtCommand::Announce(*key));
        }
    }
    let save = |driver: &Driver| {
        if let Some(p) = &opts.table_path {
            let table = wire::encode_dht_table(&driver.dht.borrow().snapshot());
            if let Err(e) = write_atomic(p, &table) {
                note!("furymesh seed: cannot save DHT table to {}: {e}", p.display());
            }
        }
    };
    let mut last_save = clock::now();
    // Lookups asked through the handle: waiting for the join, then running until their
    // event comes.
    let mut waiting: Vec<(DhtQuery, Reply)> = Vec::new();
    let mut pending: Vec<(DhtQuery, Reply)> = Vec::new();
    let names = || opts.bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let start = |d: &Driver, q: DhtQuery| {
        d.command(match q {
            DhtQuery::FindProviders(k) => DhtCommand::FindProviders(k),
            DhtQuery::FindNode(id) => DhtCommand::FindNode(id),
        });
    };
    driver
        .run_until(|d| {
            while let Ok(c) = control.try_recv() {
                match c {
                    DhtControl::Announce(key) if !opts.read_only => {
                        d.command(DhtCommand::Announce(key));
                    }
                    DhtControl::Announce(_) => {}
                    DhtControl::Withdraw(key) => d.command(DhtCommand::Withdraw(key)),
                    DhtControl::Stats(reply) => {
                        let _ = reply.send(d.snapshot_stats());
                    }
                    DhtControl::Query(q, reply) if joined => {
                        start(d, q);
                        pending.push((q, reply));
                    }
                    DhtControl::Query(q, reply) => waiting.push((q, reply)),
                    DhtControl::Rejoin if !opts.bootstrap.is_empty() => {
                        d.command(DhtCommand::Bootstrap(opts.bootstrap.clone()));
                    }
                    DhtControl::Rejoin => {}
                }
            }
            match answer_queries(d, &mut pending) {
                // Nobody answered the join: the lookups waiting for it fail clearly.
                Some(0) if !joined => {
                    for (_, reply) in waiting.drain(..) {
                        let _ = reply.send(Err(DhtError::NoAnswer(names())));
                    }
                }
                Some(_) if !joined => {
                    joined = true;
                    for (q, reply) in waiting.drain(..) {
                        start(d, q);
                        pending.push((q, reply));
                    }
                }
                _ => {}
            }
            if last_save.elapsed() >= knobs.dht_table_save_interval() {
                save(d);
                last_save = clock::now();
            }
            stop.load(Ordering::Relaxed)
        })
        .await;
    save(&driver);
    drop(receiver);
    driver.snapshot_stats()
}

/// Where a handle's lookup is answered.
type Reply = flume::Sender<Result<DhtAnswer, DhtError>>;

/// Answers the handle's lookups whose events have come (other events are only counted,
/// so the queue is drained here). Returns the table size after a join (bootstrap) that
/// finished, if one did.
fn answer_queries(d: &Driver, pending: &mut Vec<(DhtQuery, Reply)>) -> Option<usize> {
    let events: Vec<DhtEvent> = d.events.borrow_mut().drain(..).collect();
    let table_len = d.dht.borrow().table().len();
    let mut joined = None;
    for ev in events {
        let (found, contacts, s) = match ev {
            DhtEvent::Bootstrapped { table_len } => {
                joined = Some(table_len);
                continue;
            }
            DhtEvent::ProvidersFound { key, providers, stats } => {
                (DhtQuery::FindProviders(key), providers, stats)
            }
            DhtEvent::LookupFinished { target, closest, stats } => {
                (DhtQuery::FindNode(target), closest, stats)
            }
            _ => continue,
        };
        let answer = DhtAnswer {
            contacts: contacts.iter().map(ContactJson::from).collect(),
            rounds: s.rounds,
            requests_sent: s.requests_sent,
            responses_received: s.responses_received,
            table_len,
        };
        pending.retain(|(q, reply)| {
            if *q != found {
                return true;
            }
            let _ = reply.send(Ok(answer.clone()));
            false
        });
    }
    // Askers that gave up.
    pending.retain(|(_, reply)| !reply.is_disconnected());
    joined
}

/// A one-shot lookup through the DHT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhtQuery {
    FindProviders(Key),
    FindNode(NodeId),
}

/// What a one-shot lookup found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DhtAnswer {
    /// Providers (FindProviders) or the closest nodes (FindNode).
    pub contacts: Vec<ContactJson>,
    pub rounds: u32,
    pub requests_sent: u32,
    pub responses_received: u32,
    pub table_len: usize,
}

/// A contact as users see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactJson {
    pub node_id: String,
    /// `HOST:PORT`.
    #[schema(value_type = String)]
    pub addr: SocketAddr,
}

impl From<&Contact> for ContactJson {
    fn from(c: &Contact) -> Self {
        Self { node_id: c.id.to_string(), addr: c.addr }
    }
}

fn client_bind_addr(toward: SocketAddr) -> SocketAddr {
    let ip = match toward.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Joins the DHT through `bootstrap` as a short-lived client and runs `query` once (the
/// `dht find-providers|find-node` commands; a node asks its own DHT through its handle).
pub fn query(
    bootstrap: &[SocketAddr],
    query: DhtQuery,
    network: Option<NetworkSecret>,
    limit: Duration,
) -> Result<DhtAnswer, DhtError> {
    let first =
        *bootstrap.first().ok_or_else(|| DhtError::NoAnswer("(no bootstrap given)".into()))?;
    let bootstrap = bootstrap.to_vec();
    run_local(async move {
        let bind = client_bind_addr(first);
        let socket = UdpSocket::bind(bind)
            .map_err(|e| DhtError::Bind { addr: bind, source: super::glommio_io(e) })?;
        let local_addr = socket.local_addr().unwrap_or(bind);
        let local = Contact { id: NodeId::from_bytes(clock::random()), addr: local_addr };
        let config = DhtConfig { read_only: true, ..config_for(first.ip()) };
        let ttl = config.provider_ttl.as_secs();
        let auth = DhtAuth { network, signer: None };
        let dht = Dht::new(config, local, clock::random());
        let driver = Driver::new(socket, dht, auth, ttl, &NodeConfig::default());
        let _receiver = glommio::spawn_local(driver.clone().receive());
        driver.command(DhtCommand::Bootstrap(bootstrap.clone()));
        let deadline = clock::now() + limit;
        let mut answer: Option<Result<DhtAnswer, DhtError>> = None;
        let names = || bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        driver
            .run_until(|d| {
                while let Some(ev) = d.events.borrow_mut().pop_front() {
                    let table_len = d.dht.borrow().table().len();
                    let done = |contacts: &[Contact], s: LookupStats| {
                        Some(Ok(DhtAnswer {
                            contacts: contacts.iter().map(ContactJson::from).collect(),
                            rounds: s.rounds,
                            requests_sent: s.requests_sent,
                            responses_received: s.responses_received,
                            table_len,
                        }))
                    };
                    match ev {
                        DhtEvent::Bootstrapped { table_len: 0 } => {
                            answer = Some(Err(DhtError::NoAnswer(names())));
                        }
                        DhtEvent::Bootstrapped { .. } => d.dht.borrow_mut().handle_command(
                            clock::now(),
                            match query {
                                DhtQuery::FindProviders(k) => DhtCommand::FindProviders(k),
                                DhtQuery::FindNode(id) => DhtCommand::FindNode(id),
                            },
                        ),
                        DhtEvent::ProvidersFound { providers, stats, .. } => {
                            answer = done(&providers, stats);
                        }
                        DhtEvent::LookupFinished { target, closest, stats }
                            if matches!(query, DhtQuery::FindNode(t) if t == target) =>
                        {
                            answer = done(&closest, stats);
                        }
                        _ => {}
                    }
                }
                if answer.is_none() && clock::now() >= deadline {
                    answer = Some(Err(DhtError::Timeout(limit)));
                }
                answer.is_some()
            })
            .await;
        answer.unwrap_or(Err(DhtError::Timeout(limit)))
    })
    .map_err(DhtError::Executor)?
}

/// Result of a ping.
#[derive(Debug, Clone, Serialize)]
pub struct PingAnswer {
    pub node_id: String,
    pub addr: SocketAddr,
    pub rtt_ms: f64,
}

/// Sends a DHT PING to `addr` (up to `DHT_PING_TRIES` tries, `DHT_PING_TIMEOUT` each) and
/// waits for the PONG.
pub fn ping(addr: SocketAddr, network: Option<NetworkSecret>) -> Result<PingAnswer, DhtError> {
    run_local(async move {
        let bind = client_bind_addr(addr);
        let socket = UdpSocket::bind(bind)
            .map_err(|e| DhtError::Bind { addr: bind, source: super::glommio_io(e) })?;
        let me = Contact {
            id: NodeId::from_bytes(clock::random()),
            addr: socket.local_addr().unwrap_or(bind),
        };
        let mut buf = Vec::new();
        let mut rx = vec![0u8; DHT_DATAGRAM_MAX_BYTES + NETWORK_TAG_BYTES + 1];
        for _ in 0..DHT_PING_TRIES {
            let tx: u64 = clock::random();
            let ping = DhtMessage { tx, sender: me, body: DhtBody::Ping, read_only: true };
            wire::encode_dht(&ping, &mut buf);
            seal_datagram(&mut buf, network.as_ref());
            let started = clock::now();
            if socket.send_to(&buf, addr).await.is_err() {
                continue;
            }
            let deadline = started + DHT_PING_TIMEOUT;
            while let Some(left) = deadline.checked_duration_since(clock::now()) {
                // A pong that arrives after the timeout is useless, so dropping the pending
                // receive here loses nothing.
                let got = glommio::timer::timeout(left, socket.recv_from(&mut rx)).await;
                let Ok((n, from)) = got else { break };
                let Some(datagram) = open_datagram(&rx[..n], network.as_ref()) else { continue };
                match wire::decode_dht(datagram) {
                    Ok(m) if from == addr && m.tx == tx && m.body == DhtBody::Pong => {
                        return Ok(PingAnswer {
                            node_id: m.sender.id.to_string(),
                            addr,
                            rtt_ms: started.elapsed().as_secs_f64() * 1000.0,
                        });
                    }
                    _ => continue,
                }
            }
        }
        Err(DhtError::NoAnswer(addr.to_string()))
    })
    .map_err(DhtError::Executor)?
}
