//! Deterministic DHT simulations sized for CI. Replay a failure with
//! `SIM_SEED=<seed> cargo test --features sim --test sim`.

use std::time::Duration;

use furymesh::dht::{Contact, DhtCommand, DhtEvent, Key};
use furymesh::sim::{node_addr, percentile, run_provider_scenario, Sim, SimConfig, SimReport};

/// Seeds to run: `SIM_SEED` if set, else fixed ones so CI is reproducible.
fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED must be a u64")],
        Err(_) => vec![1, 2, 3],
    }
}

/// Runs a scenario, printing the replay command first (the harness shows it on failure).
fn run(config: SimConfig) -> SimReport {
    eprintln!("SIM_SEED={} cargo test --features sim --test sim", config.seed);
    let report = run_provider_scenario(config);
    eprintln!(
        "success={:.3} rounds median={} p99={} messages median={} p99={} table_len_mean={:.1}",
        report.success_rate(),
        percentile(&report.rounds, 50.0),
        percentile(&report.rounds, 99.0),
        percentile(&report.messages, 50.0),
        percentile(&report.messages, 99.0),
        report.table_len_mean,
    );
    report
}

#[test]
fn provider_lookups_survive_20_percent_churn() {
    for seed in seeds() {
        let report = run(SimConfig { keys: 200, ..SimConfig::new(1_000, 0.2, seed) });
        assert_eq!(report.lookups, 200, "SIM_SEED={seed}");
        assert_eq!(report.rounds.len(), report.lookups, "every lookup finishes; SIM_SEED={seed}");
        assert!(
            report.success_rate() >= 0.99,
            "success {}; SIM_SEED={seed}",
            report.success_rate()
        );
        assert!(percentile(&report.rounds, 50.0) <= 4, "median rounds; SIM_SEED={seed}");
        let stored = percentile(&report.stored_per_announce, 50.0);
        assert!(
            stored >= 15,
            "announcements reach most of the k closest ({stored}); SIM_SEED={seed}"
        );
    }
}

/// Issue 17, "DHT under attack": a fifth of the network is one attacker's Sybils from three
/// /24 networks, answering every lookup with the Sybils closest to the target and no
/// providers, and dropping every announcement. The per-subnet cap keeps them to a few
/// table entries per node, so honest lookups still reach the key's honest neighbourhood.
#[test]
fn twenty_percent_lying_sybils_from_three_subnets_do_not_hide_providers() {
    for seed in seeds() {
        let config = SimConfig {
            keys: 200,
            sybil_fraction: 0.2,
            sybil_subnets: 3,
            ..SimConfig::new(1_000, 0.0, seed)
        };
        let report = run(config);
        assert_eq!(report.rounds.len(), report.lookups, "every lookup finishes; SIM_SEED={seed}");
        assert!(
            report.success_rate() >= 0.99,
            "success {}; SIM_SEED={seed}",
            report.success_rate()
        );
    }
}

#[test]
fn same_seed_same_run() {
    for seed in seeds() {
        let config = SimConfig {
            keys: 20,
            settle: Duration::from_secs(30),
            ..SimConfig::new(150, 0.3, seed)
        };
        let a = run(config.clone());
        let b = run(config);
        assert_eq!(a.rounds, b.rounds, "SIM_SEED={seed}");
        assert_eq!(a.messages, b.messages, "SIM_SEED={seed}");
        assert_eq!(a.datagrams_sent, b.datagrams_sent, "SIM_SEED={seed}");
    }
}

#[test]
fn heavy_churn_and_loss_keep_invariants() {
    for seed in seeds() {
        let report = run(SimConfig {
            keys: 50,
            packet_loss_probability: 0.05,
            unresponsive_fraction: 0.1,
            settle: Duration::from_secs(60),
            ..SimConfig::new(400, 0.4, seed)
        });
        // The run itself checks every node's invariants; lookups must all end, and most succeed.
        assert_eq!(report.rounds.len(), report.lookups, "every lookup finishes; SIM_SEED={seed}");
        assert!(
            report.success_rate() >= 0.95,
            "success {}; SIM_SEED={seed}",
            report.success_rate()
        );
    }
}

