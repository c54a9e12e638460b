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
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;
use serde::Serialize;

use super::clock::{self, now_unix};
use super::run_local;
use super::secure::NodeSecurity;
use super::transport::webrtc::Endpoint;
use super::wake::Notify;
use crate::config::{
    NodeConfig, DHT_EVENTS_QUEUED_MAX, DHT_PING_TIMEOUT, DHT_PING_TRIES, DHT_SIGNAL_KEEPALIVE,
    DHT_SIGNAL_PENDING_MAX, DHT_SIGNAL_RELAYS, DHT_SIGNAL_RELAYS_PER_S, DHT_SIGNAL_RELAY_TIMEOUT,
    DHT_SIGNAL_TIMEOUT,
};
use crate::crypto::handshake::NETWORK_TAG_BYTES;
use crate::crypto::signal::{SignalPayload, SignalResponder};
use crate::crypto::{
    network_tag, sign_provider_record, sign_provider_transports, verify_network_tag,
    verify_provider_record, verify_provider_transports, Certificate, NetworkSecret,
};
use crate::dht::{
    Contact, Dht, DhtBody, DhtCommand, DhtConfig, DhtEvent, DhtMessage, Key, LookupStats, NodeId,
    Transports,
};
use crate::storage::write_atomic;
use crate::throttle::Throttle;
use crate::wire::{
    self, provider_addr_bytes, AnnounceProof, DhtDatagram, DhtExtras, SignalKind, SignalPacket,
    SignedTransports, DHT_DATAGRAM_MAX_BYTES,
};

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
    /// WebRTC signals passed on to their target as a relay.
    pub signals_relayed: u64,
    /// Signals a relay answered "not relayed": target unknown, relay budget or pending
    /// table full.
    pub signals_not_relayed: u64,
    /// Signaling messages for this node answered (Hellos and offers).
    pub signals_answered: u64,
    /// Signaling messages for this node refused: malformed, stale, replayed, wrong target,
    /// certificate or signature not verifying, undecryptable, or no WebRTC here.
    pub signals_refused: u64,
    /// Hellos dropped unverified because the verification budget was spent.
    pub signals_throttled: u64,
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
    transports: Option<&SignedTransports>,
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
    // an unspecified address (0.0.0.0) knows neither the IP nor the port its NAT shows (a
    // symmetric NAT gives its DHT socket a new port toward every node): its record stands
    // for whatever address it is seen from. Holding it to its bound port would refuse every
    // node behind such a NAT and stop no replay (a replayer picks its source port).
    if !provider.addr.ip().is_unspecified() && provider.addr != from {
        return Err("signed for another address");
    }
    if proof.expires > now.saturating_add(ttl_max) {
        return Err("expiry too far ahead");
    }
    let cert =
        Certificate::from_bytes(&proof.certificate).map_err(|_| "certificate does not verify")?;
    // Another node's certificate is refused by its key's hash, before the RSA check.
    if cert.claimed_node_id() != provider.id {
        return Err("certificate of another node");
    }
    let cert = cert.verify(now).map_err(|_| "certificate does not verify")?;
    let addr = provider_addr_bytes(provider.addr);
    verify_provider_record(&cert, key.as_bytes(), &addr, proof.expires, &proof.signature, now)
        .map_err(|_| "signature does not verify")?;
    if let Some(t) = transports {
        let (flags, port) = (t.transports.flags(), t.transports.webrtc_port);
        verify_provider_transports(
            &cert,
            key.as_bytes(),
            &addr,
            proof.expires,
            flags,
            port,
            &t.signature,
        )
        .map_err(|_| "transports signature does not verify")?;
    }
    Ok(())
}

/// A signal a relay passed on, waiting for the target's reply.
struct Forward {
    /// Who asked, and the transaction ID its answer must carry.
    asker: SocketAddr,
    asker_tx: u64,
    /// Where the target is (its reply must come from there).
    target: SocketAddr,
    deadline: Instant,
}

/// What a node that accepts WebRTC answers signals with: its endpoint for signaled
/// sessions (shard 0, a socket of its own) and what its records advertise.
pub(super) struct SignalSetup {
    pub(super) endpoint: Rc<Endpoint>,
    pub(super) transports: Transports,
}

