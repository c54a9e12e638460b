//! Deterministic simulation of thousands of [`Dht`] nodes in one process.
//!
//! **Owns** a fake network (seeded latency and loss), a virtual clock and a scenario runner.
//! **May not touch** sockets, threads or the wall clock beyond [`epoch`]. Everything random
//! comes from one `u64` seed, so a failing run is replayed exactly from `SIM_SEED`.
//!
//! Events (datagram deliveries, node wake-ups, scheduled commands) sit in a queue ordered by
//! virtual time, then by insertion; the virtual `now` jumps to the next one (quinn's `Pair`
//! pattern, TigerBeetle's VOPR). Node `i` lives at `10.{i / 256}.{i % 256}.1:4000`, one node
//! per /24, so the routing table's IP caps do not bite — except Sybil nodes
//! ([`SimConfig::sybil_fraction`]), which an attacker runs from a few /24 networks
//! (`10.255.{subnet}.{host}`, more ports per host when they run out of hosts) and which
//! answer every lookup with lies.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::dht::{
    Contact, Dht, DhtBody, DhtCommand, DhtConfig, DhtEvent, DhtMessage, Key, NodeId,
    CONTACTS_PER_MESSAGE_MAX,
};

pub mod transfer;

/// The base of every virtual instant: the only read of the real clock in the simulation
/// (`std::time::Instant` has no other constructor), through `node::clock` like every other
/// read. Virtual time is `epoch() + offset`; no result depends on its value.
pub fn epoch() -> Instant {
    crate::node::clock::now()
}

/// Port every simulated node listens on.
const PORT: u16 = 4000;

/// Network faults and scenario shape. All randomness derives from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes (at most 65,280: 10.255.0.0/16 is the Sybils').
    pub nodes: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Smallest one-way delay.
    pub one_way_delay_min: Duration,
    /// Mean one-way delay; delays are `min` plus an exponential tail, capped at 10 × mean.
    pub one_way_delay_mean: Duration,
    /// Probability that a datagram is lost.
    pub packet_loss_probability: f64,
    /// Fraction of nodes that go silent (crash without a goodbye) after the announcements,
    /// before the provider lookups. Their entries stay in other nodes' tables.
    pub churn_fraction: f64,
    /// Fraction of nodes that never answer requests (they still send their own), from the
    /// start: behind a NAT, overloaded or free-riding.
    pub unresponsive_fraction: f64,
    /// Keys announced (by distinct random nodes), then looked up once each.
    pub keys: usize,
    /// Virtual time between two nodes joining.
    pub join_interval: Duration,
    /// Virtual time after the last join for refreshes to fill the tables.
    pub settle: Duration,
    /// Fraction of nodes run by one attacker (a Sybil attack), chosen at random among all
    /// but node 0: they join like everyone and answer pings truthfully (so they enter
    /// routing tables), but answer every `FindNode` and `GetProviders` with the Sybils
    /// closest to the target and no providers, and accept every announcement and drop it.
    pub sybil_fraction: f64,
    /// The /24 networks the Sybils' addresses come from.
    pub sybil_subnets: u8,
    /// Configuration of every node.
    pub dht: DhtConfig,
}

impl SimConfig {
    /// A scenario of `nodes` nodes with `churn_fraction` churn and defaults for the rest:
    /// 5–40 ms one-way delay, 1% loss, 2% unresponsive nodes.
    pub fn new(nodes: usize, churn_fraction: f64, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            one_way_delay_min: Duration::from_millis(5),
            one_way_delay_mean: Duration::from_millis(40),
            packet_loss_probability: 0.01,
            churn_fraction,
            unresponsive_fraction: 0.02,
            keys: 200,
            join_interval: Duration::from_millis(20),
            settle: Duration::from_secs(120),
            sybil_fraction: 0.0,
            sybil_subnets: 3,
            dht: DhtConfig::default(),
        }
    }
}