/// Looks `key` up from a new read-only client that joins through node `via` (what
/// `get --bootstrap` does) and returns the providers it found.
fn find_via(sim: &mut Sim, via: usize, key: Key) -> Vec<Contact> {
    let client = sim.add_client();
    sim.command_after(Duration::ZERO, client, DhtCommand::Bootstrap(vec![node_addr(via)]));
    let mut providers = None;
    let mut asked = false;
    sim.run_while(Duration::from_millis(100), Duration::from_secs(60), |sim| {
        for (index, event) in sim.take_events() {
            match event {
                DhtEvent::Bootstrapped { .. } if index == client && !asked => {
                    asked = true;
                    sim.command_after(Duration::ZERO, client, DhtCommand::FindProviders(key));
                }
                DhtEvent::ProvidersFound { providers: found, .. } if index == client => {
                    providers = Some(found);
                }
                _ => {}
            }
        }
        providers.is_some()
    });
    sim.silence(client);
    providers.expect("the client's lookup finished")
}

/// Issue 12 item 1, in the simulation: a key announced by node 0 before anyone else joined
/// is found through every node of networks from 1 node up to twice k, after the nodes
/// joined, after every other node restarted (losing the records it stored), and after the
/// provider itself restarted. (Restarting every node at once in a network larger than k
/// would lose all stored copies until the next republish; there, a quarter restart.)
#[test]
fn providers_are_found_in_networks_of_every_size_after_joins_and_restarts() {
    let k = SimConfig::new(1, 0.0, 0).dht.k;
    for seed in seeds() {
        for n in [1, 2, 3, 5, k, k + 1, k + 2, 2 * k] {
            let config = SimConfig { packet_loss_probability: 0.0, ..SimConfig::new(n, 0.0, seed) };
            let mut sim = Sim::new(config);
            let key = Key::from_bytes([seed as u8; 20]);
            sim.command_after(Duration::ZERO, 0, DhtCommand::Announce(key));
            for i in 1..n {
                let via = vec![node_addr(i - 1)];
                sim.command_after(
                    Duration::from_millis(50) * i as u32,
                    i,
                    DhtCommand::Bootstrap(via),
                );
            }
            sim.run_until(Duration::from_secs(30));
            let provider = sim.node(0).local();
            let check = |sim: &mut Sim, when: &str| {
                for via in 0..n {
                    let found = find_via(sim, via, key);
                    assert!(
                        found.contains(&provider),
                        "{n} nodes, {when}, via node {via}: {found:?}; SIM_SEED={seed}"
                    );
                }
            };
            check(&mut sim, "after joining");
            let restarted: Vec<usize> =
                if n <= k + 1 { (1..n).collect() } else { (1..n).step_by(4).collect() };
            for &i in &restarted {
                sim.restart(i);
            }
            sim.run_until(sim.elapsed() + Duration::from_secs(10));
            check(&mut sim, "after the other nodes restarted");
            sim.restart(0);
            // The restarted provider announces its files again, as `seed` does at start.
            sim.command_after(Duration::ZERO, 0, DhtCommand::Announce(key));
            sim.run_until(sim.elapsed() + Duration::from_secs(10));
            check(&mut sim, "after the provider restarted");
            sim.assert_invariants();
        }
    }
}

// ---- Transfer simulation: one download from a seeded swarm, on virtual time. Replay a
// failure with `SIM_SEED=<seed> cargo test --features sim --test sim`, or a random swarm
// with `scripts/sim-transfer 1 <seed>`.

mod transfer {
    use std::time::Duration;

    use furymesh::config::throttle_burst_bytes;
    use furymesh::sim::transfer::{
        bytes_per_second, check, random_swarm, run_many, run_swarm, Behaviour, Closed, LinkSpec,
        SeederSpec, SwarmConfig, SwarmReport,
    };
    use furymesh::transfer::Bitfield;

    use super::seeds;

