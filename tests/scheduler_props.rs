//! Property tests of the swarm scheduler: random sequences of peer events against the
//! invariants the node relies on. Peers 0-2 are honest (they answer with good data or a
//! refusal), peers 3-4 may also send corrupt data or say nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use furymesh::transfer::{
    Bitfield, ConnId, Scheduler, SchedulerConfig, SchedulerEvent, Strategy as Order,
};
use proptest::prelude::*;

const PEERS: u32 = 5;
const HONEST: u32 = 3;
/// Joins at the end with every chunk and answers everything: the download must finish.
const SEEDER: ConnId = ConnId(100);

#[derive(Debug, Clone)]
enum Op {
    Add(u32),
    Remove(u32),
    Bitfield(u32, u64),
    Have(u32, u32),
    Poll(u32),
    /// Answer the oldest request to the peer: 0 verified, 1 refused, 2 corrupt, 3 silence
    /// (2 and 3 only for dishonest peers).
    Answer(u32, u8),
    /// Unsolicited events, chunk possibly out of range.
    Verified(u32, u32),
    Corrupt(u32, u32),
    Failed(u32, u32),
    Advance(u16),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0..PEERS + 1; // PEERS itself is never added: an unknown peer
    let chunk = 0u32..48;
    prop_oneof![
        2 => peer.clone().prop_map(Op::Add),
        1 => peer.clone().prop_map(Op::Remove),
        2 => (peer.clone(), any::<u64>()).prop_map(|(p, m)| Op::Bitfield(p, m)),
        2 => (peer.clone(), chunk.clone()).prop_map(|(p, c)| Op::Have(p, c)),
        6 => peer.clone().prop_map(Op::Poll),
        6 => (peer.clone(), 0u8..4).prop_map(|(p, o)| Op::Answer(p, o)),
        1 => (peer.clone(), chunk.clone()).prop_map(|(p, c)| Op::Verified(p, c)),
        1 => (HONEST..PEERS + 1, chunk.clone()).prop_map(|(p, c)| Op::Corrupt(p, c)),
        1 => (peer, chunk).prop_map(|(p, c)| Op::Failed(p, c)),
        2 => (0u16..3000).prop_map(Op::Advance),
        1 => Just(Op::Timeout),
    ]
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (
        prop_oneof![Just(Order::RarestFirst), Just(Order::RoundRobin)],
        1u32..4,
        0u32..5,
        1u32..4,
        (0u32..6, 1u32..4, 0u32..5),
        (1usize..5, 3usize..8),
    )
        .prop_map(|(strategy, window_min, extra, failures, (endgame, copies, slow), peers)| {
            SchedulerConfig {
                strategy,
                chunk_size_bytes: 4096,
                window_min,
                window_max: window_min + extra,
                failures_to_ban: failures,
                stall_timeout: Duration::from_secs(1),
                endgame_chunks: endgame,
                endgame_copies_max: copies,
                slow_peer_factor: slow,
                max_peers: peers.0.min(peers.1),
                peers_max: peers.1,
                ..SchedulerConfig::default()
            }
        })
}

/// What the test knows independently of the scheduler.
struct Model {
    n: u32,
    have: Bitfield,
    connected: BTreeMap<ConnId, bool>,
    /// What each connected peer told us it has.
    bits: BTreeMap<ConnId, Bitfield>,
    banned: Vec<ConnId>,
    asked: BTreeMap<ConnId, Vec<u32>>,
    completes: u32,
    /// Every output, in order: a replay with the same seed must produce the same.
    trace: Vec<String>,
}

impl Model {
    fn verified(&mut self, c: u32) {
        if c < self.n {
            self.have.set(c);
        }
    }
}

