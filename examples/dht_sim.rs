//! Full DHT simulation: provider-lookup success, rounds and messages on a large network.
//!
//! `cargo run --release --features sim --example dht_sim -- --nodes 10000 --churn 0.2 --seed 1`
//!
//! Flags: `--nodes N`, `--churn F` (fraction of nodes silenced before the lookups),
//! `--seed S`, `--keys K` (announced keys = lookups), `--loss P` (packet loss probability),
//! `--unresponsive F` (fraction of nodes that never answer).

// Reports how long the simulation took in real time.
#![allow(clippy::disallowed_methods)]

use std::process::ExitCode;
use std::time::Instant;

use furymesh::sim::{percentile, run_provider_scenario, SimConfig};

fn main() -> ExitCode {
    let mut config = SimConfig::new(10_000, 0.2, 1);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("error: {flag} needs a value");
            return ExitCode::FAILURE;
        };
        let parsed = match flag.as_str() {
            "--nodes" => value.parse().map(|v| config.nodes = v).is_ok(),
            "--churn" => value.parse().map(|v| config.churn_fraction = v).is_ok(),
            "--seed" => value.parse().map(|v| config.seed = v).is_ok(),
            "--keys" => value.parse().map(|v| config.keys = v).is_ok(),
            "--loss" => value.parse().map(|v| config.packet_loss_probability = v).is_ok(),
            "--unresponsive" => value.parse().map(|v| config.unresponsive_fraction = v).is_ok(),
            _ => {
                eprintln!("error: unknown flag {flag}");
                return ExitCode::FAILURE;
            }
        };
        if !parsed {
            eprintln!("error: bad value {value:?} for {flag}");
            return ExitCode::FAILURE;
        }
    }
    let started = Instant::now();
    let report = run_provider_scenario(config.clone());
    let wall = started.elapsed();
    println!(
        "nodes={} churn={} unresponsive={} loss={} seed={} keys={}",
        config.nodes,
        config.churn_fraction,
        config.unresponsive_fraction,
        config.packet_loss_probability,
        config.seed,
        report.lookups
    );
    println!(
        "provider_lookup_success={:.2}% ({}/{})",
        100.0 * report.success_rate(),
        report.successes,
        report.lookups
    );
    println!(
        "rounds median={} p99={} | messages/lookup median={} p99={}",
        percentile(&report.rounds, 50.0),
        percentile(&report.rounds, 99.0),
        percentile(&report.messages, 50.0),
        percentile(&report.messages, 99.0)
    );
    println!(
        "stored/announce median={} | table_len_mean={:.1} | datagrams={} | virtual={:.0}s \
         wall={:.1}s",
        percentile(&report.stored_per_announce, 50.0),
        report.table_len_mean,
        report.datagrams_sent,
        report.virtual_time.as_secs_f64(),
        wall.as_secs_f64()
    );
    ExitCode::SUCCESS
}