    const KIB: u32 = 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs a swarm, prints the replay command first, and checks every invariant.
    fn run(config: &SwarmConfig) -> SwarmReport {
        eprintln!("SIM_SEED={} cargo test --features sim --test sim", config.seed);
        let report = run_swarm(config.clone());
        if let Err(v) = check(config, &report) {
            panic!("{v}");
        }
        eprintln!(
            "virtual {:?}, {} events, stats {:?}",
            report.virtual_time, report.events, report.stats
        );
        report
    }

    fn lossy(latency: Duration, bandwidth: u64, seed: u64) -> LinkSpec {
        LinkSpec {
            jitter: ms(5 + seed % 20),
            loss_probability: 0.02,
            retransmit_delay: ms(300),
            ..LinkSpec::clean(latency, bandwidth)
        }
    }

    #[test]
    fn a_liar_is_banned_and_no_honest_peer_is_blamed() {
        for seed in seeds() {
            // Honest seeders on slower links, so the liars get enough requests.
            let mut seeders: Vec<SeederSpec> = (0..3)
                .map(|i| SeederSpec::honest(lossy(ms(10 + 15 * i), 2_000_000, seed + i)))
                .collect();
            seeders.push(SeederSpec {
                behaviour: Behaviour::Liar { probability: 1.0 },
                ..SeederSpec::honest(LinkSpec::clean(ms(2), 50_000_000))
            });
            seeders.push(SeederSpec {
                behaviour: Behaviour::Liar { probability: 0.3 },
                ..SeederSpec::honest(LinkSpec::clean(ms(3), 50_000_000))
            });
            let config = SwarmConfig::new(seed, 96, 16 * KIB, seeders);
            let r = run(&config);
            assert!(r.complete && r.identical, "SIM_SEED={seed}");
            let liar = &r.seeders[3];
            let stats = liar.stats.as_ref().expect("the liar connected");
            assert!(stats.banned && liar.banned_event, "{liar:?}; SIM_SEED={seed}");
            assert_eq!(liar.corrupt_read, config.scheduler.failures_to_ban, "SIM_SEED={seed}");
            assert_eq!(liar.chunks_written, 0, "nothing of a liar's is written; SIM_SEED={seed}");
            assert!(matches!(liar.closed, Some((Closed::Banned, _))), "SIM_SEED={seed}");
            for honest in &r.seeders[..3] {
                let st = honest.stats.as_ref().expect("connected");
                assert!(!st.banned && st.corrupt_chunks == 0, "{st:?}; SIM_SEED={seed}");
                assert!(honest.chunks_written > 0, "{honest:?}; SIM_SEED={seed}");
            }
        }
    }

    #[test]
    fn a_stalled_peers_chunks_are_requested_from_the_others() {
        for seed in seeds() {
            // The silent peer is the fastest, so it holds requests when it goes quiet.
            let mut silent = SeederSpec::honest(LinkSpec::clean(ms(1), 100_000_000));
            // It answers the bitfield request, then nothing: its first requests hang.
            silent.behaviour = Behaviour::Silent { after: 1 };
            let honest = SeederSpec::honest(lossy(ms(20), 4_000_000, seed));
            let mut config = SwarmConfig::new(seed, 64, 16 * KIB, vec![silent, honest]);
            config.scheduler.stall_timeout = Duration::from_secs(4);
            // No endgame copies or takeovers: only the stall can free the hung requests.
            config.scheduler.endgame_copies_max = 1;
            config.scheduler.slow_peer_factor = 0;
            let r = run(&config);
            assert!(r.complete && r.identical, "SIM_SEED={seed}");
            assert!(r.seeders[0].stall_events >= 1, "{:?}; SIM_SEED={seed}", r.seeders[0]);
            assert!(!r.reassigned.is_empty(), "SIM_SEED={seed}");
            for x in &r.reassigned {
                assert_eq!((x.from, x.to), (0, Some(1)), "{x:?}; SIM_SEED={seed}");
            }
            // The silent peer delivered what it answered and nothing more; it is not banned.
            let st = r.seeders[0].stats.as_ref().expect("connected");
            assert!(st.chunks_verified == 0 && !st.banned, "{st:?}; SIM_SEED={seed}");
            // The transfer waited for the stall, not for the read timeout of 10 s.
            assert!(r.virtual_time >= config.scheduler.stall_timeout, "SIM_SEED={seed}");
            assert!(
                r.virtual_time < Duration::from_secs(9),
                "{:?}; SIM_SEED={seed}",
                r.virtual_time
            );
        }
    }

