//! `scripts/bench dr`: how soon a standby region takes over once its database is promoted, on
//! real processes and real streaming replication. Each run is a fresh deployment: a PostgreSQL
//! primary with one active `quire app` (it migrates the database), a replica made with
//! `pg_basebackup -R` and two standby instances on it, a nats-server per region. The primary
//! crashes (`-m immediate`) with its region, the replica is promoted, and the time from
//! `pg_ctl promote` returning to every standby answering `/readyz` 200 is one sample.
//! Goal: p50 ≤ 10 s, max ≤ `dr.check_every` + 5 s. Measured with `check_every` 1 s, then with the
//! default 5 s.
//!
//! `--quick`: `check_every` 1 s only, 3 runs.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use support::dr::{DrDeployment, wait_all_active};

const STANDBYS: usize = 2;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("scripts/bench dr [--quick]: promotion → every standby ready, p50 and max");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (checks, runs): (&[u64], usize) = if quick { (&[1], 3) } else { (&[1, 5], 5) };
    println!(
        "dr benchmark: {runs} runs per setting, each a fresh primary + replica, 1 active and \
         {STANDBYS} standby instances"
    );
    let mut rows = Vec::new();
    for &check_every in checks {
        let mut samples = Vec::new();
        for run in 1..=runs {
            let took = promotion_to_ready(check_every).await;
            println!(
                "  check_every {check_every}s, run {run}: every standby ready in {}",
                fmt(took)
            );
            samples.push(took);
        }
        rows.push((check_every, samples));
    }
    println!();
    println!(
        "{:<24} {:>8} {:>8}   goal",
        "promotion → ready", "p50", "max"
    );
    for (check_every, mut samples) in rows {
        samples.sort();
        let p50 = samples[(samples.len() - 1) / 2];
        let max = samples[samples.len() - 1];
        let max_goal = Duration::from_secs(check_every + 5);
        let met = p50 <= Duration::from_secs(10) && max <= max_goal;
        println!(
            "{:<24} {:>8} {:>8}   p50 ≤ 10 s, max ≤ {} s: {}",
            format!("check_every {check_every}s"),
            fmt(p50),
            fmt(max),
            max_goal.as_secs(),
            if met { "met" } else { "NOT met" }
        );
    }
}

/// One run: a fresh deployment, the disaster, the promotion; the time until every standby is
/// ready.
async fn promotion_to_ready(check_every: u64) -> Duration {
    let check = format!("{check_every}s");
    let mut d = DrDeployment::start(1, STANDBYS, &[("QUIRE_DR__CHECK_EVERY", &check)]).await;
    d.lose_region_a();
    d.b.pg.promote().await;
    let promoted = Instant::now();
    let took = wait_all_active(&d.b.instances, promoted, Duration::from_secs(120)).await;
    took.into_iter().max().unwrap_or_default()
}

fn fmt(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