/// The address of simulated node `index`.
pub fn node_addr(index: usize) -> SocketAddr {
    // 10.255.0.0/16 is the Sybils' (`SYBIL_NET`): honest nodes stay below it.
    assert!(index < usize::from(SYBIL_NET) << 8, "at most 65,280 simulated nodes");
    let ip = Ipv4Addr::new(10, (index >> 8) as u8, (index & 0xff) as u8, 1);
    SocketAddr::new(IpAddr::V4(ip), PORT)
}

fn node_index(addr: &SocketAddr) -> Option<usize> {
    match addr.ip() {
        IpAddr::V4(ip) if addr.port() == PORT => {
            let [a, b, c, d] = ip.octets();
            (a == 10 && b != SYBIL_NET && d == 1).then_some((usize::from(b) << 8) | usize::from(c))
        }
        _ => None,
    }
}

/// The second octet of the Sybils' networks (`10.255.0.0/16`, never an honest node's).
const SYBIL_NET: u8 = 255;
/// Host addresses a Sybil network uses per port (`.1` to `.250`).
const SYBIL_HOSTS: usize = 250;

/// The address of the `j`-th Sybil, spread over `subnets` /24 networks.
fn sybil_addr(j: usize, subnets: u8) -> SocketAddr {
    let subnets = usize::from(subnets.max(1));
    let (subnet, slot) = (j % subnets, j / subnets);
    let host = (slot % SYBIL_HOSTS + 1) as u8;
    let port = PORT + 1 + (slot / SYBIL_HOSTS) as u16;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, SYBIL_NET, subnet as u8, host)), port)
}

/// The Sybil number of a Sybil address (inverse of [`sybil_addr`]).
fn sybil_number(addr: &SocketAddr, subnets: u8) -> Option<usize> {
    let IpAddr::V4(ip) = addr.ip() else { return None };
    let [a, b, subnet, host] = ip.octets();
    let port = addr.port().checked_sub(PORT + 1)?;
    let subnets = subnets.max(1);
    if a != 10
        || b != SYBIL_NET
        || subnet >= subnets
        || host == 0
        || usize::from(host) > SYBIL_HOSTS
    {
        return None;
    }
    let slot = usize::from(port) * SYBIL_HOSTS + usize::from(host) - 1;
    Some(slot * usize::from(subnets) + usize::from(subnet))
}

enum Action {
    Deliver { to: usize, from: SocketAddr, msg: DhtMessage },
    Wake(usize),
    Command(usize, DhtCommand),
}

/// An event queued for virtual time `at`; `seq` breaks ties in insertion order, so a run
/// replays exactly from its seed. Shared by the DHT and transfer simulations.
struct Scheduled<A> {
    at: Duration,
    seq: u64,
    action: A,
}

impl<A> PartialEq for Scheduled<A> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<A> Eq for Scheduled<A> {}

impl<A> PartialOrd for Scheduled<A> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<A> Ord for Scheduled<A> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct SimNode {
    dht: Dht,
    /// Run by the attacker (see [`SimConfig::sybil_fraction`]).
    sybil: bool,
    alive: bool,
    responsive: bool,
    wake_at: Option<Instant>,
}

/// A simulated network of DHT nodes on virtual time.
pub struct Sim {
    config: SimConfig,
    base: Instant,
    now: Duration,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<Scheduled<Action>>>,
    seq: u64,
    events: Vec<(usize, DhtEvent)>,
    /// Node index of each Sybil, by Sybil number.
    sybils: Vec<usize>,
    /// Lies told: lookup requests a Sybil answered.
    pub lies: u64,
    /// Datagrams handed to the network.
    pub datagrams_sent: u64,
    /// Datagrams lost or addressed to silent or unknown nodes.
    pub datagrams_dropped: u64,
}