    #[test]
    fn a_peer_that_pauses_loses_its_requests_and_its_late_answers_are_duplicates() {
        for seed in seeds() {
            let mut pausing = SeederSpec::honest(LinkSpec::clean(ms(1), 100_000_000));
            pausing.behaviour = Behaviour::Stall { after: 4, pause: Duration::from_secs(6) };
            let honest = SeederSpec::honest(lossy(ms(20), 1_000_000, seed));
            let mut config = SwarmConfig::new(seed, 600, 16 * KIB, vec![pausing, honest]);
            config.scheduler.stall_timeout = Duration::from_secs(3);
            let r = run(&config);
            assert!(r.complete && r.identical, "SIM_SEED={seed}");
            assert!(r.seeders[0].stall_events >= 1, "SIM_SEED={seed}");
            assert!(r.reassigned.iter().all(|x| x.to == Some(1)), "SIM_SEED={seed}");
            assert!(r.stats.duplicate_chunks >= 1, "late answers: {:?}; SIM_SEED={seed}", r.stats);
            // After its rest it serves again, and is never blamed for the pause.
            let st = r.seeders[0].stats.as_ref().expect("connected");
            assert!(st.chunks_verified > 4 && !st.banned, "{st:?}; SIM_SEED={seed}");
        }
    }

    #[test]
    fn the_endgame_duplicates_the_last_chunks_and_finishes_sooner() {
        for seed in seeds() {
            let fast = SeederSpec::honest(LinkSpec::clean(ms(5), 5_000_000));
            let slow = SeederSpec::honest(LinkSpec::clean(ms(10), 200_000));
            let mut config = SwarmConfig::new(seed, 48, 16 * KIB, vec![fast, slow]);
            config.scheduler.slow_peer_factor = 0; // no takeovers: the endgame alone
            config.scheduler.endgame_chunks = 16;
            let with = run(&config);
            assert!(with.complete && with.identical, "SIM_SEED={seed}");
            assert!(with.stats.endgame_requests > 0, "{:?}; SIM_SEED={seed}", with.stats);
            config.scheduler.endgame_chunks = 0;
            let without = run(&config);
            assert!(without.complete && without.identical, "SIM_SEED={seed}");
            assert_eq!(without.stats.endgame_requests, 0, "SIM_SEED={seed}");
            assert!(
                with.virtual_time < without.virtual_time,
                "endgame {:?} vs none {:?}; SIM_SEED={seed}",
                with.virtual_time,
                without.virtual_time
            );
        }
    }

    #[test]
    fn upload_limits_hold_per_virtual_second_and_are_used() {
        for seed in seeds() {
            let rates = [1_000_000u64, 500_000];
            let seeders = rates
                .iter()
                .map(|&r| SeederSpec {
                    upload_rate_bytes: Some(r),
                    ..SeederSpec::honest(lossy(ms(5), 100_000_000, seed))
                })
                .collect();
            let config = SwarmConfig::new(seed, 400, 16 * KIB, seeders);
            let r = run(&config);
            assert!(r.complete && r.identical, "SIM_SEED={seed}");
            let chunk = u64::from(16 * KIB);
            for (i, &rate) in rates.iter().enumerate() {
                // Arrivals lag sends by the link's delay spread at most.
                let spread = config.seeders[i].link.delay_spread().as_secs_f64();
                let bound =
                    rate as f64 * (1.0 + spread) + (throttle_burst_bytes(rate) + chunk) as f64;
                for (second, bytes) in bytes_per_second(&r.received, i) {
                    assert!(
                        bytes as f64 <= bound,
                        "seeder {i}: {bytes} B in second {second} (limit {rate}); SIM_SEED={seed}"
                    );
                }
            }
            // Together they cannot beat the sum of the limits (plus the bursts), and the
            // scheduler keeps both busy: at least 70% of it over the whole run, start and
            // endgame included (73-79% over the three seeds; this was 80% while each
            // burst was 1 MiB, a third of the file sent before the limits bit).
            let total: u64 = rates.iter().sum();
            let size = config.file_size_bytes as f64;
            let secs = r.virtual_time.as_secs_f64();
            let bursts: u64 = rates.iter().map(|&r| throttle_burst_bytes(r) + chunk).sum();
            assert!(secs >= (size - bursts as f64) / total as f64, "{secs}");
            assert!(
                r.bytes_received() as f64 / secs >= 0.7 * total as f64,
                "{secs} s; SIM_SEED={seed}"
            );
        }
    }