/// Drains cancels and events, checking what each event claims.
fn drain(s: &mut Scheduler, m: &mut Model) -> Result<(), TestCaseError> {
    while let Some((p, c)) = s.poll_cancel() {
        m.trace.push(format!("cancel {p:?} {c}"));
        if let Some(list) = m.asked.get_mut(&p) {
            list.retain(|&x| x != c);
        }
    }
    while let Some(e) = s.poll_event() {
        m.trace.push(format!("{e:?}"));
        match e {
            SchedulerEvent::Complete => {
                m.completes += 1;
                prop_assert_eq!(m.completes, 1, "Complete twice");
                prop_assert_eq!(m.have.count_ones(), m.n, "Complete with chunks missing");
            }
            SchedulerEvent::PeerBanned { peer, .. } => {
                prop_assert!(peer.0 >= HONEST && peer != SEEDER, "honest {:?} banned", peer);
                m.banned.push(peer);
                m.asked.remove(&peer);
            }
            SchedulerEvent::PeerStalled { .. } => {} // its requests come back as cancels
        }
    }
    prop_assert_eq!(s.is_complete(), m.have.count_ones() == m.n);
    Ok(())
}

/// Polls `peer` once and checks the answer against the model.
fn poll(
    s: &mut Scheduler,
    m: &mut Model,
    now: Instant,
    peer: ConnId,
) -> Result<Option<u32>, TestCaseError> {
    let before = s.peer_stats(peer);
    let got = s.poll_request(now, peer);
    m.trace.push(format!("poll {peer:?} {got:?}"));
    if let Some(c) = got {
        let before = before.expect("a request for an unknown peer");
        prop_assert!(c < m.n, "chunk {} out of range", c);
        prop_assert!(!m.have.get(c), "asked for chunk {} we have", c);
        prop_assert!(m.connected.get(&peer) == Some(&true), "request to a removed peer");
        prop_assert!(!m.banned.contains(&peer), "request to banned {:?}", peer);
        prop_assert!(m.bits.get(&peer).is_some_and(|b| b.get(c)), "{:?} lacks {}", peer, c);
        prop_assert!(before.in_flight < before.window, "window exceeded: {:?}", before);
        m.asked.entry(peer).or_default().push(c);
    }
    Ok(got)
}

fn mask_bits(n: u32, mask: u64) -> Bitfield {
    let mut b = Bitfield::new(n);
    (0..n).filter(|i| mask & (1 << (i % 64)) != 0).for_each(|i| b.set(i));
    b
}