impl Sim {
    /// Creates the nodes (none has joined yet).
    pub fn new(config: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        // Chosen from a stream of their own, so a run without Sybils is the run it was
        // before they existed.
        let mut sybils: Vec<usize> = (1..config.nodes).collect();
        let count = (config.sybil_fraction * config.nodes as f64) as usize;
        if count > 0 {
            let mut pick = SmallRng::seed_from_u64(config.seed ^ 0x5b11_a77a_c4e5);
            shuffle(&mut sybils, &mut pick);
        }
        sybils.truncate(count.min(sybils.len()));
        sybils.sort_unstable();
        let nodes = (0..config.nodes)
            .map(|index| {
                let mut id = [0u8; 20];
                rng.fill(&mut id[..]);
                let sybil = sybils.binary_search(&index);
                let addr = match sybil {
                    Ok(j) => sybil_addr(j, config.sybil_subnets),
                    Err(_) => node_addr(index),
                };
                let local = Contact { id: NodeId::from_bytes(id), addr };
                SimNode {
                    dht: Dht::new(config.dht.clone(), local, rng.random()),
                    sybil: sybil.is_ok(),
                    alive: true,
                    responsive: true,
                    wake_at: None,
                }
            })
            .collect();
        Self {
            config,
            base: epoch(),
            now: Duration::ZERO,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            events: Vec::new(),
            sybils,
            lies: 0,
            datagrams_sent: 0,
            datagrams_dropped: 0,
        }
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time since the simulation started (the offset [`Self::run_until`] takes).
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> &Dht {
        &self.nodes[index].dht
    }

    /// Node `index`'s address ([`node_addr`], or a Sybil network's).
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.nodes[index].dht.local().addr
    }

    /// Whether node `index` is a Sybil.
    pub fn is_sybil(&self, index: usize) -> bool {
        self.nodes[index].sybil
    }