    #[test]
    fn the_download_limit_holds() {
        for seed in seeds() {
            let rate = 800_000u64;
            let seeders =
                (0..3).map(|i| SeederSpec::honest(lossy(ms(5 + i), 50_000_000, seed))).collect();
            let mut config = SwarmConfig::new(seed, 300, 16 * KIB, seeders);
            config.download_rate_bytes = Some(rate);
            let r = run(&config);
            assert!(r.complete && r.identical, "SIM_SEED={seed}");
            let secs = r.virtual_time.as_secs_f64();
            let size = config.file_size_bytes as f64;
            let burst = throttle_burst_bytes(rate) + u64::from(16 * KIB);
            assert!(secs >= (size - burst as f64) / rate as f64, "{secs} s");
            assert!(size / secs >= 0.8 * rate as f64, "{secs} s; SIM_SEED={seed}");
        }
    }

    #[test]
    fn partial_seeders_over_lossy_links_give_a_byte_identical_file() {
        for seed in seeds() {
            let chunks = 120;
            let seeders = (0..4u32)
                .map(|i| {
                    let mut has = Bitfield::new(chunks);
                    (0..chunks).filter(|c| c % 4 != i).for_each(|c| has.set(c));
                    SeederSpec {
                        has: Some(has),
                        ..SeederSpec::honest(LinkSpec {
                            loss_probability: 0.05,
                            ..lossy(ms(5 + 20 * u64::from(i)), 3_000_000, seed + u64::from(i))
                        })
                    }
                })
                .collect();
            let mut config = SwarmConfig::new(seed, chunks, 8 * KIB, seeders);
            config.file_size_bytes -= 1234; // a short last chunk
            let r = run(&config);
            assert!(r.complete && r.identical && r.bad_written.is_empty(), "SIM_SEED={seed}");
            assert_eq!(r.stats.malformed_bitfields, 0);
        }
    }

    #[test]
    fn same_seed_same_transfer() {
        for seed in seeds() {
            let a = run_swarm(random_swarm(seed));
            let b = run_swarm(random_swarm(seed));
            assert_eq!(a, b, "SIM_SEED={seed}");
            let c = run_swarm(random_swarm(seed + 1_000));
            assert_ne!(a.trace_hash, c.trace_hash, "SIM_SEED={seed}");
        }
    }

    /// The short CI variant of `scripts/sim-transfer`: random swarms (liars, silent and
    /// pausing peers, partial seeders, limits, lossy links, random scheduler tunables),
    /// every invariant checked after every run.
    #[test]
    fn random_swarms_keep_the_invariants() {
        let (first, count) = match std::env::var("SIM_SEED") {
            Ok(seed) => (seed.parse().expect("SIM_SEED must be a u64"), 1),
            Err(_) => (1, 300),
        };
        match run_many(first, count) {
            Ok(summary) => eprintln!("{summary:?}"),
            Err(v) => panic!("{v}\nreplay: SIM_SEED={} cargo test --features sim --test sim random_swarms, or scripts/sim-transfer 1 {}", v.seed, v.seed),
        }
    }
}