fn run(
    config: SchedulerConfig,
    n: u32,
    initial: u64,
    seed: u64,
    ops: Vec<Op>,
) -> Result<Vec<String>, TestCaseError> {
    let have = mask_bits(n, initial & (initial >> 7)); // about a quarter already had
    let mut s = Scheduler::new(config.clone(), n, &have, seed);
    let mut m = Model {
        n,
        have,
        connected: BTreeMap::new(),
        bits: BTreeMap::new(),
        banned: Vec::new(),
        asked: BTreeMap::new(),
        completes: 0,
        trace: Vec::new(),
    };
    #[allow(clippy::disallowed_methods)] // the test's virtual epoch
    let mut now = Instant::now();
    for op in ops {
        match op {
            Op::Add(p) => {
                let id = ConnId(p);
                s.handle_peer_added(now, id);
                if s.peer_stats(id).is_some_and(|st| st.connected)
                    && m.connected.get(&id) != Some(&true)
                {
                    m.connected.insert(id, true);
                    m.bits.insert(id, Bitfield::new(n));
                }
                if s.peer_stats(id).is_some_and(|st| !st.banned) {
                    m.banned.retain(|&b| b != id); // evicted and re-added: a new peer
                }
            }
            Op::Remove(p) => {
                let id = ConnId(p);
                s.handle_peer_removed(now, id);
                m.connected.insert(id, false);
                m.bits.remove(&id);
                m.asked.remove(&id);
            }
            Op::Bitfield(p, mask) => {
                let id = ConnId(p);
                let b = mask_bits(n, mask);
                s.handle_bitfield(now, id, &b);
                if m.connected.get(&id) == Some(&true) && !m.banned.contains(&id) {
                    m.bits.insert(id, b);
                }
            }
            Op::Have(p, c) => {
                let id = ConnId(p);
                s.handle_have(now, id, c);
                if let Some(b) = m.bits.get_mut(&id) {
                    if c < n && !m.banned.contains(&id) {
                        b.set(c);
                    }
                }
            }
            Op::Poll(p) => {
                poll(&mut s, &mut m, now, ConnId(p))?;
            }
            Op::Answer(p, outcome) => {
                let id = ConnId(p);
                let honest = p < HONEST;
                let Some(c) =
                    m.asked.get_mut(&id).and_then(|l| (!l.is_empty()).then(|| l.remove(0)))
                else {
                    continue;
                };
                match (outcome, honest) {
                    (0, _) | (2 | 3, true) => {
                        s.handle_chunk_verified(now, id, c);
                        m.verified(c);
                    }
                    (1, _) => {
                        s.handle_request_failed(now, id, c);
                        if let Some(b) = m.bits.get_mut(&id) {
                            b.clear(c);
                        }
                    }
                    (2, false) => s.handle_chunk_corrupt(now, id, c),
                    _ => {} // silence
                }
            }
            Op::Verified(p, c) => {
                s.handle_chunk_verified(now, ConnId(p), c);
                m.verified(c);
            }
            Op::Corrupt(p, c) => s.handle_chunk_corrupt(now, ConnId(p), c),
            Op::Failed(p, c) => {
                let id = ConnId(p);
                s.handle_request_failed(now, id, c);
                if let Some(b) = m.bits.get_mut(&id) {
                    b.clear(c);
                }
            }
            Op::Advance(ms) => now += Duration::from_millis(ms.into()),
            Op::Timeout => {
                if let Some(t) = s.poll_timeout() {
                    now = now.max(t);
                }
                s.handle_timeout(now);
            }
        }
        drain(&mut s, &mut m)?;
        s.assert_invariants();
    }

    // Liveness: an honest seeder joins (making room if needed) and answers everything; the
    // others keep getting polled and never answer. The download must finish.
    let mut k = 0;
    loop {
        s.handle_peer_added(now, SEEDER);
        if s.peer_stats(SEEDER).is_some() {
            break;
        }
        s.handle_peer_removed(now, ConnId(k));
        m.connected.insert(ConnId(k), false);
        m.bits.remove(&ConnId(k));
        k += 1;
        prop_assert!(k <= PEERS + 1, "no room for the seeder");
    }
    let all = mask_bits(n, u64::MAX);
    s.handle_bitfield(now, SEEDER, &all);
    m.connected.insert(SEEDER, true);
    m.bits.insert(SEEDER, all);
    let rounds_max = 64 * (n + 16);
    let mut rounds = 0;
    while !s.is_complete() {
        rounds += 1;
        prop_assert!(rounds <= rounds_max, "no progress: {:?}", s.stats());
        for p in 0..=PEERS {
            while poll(&mut s, &mut m, now, ConnId(p))?.is_some() {}
        }
        let mut got = Vec::new();
        while let Some(c) = poll(&mut s, &mut m, now, SEEDER)? {
            got.push(c);
        }
        now += Duration::from_millis(10);
        for c in got {
            s.handle_chunk_verified(now, SEEDER, c);
            m.verified(c);
            m.asked.get_mut(&SEEDER).into_iter().for_each(|l| l.retain(|&x| x != c));
        }
        if let Some(t) = s.poll_timeout() {
            if t <= now {
                s.handle_timeout(now);
            } else if rounds % 8 == 0 {
                now = t;
                s.handle_timeout(now);
            }
        }
        drain(&mut s, &mut m)?;
        s.assert_invariants();
    }
    drain(&mut s, &mut m)?;
    prop_assert_eq!(m.completes, 1, "Complete must be emitted exactly once");
    prop_assert_eq!(s.poll_request(now, SEEDER), None);
    Ok(m.trace)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(
        config in config(),
        n in 0u32..40,
        initial in any::<u64>(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let first = run(config.clone(), n, initial, seed, ops.clone())?;
        let again = run(config, n, initial, seed, ops)?;
        prop_assert!(first == again, "same seed and inputs, different decisions");
    }
}
