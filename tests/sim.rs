//! Deterministic DHT simulations sized for CI. Replay a failure with
//! `SIM_SEED=<seed> cargo test --features sim --test sim`.

use std::time::Duration;

use furymesh::sim::{percentile, run_provider_scenario, SimConfig, SimReport};

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
