//! Long seeded transfer simulation: `COUNT` random swarms from `SEED` on, every invariant
//! checked after each run (see `furymesh::sim::transfer`).
//!
//! `cargo run --release --features sim --example sim_transfer -- COUNT SEED`
//! (`scripts/sim-transfer COUNT SEED` does this). Exit status 1 and the failing seed on the
//! first violation; replay it with `scripts/sim-transfer 1 SEED`.

use std::process::ExitCode;

use furymesh::sim::transfer::{check, random_swarm, run_many, TransferSim};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(count), Some(seed)) = (
        args.first().and_then(|a| a.parse::<u64>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: sim_transfer COUNT SEED");
        return ExitCode::FAILURE;
    };
    if count == 1 && std::env::var_os("SIM_TRACE").is_some() {
        // A replay by hand: the swarm, every event, the outcome.
        let config = random_swarm(seed);
        eprintln!("{config:#?}");
        let report = TransferSim::new(config.clone()).verbose().run();
        eprintln!("{report:#?}");
        if let Err(v) = check(&config, &report) {
            println!("FAILED at {v}");
            return ExitCode::FAILURE;
        }
    }
    // Real time only to report how fast the simulation ran; nothing in it reads a clock.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    match run_many(seed, count) {
        Ok(s) => {
            println!(
                "ok: {} swarms (seeds {seed}..{}), {} completed, {} bans, {} stalls, {} chunks \
                 reassigned, {} endgame requests, {} takeovers, {} connections given up, \
                 {} events, {:.0} s virtual in {:.1} s",
                s.swarms,
                seed + count,
                s.completed,
                s.bans,
                s.stalls,
                s.reassigned,
                s.endgame_requests,
                s.takeovers,
                s.gave_up,
                s.events,
                s.virtual_time.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(v) => {
            println!("FAILED at {v}");
            println!("replay: scripts/sim-transfer 1 {}", v.seed);
            ExitCode::FAILURE
        }
    }
}