    /// The node at `addr`, if any.
    fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        match node_index(addr) {
            Some(i) => (i < self.nodes.len() && !self.nodes[i].sybil).then_some(i),
            None => sybil_number(addr, self.config.sybil_subnets)
                .and_then(|j| self.sybils.get(j).copied()),
        }
    }

    /// Whether node `index` still runs.
    pub fn is_alive(&self, index: usize) -> bool {
        self.nodes[index].alive
    }

    /// Schedules `cmd` for node `index` after `delay`.
    pub fn command_after(&mut self, delay: Duration, index: usize, cmd: DhtCommand) {
        self.schedule(self.now + delay, Action::Command(index, cmd));
    }

    /// Node `index` stops sending, answering and waking (a crash without goodbye).
    pub fn silence(&mut self, index: usize) {
        self.nodes[index].alive = false;
    }

    /// Node `index` restarts: a new [`Dht`] with the same id and address, which has lost
    /// everything kept in memory (provider records, pending requests, announcements) and
    /// rejoins from the routing table it saved ([`DhtCommand::Restore`]), as `seed` does.
    /// Datagrams already in flight to it reach the new instance. A silenced node comes back.
    pub fn restart(&mut self, index: usize) {
        let local = self.nodes[index].dht.local();
        let saved = self.nodes[index].dht.snapshot();
        let config = self.nodes[index].dht.config().clone();
        let node = &mut self.nodes[index];
        node.dht = Dht::new(config, local, self.rng.random());
        node.alive = true;
        node.wake_at = None;
        if !saved.is_empty() {
            self.command_after(Duration::ZERO, index, DhtCommand::Restore(saved));
        }
    }

    /// Adds a read-only client node (as `get --bootstrap` runs) at the next free address;
    /// it joins nothing until given a command. Returns its index.
    pub fn add_client(&mut self) -> usize {
        let index = self.nodes.len();
        let mut id = [0u8; 20];
        self.rng.fill(&mut id[..]);
        let local = Contact { id: NodeId::from_bytes(id), addr: node_addr(index) };
        let config = DhtConfig { read_only: true, ..self.config.dht.clone() };
        let dht = Dht::new(config, local, self.rng.random());
        self.nodes.push(SimNode {
            dht,
            sybil: false,
            alive: true,
            responsive: true,
            wake_at: None,
        });
        index
    }

    /// Number of nodes, clients included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index` keeps sending its own requests but never answers others'.
    pub fn make_unresponsive(&mut self, index: usize) {
        self.nodes[index].responsive = false;
    }

    /// Events emitted since the last call, with the index of the node that emitted them.
    pub fn take_events(&mut self) -> Vec<(usize, DhtEvent)> {
        std::mem::take(&mut self.events)
    }

    /// Runs every scheduled action up to virtual offset `until`, then sets the clock there.
    pub fn run_until(&mut self, until: Duration) {
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= until) {
            let Some(Reverse(scheduled)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(scheduled.at);
            let now = self.now();
            match scheduled.action {
                Action::Deliver { to, from, msg } => {
                    let node = &mut self.nodes[to];
                    if !node.alive || (!node.responsive && msg.body.is_request()) {
                        self.datagrams_dropped += 1;
                        continue;
                    }
                    if node.sybil && msg.body.is_request() && !matches!(msg.body, DhtBody::Ping) {
                        self.lie(to, from, &msg);
                        continue;
                    }
                    node.dht.handle_datagram(now, from, msg);
                    self.flush(to);
                }
                Action::Wake(index) => {
                    let node = &mut self.nodes[index];
                    if !node.alive || node.wake_at != Some(now) {
                        continue; // stale wake-up: the node rescheduled since
                    }
                    node.wake_at = None;
                    node.dht.handle_timeout(now);
                    let next = node.dht.poll_timeout();
                    assert!(next.is_none_or(|at| at > now), "node {index} wants to spin");
                    self.flush(index);
                }
                Action::Command(index, cmd) => {
                    if self.nodes[index].alive {
                        self.nodes[index].dht.handle_command(now, cmd);
                        self.flush(index);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs `run_until(now + step)` until `done` holds or `limit` of virtual time passed.
    /// Returns whether `done` held.
    pub fn run_while(
        &mut self,
        step: Duration,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.run_until(self.now + step);
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Checks every live node's invariants (panics on a broken one).
    pub fn assert_invariants(&self) {
        for node in self.nodes.iter().filter(|n| n.alive) {
            node.dht.assert_invariants();
            let now = self.now();
            assert!(node.wake_at.is_none_or(|at| at >= now), "a due wake-up was skipped");
        }
    }

    /// Sybil `index` answers a lookup request from `from`: the Sybils closest to the target
    /// and no providers; an announcement is acknowledged and dropped.
    fn lie(&mut self, index: usize, from: SocketAddr, request: &DhtMessage) {
        let closest_sybils = |sim: &Self, target: &NodeId| {
            let mut c: Vec<Contact> =
                sim.sybils.iter().map(|&i| sim.nodes[i].dht.local()).collect();
            c.sort_by_key(|c| target.distance(&c.id));
            c.truncate(CONTACTS_PER_MESSAGE_MAX);
            c
        };
        let body = match &request.body {
            DhtBody::FindNode { target } => {
                DhtBody::Nodes { contacts: closest_sybils(self, target) }
            }
            DhtBody::GetProviders { key } => DhtBody::Providers {
                providers: Vec::new(),
                closer: closest_sybils(self, &key.target()),
            },
            DhtBody::AnnounceProvider { .. } => DhtBody::AnnounceAck { stored: true },
            _ => return,
        };
        self.lies += 1;
        let reply = DhtMessage {
            tx: request.tx,
            sender: self.nodes[index].dht.local(),
            body,
            read_only: false,
        };
        self.send(self.addr(index), from, reply);
    }

    /// Hands one datagram to the network: lost with the configured probability, else
    /// delivered after a sampled delay (dropped if nobody is at `to`).
    fn send(&mut self, from: SocketAddr, to: SocketAddr, msg: DhtMessage) {
        self.datagrams_sent += 1;
        let lost = self.rng.random_bool(self.config.packet_loss_probability);
        let Some(to) = self.index_of(&to).filter(|_| !lost) else {
            self.datagrams_dropped += 1;
            return;
        };
        let at = self.now + self.one_way_delay();
        self.schedule(at, Action::Deliver { to, from, msg });
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at, seq: self.seq, action }));
    }

    /// Moves node `index`'s output into the network and its event list, and re-arms its timer.
    fn flush(&mut self, index: usize) {
        let from = self.addr(index);
        while let Some((to, msg)) = self.nodes[index].dht.poll_transmit() {
            self.send(from, to, msg);
        }
        while let Some(event) = self.nodes[index].dht.poll_event() {
            self.events.push((index, event));
        }
        let next = self.nodes[index].dht.poll_timeout().map(|at| at.max(self.now()));
        if next.is_some() && next != self.nodes[index].wake_at {
            self.nodes[index].wake_at = next;
            if let Some(at) = next {
                self.schedule(at - self.base, Action::Wake(index));
            }
        }
    }

    fn one_way_delay(&mut self) -> Duration {
        let min = self.config.one_way_delay_min;
        let tail = self.config.one_way_delay_mean.saturating_sub(min).as_secs_f64();
        let u: f64 = self.rng.random();
        let sample =
            (-(1.0 - u).ln() * tail).min(10.0 * self.config.one_way_delay_mean.as_secs_f64());
        min + Duration::from_secs_f64(sample)
    }
}

/// Outcome of [`run_provider_scenario`].
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Provider lookups issued.
    pub lookups: usize,
    /// Lookups that found the key's announcer among the providers.
    pub successes: usize,
    /// Rounds of each finished provider lookup.
    pub rounds: Vec<u32>,
    /// Datagrams (requests sent plus replies received) of each finished provider lookup.
    pub messages: Vec<u32>,
    /// Nodes that stored each announcement.
    pub stored_per_announce: Vec<u32>,
    /// Mean routing-table size over live nodes before the lookups.
    pub table_len_mean: f64,
    /// Datagrams the network carried in the whole run.
    pub datagrams_sent: u64,
    /// Virtual time the run took.
    pub virtual_time: Duration,
}

impl SimReport {
    /// Fraction of provider lookups that found the provider.
    pub fn success_rate(&self) -> f64 {
        if self.lookups == 0 {
            return 0.0;
        }
        self.successes as f64 / self.lookups as f64
    }
}

/// The `p`-th percentile (0–100, nearest rank) of `values`; 0 if empty.
pub fn percentile(values: &[u32], p: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The standard experiment: nodes join one by one through node 0 and a random earlier
/// node, settle, `keys` random nodes announce one key each, `churn_fraction` of the other
/// nodes go silent, then one random live node per key looks its providers up.
pub fn run_provider_scenario(config: SimConfig) -> SimReport {
    let mut sim = Sim::new(config.clone());
    let n = config.nodes;
    let mut rng = SmallRng::seed_from_u64(config.seed ^ 0x5eed);

    // Roles: unresponsive nodes from the start; node 0 is the bootstrap node.
    // Sybils take no honest role (publisher, looker, churned or unresponsive node).
    let mut order: Vec<usize> = (1..n).filter(|&i| !sim.is_sybil(i)).collect();
    shuffle(&mut order, &mut rng);
    let unresponsive_count = (config.unresponsive_fraction * n as f64) as usize;
    let (unresponsive, rest) = order.split_at(unresponsive_count.min(order.len()));
    for &index in unresponsive {
        sim.make_unresponsive(index);
    }
    let mut candidates = rest.to_vec();

    for index in 1..n {
        let mut seeds = vec![node_addr(0)];
        if index > 1 {
            seeds.push(sim.addr(rng.random_range(1..index)));
        }
        sim.command_after(config.join_interval * index as u32, index, DhtCommand::Bootstrap(seeds));
    }
    let joined = config.join_interval * n as u32 + config.settle;
    sim.run_until(joined);
    sim.assert_invariants();

    // Announce one key from each of `keys` distinct responsive nodes.
    let keys = config.keys.min(candidates.len() / 2);
    let publishers: Vec<usize> = candidates.drain(..keys).collect();
    let mut announced: BTreeMap<Key, usize> = BTreeMap::new();
    for &publisher in &publishers {
        let mut key = [0u8; 20];
        rng.fill(&mut key[..]);
        let key = Key::from_bytes(key);
        announced.insert(key, publisher);
        sim.command_after(Duration::ZERO, publisher, DhtCommand::Announce(key));
    }
    let mut report = SimReport::default();
    let mut pending = keys;
    sim.run_while(Duration::from_secs(1), Duration::from_secs(120), |sim| {
        for (_, event) in sim.take_events() {
            if let DhtEvent::Announced { stored, .. } = event {
                report.stored_per_announce.push(stored);
                pending -= 1;
            }
        }
        pending == 0
    });

    // Churn: silence a fraction of all nodes, never a publisher or a looker.
    let lookers: Vec<usize> = candidates.drain(..keys.min(candidates.len())).collect();
    let churn_count = ((config.churn_fraction * n as f64) as usize).min(candidates.len());
    for &index in &candidates[..churn_count] {
        sim.silence(index);
    }
    let live: Vec<usize> = (0..n).filter(|&i| sim.is_alive(i)).collect();
    report.table_len_mean = live.iter().map(|&i| sim.node(i).table().len() as f64).sum::<f64>()
        / live.len().max(1) as f64;

    let mut expected: BTreeMap<(usize, Key), Contact> = BTreeMap::new();
    for (i, (key, publisher)) in announced.iter().enumerate() {
        let looker = lookers[i % lookers.len().max(1)];
        expected.insert((looker, *key), sim.node(*publisher).local());
        sim.command_after(
            Duration::from_millis(10 * i as u64),
            looker,
            DhtCommand::FindProviders(*key),
        );
    }
    report.lookups = expected.len();
    let mut pending = expected.len();
    sim.run_while(Duration::from_secs(1), Duration::from_secs(300), |sim| {
        for (index, event) in sim.take_events() {
            if let DhtEvent::ProvidersFound { key, providers, stats } = event {
                if let Some(provider) = expected.remove(&(index, key)) {
                    pending -= 1;
                    report.successes += usize::from(providers.contains(&provider));
                    report.rounds.push(stats.rounds);
                    report.messages.push(stats.requests_sent + stats.responses_received);
                }
            }
        }
        pending == 0
    });
    sim.assert_invariants();
    report.datagrams_sent = sim.datagrams_sent;
    report.virtual_time = sim.now;
    report
}

fn shuffle<T>(items: &mut [T], rng: &mut SmallRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_back_to_indices() {
        for index in [0, 1, 255, 256, 9_999, 65_279] {
            assert_eq!(node_index(&node_addr(index)), Some(index));
        }
        assert_eq!(node_index(&"10.0.0.2:4000".parse().expect("addr")), None);
    }

    #[test]
    fn sybil_addresses_map_back_and_share_three_subnets() {
        for j in [0, 1, 2, 3, 749, 750, 751, 5_000] {
            let a = sybil_addr(j, 3);
            assert_eq!(sybil_number(&a, 3), Some(j), "{a}");
            assert_eq!(node_index(&a), None, "{a}");
            let IpAddr::V4(ip) = a.ip() else { panic!("v4") };
            assert!(ip.octets()[2] < 3, "{a}");
        }
        assert_eq!(sybil_number(&node_addr(7), 3), None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[3, 1, 2], 50.0), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
        assert_eq!(percentile(&(1..=100).collect::<Vec<_>>(), 99.0), 99);
    }

    #[test]
    fn small_network_finds_providers() {
        let config =
            SimConfig { keys: 10, settle: Duration::from_secs(30), ..SimConfig::new(60, 0.2, 7) };
        let report = run_provider_scenario(config);
        assert_eq!(report.lookups, 10);
        assert_eq!(report.rounds.len(), 10, "every lookup finished");
        assert_eq!(report.successes, 10, "{report:?}");
    }
}