/// How long the receive task waits after a failed `recv_from` before the next (a socket
/// error is not expected; this keeps one from spinning the shard).
const RECV_RETRY: Duration = Duration::from_millis(20);
/// The least the driver sleeps when a deadline is already past (see `Driver::run_until`).
const DEADLINE_SLACK: Duration = Duration::from_millis(1);

/// Transports remembered per provider node (from verified announcements and from replies).
const KNOWN_TRANSPORTS_MAX: usize = 4096;

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
    /// Raised by the receive task after every datagram it handled and by every command:
    /// the driver's loop sleeps until this, a control message or the next deadline.
    kick: Notify,
    /// What this node's records advertise (TCP only without `--webrtc`).
    transports: Transports,
    /// Transports of other providers: verified with their announcements, or as a reply
    /// said. Bounded by `KNOWN_TRANSPORTS_MAX` (cleared when full).
    known_transports: RefCell<HashMap<NodeId, Transports>>,
    /// The WebRTC endpoint signaled sessions are answered on, and the responder that
    /// checks Hellos and offers for it (a node with `--webrtc` and an identity).
    endpoint: Option<Rc<Endpoint>>,
    responder: RefCell<Option<SignalResponder>>,
    /// Signals relayed, by the transaction ID sent to the target.
    forwards: RefCell<HashMap<u64, Forward>>,
    /// This node's own signals in flight: transaction ID → (relay, where its answer goes).
    asked: RefCell<HashMap<u64, (SocketAddr, flume::Sender<SignalPacket>)>>,
    /// Signals relayed per second (`DHT_SIGNAL_RELAYS_PER_S`).
    relay_budget: Throttle,
}

impl Driver {
    fn new(
        socket: UdpSocket,
        dht: Dht,
        auth: DhtAuth,
        provider_ttl_secs: u64,
        knobs: &NodeConfig,
        signal: Option<SignalSetup>,
    ) -> Rc<Self> {
        let responder = match (&signal, &auth.signer) {
            (Some(_), Some(sec)) => Some(SignalResponder::new(sec.session())),
            _ => None,
        };
        let transports = signal.as_ref().map_or_else(Transports::default, |s| s.transports);
        Rc::new(Self {
            transports,
            known_transports: RefCell::default(),
            endpoint: signal.map(|s| s.endpoint),
            responder: RefCell::new(responder),
            forwards: RefCell::default(),
            asked: RefCell::default(),
            relay_budget: Throttle::new(
                DHT_SIGNAL_RELAYS_PER_S,
                DHT_SIGNAL_RELAYS_PER_S,
                clock::now(),
            ),
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
            kick: Notify::default(),
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

    /// Our signature on the transports an announcement of ourselves advertises. Only when
    /// they are not the default (TCP only): a TCP seeder's announcement stays as it was.
    fn transports_for(&self, msg: &DhtMessage, proof: &AnnounceProof) -> Option<SignedTransports> {
        let DhtBody::AnnounceProvider { key, provider } = &msg.body else { return None };
        if self.transports == Transports::default() {
            return None;
        }
        let session = self.auth.signer.as_ref()?.session();
        let t = self.transports;
        let addr = provider_addr_bytes(provider.addr);
        let signature = sign_provider_transports(
            &session,
            key.as_bytes(),
            &addr,
            proof.expires,
            t.flags(),
            t.webrtc_port,
        );
        Some(SignedTransports { transports: t, signature })
    }

    /// The extras a datagram carries: signed transports on our announcements, the
    /// transports of a reply's providers.
    fn extras_for(&self, msg: &DhtMessage, proof: Option<&AnnounceProof>) -> DhtExtras {
        let mut extras = DhtExtras::default();
        match &msg.body {
            DhtBody::AnnounceProvider { .. } => {
                extras.transports = proof.and_then(|p| self.transports_for(msg, p));
            }
            DhtBody::Providers { providers, .. } => {
                let me = self.dht.borrow().local().id;
                let known = self.known_transports.borrow();
                extras.providers_transports = providers
                    .iter()
                    .map(|p| {
                        if p.id == me {
                            self.transports
                        } else {
                            known.get(&p.id).copied().unwrap_or_default()
                        }
                    })
                    .collect();
            }
            _ => {}
        }
        extras
    }

    fn learn_transports(&self, id: NodeId, t: Transports) {
        let mut known = self.known_transports.borrow_mut();
        if known.len() >= KNOWN_TRANSPORTS_MAX && !known.contains_key(&id) {
            known.clear();
        }
        known.insert(id, t);
    }

    /// What a provider offers, as far as this node knows (TCP only if unknown).
    fn transports_of(&self, id: &NodeId) -> Transports {
        self.known_transports.borrow().get(id).copied().unwrap_or_default()
    }

    /// Hands a command to the core; the driver's loop sends what it queued.
    fn command(&self, cmd: DhtCommand) {
        self.dht.borrow_mut().handle_command(clock::now(), cmd);
        self.kick.notify();
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
            let extras = self.extras_for(&msg, proof.as_ref());
            wire::encode_dht_with(&msg, proof.as_ref(), &extras, &mut buf);
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
                glommio::timer::sleep(RECV_RETRY).await;
                continue;
            };
            self.stats.borrow_mut().datagrams_in += 1;
            self.handle_datagram(&buf[..n], from).await;
            // Whatever the datagram did (a lookup step, a join finished, nothing), the
            // driver's loop looks at it now, after its events were queued.
            self.kick.notify();
        }
    }

    /// Checks one datagram and hands it to the core (or the signaling code), sending what
    /// it answers.
    async fn handle_datagram(&self, datagram: &[u8], from: SocketAddr) {
        // Cheapest check first: outsiders of a private network are dropped unread.
        let Some(datagram) = open_datagram(datagram, self.auth.network.as_ref()) else {
            self.stats.borrow_mut().wrong_network += 1;
            return;
        };
        match wire::decode_dht_datagram(datagram) {
            Ok(DhtDatagram::Core { msg, proof, extras }) => {
                // The per-IP rate limit first, so one source cannot spend the node-wide
                // verification budget.
                if !self.dht.borrow_mut().admit(clock::now(), from) {
                    return;
                }
                if let DhtBody::AnnounceProvider { provider, .. } = &msg.body {
                    if !self.verify_budget.try_take(clock::now(), 1) {
                        self.stats.borrow_mut().announcements_throttled += 1;
                        return;
                    }
                    let ttl_max = 2 * self.provider_ttl_secs;
                    let signed = extras.transports.as_ref();
                    let checked =
                        verify_announce(&msg, from, proof.as_ref(), signed, now_unix(), ttl_max);
                    if let Err(why) = checked {
                        tracing::debug!("dht: announcement from {from} refused: {why}");
                        self.stats.borrow_mut().announcements_rejected += 1;
                        return;
                    }
                    let t = extras.transports.map_or_else(Transports::default, |t| t.transports);
                    self.learn_transports(provider.id, t);
                }
                if let DhtBody::Providers { providers, .. } = &msg.body {
                    for (p, t) in providers.iter().zip(&extras.providers_transports) {
                        self.learn_transports(p.id, *t);
                    }
                }
                self.dht.borrow_mut().handle_admitted(clock::now(), from, msg);
                // Answer now, from this task.
                self.pump().await;
            }
            Ok(DhtDatagram::Signal(p)) => {
                if !self.dht.borrow_mut().admit(clock::now(), from) {
                    return;
                }
                for (to, packet) in self.on_signal(from, p) {
                    self.send_signal(to, &packet).await;
                }
            }
            Err(_) => self.stats.borrow_mut().bad_datagrams += 1,
        }
    }

    async fn send_signal(&self, to: SocketAddr, p: &SignalPacket) {
        let mut buf = Vec::with_capacity(DHT_DATAGRAM_MAX_BYTES);
        wire::encode_signal(p, &mut buf);
        seal_datagram(&mut buf, self.auth.network.as_ref());
        let sent = self.socket.send_to(&buf, to).await;
        let mut st = self.stats.borrow_mut();
        match sent {
            Ok(_) => st.datagrams_out += 1,
            Err(_) => st.send_errors += 1,
        }
    }

    /// Handles a signaling datagram (already admitted by the per-IP rate limit) and returns
    /// what to send: as the target, the reply; as a relay, the message passed on to the
    /// target, or the target's reply passed back; as the asker, nothing (the answer goes to
    /// whoever waits for it).
    fn on_signal(&self, from: SocketAddr, p: SignalPacket) -> Vec<(SocketAddr, SignalPacket)> {
        let now = clock::now();
        let me = self.dht.borrow().local();
        let reply = |kind, signal: Option<Vec<u8>>| SignalPacket {
            tx: p.tx,
            sender: me,
            kind,
            target: p.target,
            relayed: signal.is_some(),
            signal: signal.unwrap_or_default(),
        };
        self.forwards.borrow_mut().retain(|_, f| f.deadline > now);
        match p.kind {
            SignalKind::Signal if p.target == me.id => {
                vec![(from, reply(SignalKind::Answer, self.respond(&p.signal)))]
            }
            SignalKind::Signal => {
                if self.dht.borrow().config().read_only {
                    return Vec::new();
                }
                let target = self.dht.borrow().table().get(&p.target);
                let room = self.forwards.borrow().len() < DHT_SIGNAL_PENDING_MAX;
                let target = target.filter(|_| room && self.relay_budget.try_take(now, 1));
                let Some(target) = target else {
                    self.stats.borrow_mut().signals_not_relayed += 1;
                    return vec![(from, reply(SignalKind::Answer, None))];
                };
                let tx: u64 = clock::random();
                let forward = Forward {
                    asker: from,
                    asker_tx: p.tx,
                    target: target.addr,
                    deadline: now + DHT_SIGNAL_RELAY_TIMEOUT,
                };
                self.forwards.borrow_mut().insert(tx, forward);
                self.stats.borrow_mut().signals_relayed += 1;
                let deliver = SignalPacket { tx, sender: me, kind: SignalKind::Deliver, ..p };
                vec![(target.addr, deliver)]
            }
            SignalKind::Deliver if p.target == me.id => {
                vec![(from, reply(SignalKind::Delivered, self.respond(&p.signal)))]
            }
            SignalKind::Deliver => Vec::new(),
            SignalKind::Delivered => {
                let mut forwards = self.forwards.borrow_mut();
                // Only the target's own reply, from where the message went.
                if forwards.get(&p.tx).is_none_or(|f| f.target != from) {
                    return Vec::new();
                }
                let Some(f) = forwards.remove(&p.tx) else { return Vec::new() };
                let answer =
                    SignalPacket { tx: f.asker_tx, sender: me, kind: SignalKind::Answer, ..p };
                vec![(f.asker, answer)]
            }
            SignalKind::Answer => {
                let mut asked = self.asked.borrow_mut();
                if asked.get(&p.tx).is_some_and(|(relay, _)| *relay == from) {
                    if let Some((_, waiter)) = asked.remove(&p.tx) {
                        let _ = waiter.try_send(p);
                    }
                }
                Vec::new()
            }
        }
    }

    /// This node's reply to a signaling message for it (`crypto::signal`): a HelloReply,
    /// or the sealed answer of the session its endpoint opened for an offer. `None`:
    /// refused, counted.
    fn respond(&self, message: &[u8]) -> Option<Vec<u8>> {
        let out = self.try_respond(message);
        let mut st = self.stats.borrow_mut();
        match out {
            Ok(m) => {
                st.signals_answered += 1;
                Some(m)
            }
            Err(true) => {
                st.signals_throttled += 1;
                None
            }
            Err(false) => {
                st.signals_refused += 1;
                None
            }
        }
    }

    /// `Err(true)`: over the verification budget; `Err(false)`: refused.
    fn try_respond(&self, message: &[u8]) -> Result<Vec<u8>, bool> {
        let mut responder = self.responder.borrow_mut();
        let (Some(responder), Some(sec), Some(ep)) =
            (responder.as_mut(), self.auth.signer.as_ref(), self.endpoint.as_ref())
        else {
            return Err(false);
        };
        responder.set_session(sec.session());
        if SignalResponder::is_hello(message) {
            // A Hello costs a certificate check (RSA verify): the same budget as
            // announcements.
            if !self.verify_budget.try_take(clock::now(), 1) {
                return Err(true);
            }
            let random: [u8; 32] = clock::random();
            return responder.handle_hello(message, now_unix(), random).map_err(|_| false);
        }
        let offer = responder.open_offer(message).map_err(|_| false)?;
        let (sdp, candidates) = match offer.payload.browser {
            // A browser's offer, vouched for by the node that signed it (it serves the
            // browser's share page): a browser session. Never on a private network, whose
            // secret a browser cannot prove (ARCHITECTURE.md, "Browser peers").
            Some(_) if self.auth.network.is_some() => return Err(false),
            Some(client) => ep.answer_browser(&offer.payload.sdp, client).ok_or(false)?,
            None => ep
                .answer_signaled(&offer.payload.candidates, offer.payload.sdp.clone())
                .ok_or(false)?,
        };
        let answer = SignalPayload { candidates, sdp, browser: None };
        responder.seal_answer(&offer, &answer).ok_or(false)
    }

    /// Sends `message` toward node `target` through `relays` in turn (each tried twice,
    /// `DHT_SIGNAL_TIMEOUT` apart) until one passes it on and brings the target's reply.
    /// Returns the relay that did and the reply.
    async fn signal_through(
        &self,
        target: NodeId,
        relays: &[SocketAddr],
        message: &[u8],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let me = self.dht.borrow().local();
        for &relay in relays {
            for _ in 0..2 {
                let tx: u64 = clock::random();
                let (answered, answer) = flume::bounded(1);
                self.asked.borrow_mut().insert(tx, (relay, answered));
                let p = SignalPacket {
                    tx,
                    sender: me,
                    kind: SignalKind::Signal,
                    target,
                    signal: message.to_vec(),
                    relayed: false,
                };
                self.send_signal(relay, &p).await;
                let wait = async { answer.recv_async().await.ok() };
                let expire = async {
                    glommio::timer::sleep(DHT_SIGNAL_TIMEOUT).await;
                    None
                };
                let got = future::or(wait, expire).await;
                self.asked.borrow_mut().remove(&tx);
                match got {
                    Some(a) if a.relayed => return Some((relay, a.signal)),
                    // Not relayed (target unknown there, or refused): the next relay.
                    Some(_) => break,
                    None => continue,
                }
            }
        }
        None
    }

    /// Serves the core until `step` says stop (`None`). Each round sends what the core
    /// queued, runs `step` (which reads events, takes control messages and issues
    /// commands — through [`Driver::command`], whose kick makes the next round send what
    /// they queued — and returns a deadline of its own, if any), then sleeps until the core's
    /// next deadline (`Dht::poll_timeout`), `step`'s, a datagram the receive task handled
    /// or a command ([`Driver::kick`]), or `woken` resolving (a control message). Nothing
    /// wakes it on a fixed period: an idle node's DHT sleeps until its next maintenance.
    async fn run_until<W: Future<Output = ()>>(
        &self,
        mut step: impl FnMut(&Self) -> Option<Option<Instant>>,
        mut woken: impl FnMut() -> W,
    ) {
        loop {
            self.pump().await;
            let Some(own) = step(self) else { return };
            let deadline = [self.dht.borrow().poll_timeout(), own].into_iter().flatten().min();
            let sleep = async {
                match deadline {
                    // A deadline already past sleeps a little: the core moves a deadline on
                    // when it handles it, and one it did not must not spin the shard.
                    Some(t) => {
                        let left = t.saturating_duration_since(clock::now());
                        glommio::timer::sleep(left.max(DEADLINE_SLACK)).await;
                    }
                    None => future::pending().await,
                }
            };
            future::or(future::or(self.kick.notified(), sleep), woken()).await;
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
    /// Send a sealed signaling message (`crypto::signal`) toward node `target`: through
    /// `relay` if given, else through the nodes closest to the target (found by a lookup),
    /// then the target itself. The reply names the relay that passed it on and carries the
    /// target's sealed reply.
    Signal {
        target: NodeId,
        relay: Option<SocketAddr>,
        message: Vec<u8>,
        reply: flume::Sender<Result<(SocketAddr, Vec<u8>), DhtError>>,
    },
}

/// Runs one [`DhtControl::Signal`] on the DHT's shard: the lookup (through the driver's
/// own control queue), then the relays in turn.
async fn signal_task(
    d: Rc<Driver>,
    queries: flume::Sender<DhtControl>,
    target: NodeId,
    relay: Option<SocketAddr>,
    message: Vec<u8>,
) -> Result<(SocketAddr, Vec<u8>), DhtError> {
    let relays = match relay {
        Some(r) => vec![r],
        None => {
            let (tx, rx) = flume::bounded(1);
            let _ = queries.send(DhtControl::Query(DhtQuery::FindNode(target), tx));
            let lost = || DhtError::NoAnswer(format!("no lookup of node {target}"));
            let answer = rx.recv_async().await.map_err(|_| lost())??;
            let name = target.to_string();
            // The target's closest nodes first: it keeps in touch with them, so they reach
            // it even behind a NAT. The target itself last (reachable only if direct).
            let mut relays: Vec<SocketAddr> = answer
                .contacts
                .iter()
                .filter(|c| c.node_id != name)
                .map(|c| c.addr)
                .take(DHT_SIGNAL_RELAYS)
                .collect();
            relays.extend(answer.contacts.iter().filter(|c| c.node_id == name).map(|c| c.addr));
            relays
        }
    };
    d.signal_through(target, &relays, &message).await.ok_or_else(|| {
        DhtError::NoAnswer(format!("node {target} (signaled through {} relays)", relays.len()))
    })
}

/// Runs a node's DHT until `stop` is closed (its sender dropped), taking commands from
/// `control` as they come, then saves the routing table. Returns its counters. Between
/// datagrams, control messages and the core's deadlines it sleeps.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    socket: UdpSocket,
    addr: SocketAddr,
    opts: DhtServerOptions,
    security: Arc<NodeSecurity>,
    control: flume::Receiver<DhtControl>,
    knobs: NodeConfig,
    stop: flume::Receiver<()>,
    signal: Option<SignalSetup>,
) -> DhtNodeStats {
    // A read-only client is in nobody's table: a fresh random ID keeps it from mistaking a
    // node that runs with the same identity (a `seed` on the same data directory) for itself.
    let id = if opts.read_only { NodeId::from_bytes(clock::random()) } else { security.node_id() };
    let local = Contact { id, addr };
    let config = DhtConfig { read_only: opts.read_only, ..config_for(addr.ip()) };
    let ttl = config.provider_ttl.as_secs();
    let dht = Dht::new(config, local, clock::random());
    let auth = DhtAuth { network: security.network().cloned(), signer: Some(security) };
    let signal = signal.filter(|_| !opts.read_only);
    let driver = Driver::new(socket, dht, auth, ttl, &knobs, signal);
    // The driver's own requests (a signal's lookup), handled like the handle's.
    let (own_tx, own_rx) = flume::unbounded::<DhtControl>();
    let own_id = id;
    let mut last_keepalive = clock::now();
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
    // The table as last saved: an idle node whose table did not change writes nothing.
    let saved: RefCell<Option<Vec<u8>>> = RefCell::new(None);
    let save = |driver: &Driver| {
        if let Some(p) = &opts.table_path {
            let table = wire::encode_dht_table(&driver.dht.borrow().snapshot());
            if saved.borrow().as_ref() == Some(&table) {
                return;
            }
            match write_atomic(p, &table) {
                Ok(()) => *saved.borrow_mut() = Some(table),
                Err(e) => note!("furymesh seed: cannot save DHT table to {}: {e}", p.display()),
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
    let driver2 = driver.clone();
    // Control messages taken by the wait (`woken`), handled by the next step.
    let taken: RefCell<VecDeque<DhtControl>> = RefCell::default();
    let (control_rx, own, stop_rx, taken_q) = (&control, &own_rx, &stop, &taken);
    let woken = move || async move {
        let stopped = async {
            let _ = stop_rx.recv_async().await;
            None
        };
        let control = future::or(recv_or_pending(control_rx), recv_or_pending(own));
        if let Some(c) = future::or(async { Some(control.await) }, stopped).await {
            taken_q.borrow_mut().push_back(c);
        }
    };
    driver
        .run_until(
            |d| {
                loop {
                    let next = taken.borrow_mut().pop_front();
                    let Some(c) =
                        next.or_else(|| control.try_recv().ok()).or_else(|| own_rx.try_recv().ok())
                    else {
                        break;
                    };
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
                        DhtControl::Signal { target, relay, message, reply } => {
                            let (d2, q) = (driver2.clone(), own_tx.clone());
                            glommio::spawn_local(async move {
                                let r = signal_task(d2, q, target, relay, message).await;
                                let _ = reply.send(r);
                            })
                            .detach();
                        }
                    }
                }
                // A node that answers signals keeps in touch with its closest nodes (its
                // relays): a lookup of itself contacts them, refreshing NAT mappings too.
                let keepalive = d.endpoint.is_some() && joined;
                if keepalive && last_keepalive.elapsed() >= DHT_SIGNAL_KEEPALIVE {
                    d.command(DhtCommand::FindNode(own_id));
                    last_keepalive = clock::now();
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
                if stop.is_disconnected() {
                    return None;
                }
                // This step's own deadlines: the next keepalive and the next save.
                let keepalive_at = keepalive.then(|| last_keepalive + DHT_SIGNAL_KEEPALIVE);
                let save_at =
                    opts.table_path.as_ref().map(|_| last_save + knobs.dht_table_save_interval());
                Some([keepalive_at, save_at].into_iter().flatten().min())
            },
            woken,
        )
        .await;
    save(&driver);
    drop(receiver);
    driver.snapshot_stats()
}

/// The next message of `rx`; never resolves once every sender is gone (a closed control
/// channel must not wake the driver over and over; the stop channel ends it).
async fn recv_or_pending<T>(rx: &flume::Receiver<T>) -> T {
    match rx.recv_async().await {
        Ok(m) => m,
        Err(_) => future::pending().await,
    }
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
            contacts: contacts
                .iter()
                .map(|c| ContactJson::with_transports(c, d.transports_of(&c.id)))
                .collect(),
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
    /// Whether it takes TCP connections on `addr` (as its provider record says; true when
    /// unknown).
    pub tcp: bool,
    /// Whether it takes WebRTC data channels, signaled through the DHT to `node_id`.
    pub webrtc: bool,
    /// Its WebRTC (UDP) port at `addr`'s IP, if reachable directly.
    pub webrtc_port: Option<u16>,
}

impl From<&Contact> for ContactJson {
    fn from(c: &Contact) -> Self {
        Self::with_transports(c, Transports::default())
    }
}

impl ContactJson {
    /// A contact with the transports its provider record advertises.
    pub fn with_transports(c: &Contact, t: Transports) -> Self {
        Self {
            node_id: c.id.to_string(),
            addr: c.addr,
            tcp: t.tcp,
            webrtc: t.webrtc,
            webrtc_port: (t.webrtc_port != 0).then_some(t.webrtc_port),
        }
    }

    /// The transports, back in the node's terms.
    pub fn transports(&self) -> Transports {
        Transports {
            tcp: self.tcp,
            webrtc: self.webrtc,
            webrtc_port: self.webrtc_port.unwrap_or(0),
        }
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
        let driver = Driver::new(socket, dht, auth, ttl, &NodeConfig::default(), None);
        let _receiver = glommio::spawn_local(driver.clone().receive());
        driver.command(DhtCommand::Bootstrap(bootstrap.clone()));
        let deadline = clock::now() + limit;
        let mut answer: Option<Result<DhtAnswer, DhtError>> = None;
        let names = || bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        driver
            .run_until(
                |d| {
                while let Some(ev) = d.events.borrow_mut().pop_front() {
                    let table_len = d.dht.borrow().table().len();
                    let done = |contacts: &[Contact], s: LookupStats| {
                        Some(Ok(DhtAnswer {
                            contacts: contacts
                                .iter()
                                .map(|c| ContactJson::with_transports(c, d.transports_of(&c.id)))
                                .collect(),
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
                        DhtEvent::Bootstrapped { .. } => d.command(match query {
                            DhtQuery::FindProviders(k) => DhtCommand::FindProviders(k),
                            DhtQuery::FindNode(id) => DhtCommand::FindNode(id),
                        }),
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
                answer.is_none().then_some(Some(deadline))
            },
                future::pending,
            )
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
