//! `/healthz` latency of `drover serve` under a connection flood (prints figures;
//! harness = false). The server is a child process started with the common soft limit of
//! 1,024 open files; this process raises its own limit and holds 2,000 half-open
//! connections (connected, nothing sent, reopened when closed) and 200 slowloris clients
//! (a request line, then one header byte a second) against it, while it asks `/healthz`
//! 200 times on new connections. The same 200 requests without a flood give the baseline.
//! `tests/it/serve_load.rs` asserts liveness under the same load; the figures live here and
//! in docs/reliability.md.

// The flood is shared with the liveness test (the support tree allows unused items).
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::Duration;

use support::flood::{Flood, free_port, healthz, raise_own_limit, start_server, wait_until_up};

const HALF_OPEN: usize = 2_000;
const SLOWLORIS: usize = 200;
const SAMPLES: usize = 200;
const OPEN_FILES: u64 = 1_024;

fn samples(port: u16) -> (Vec<Duration>, usize) {
    let mut took = Vec::new();
    let mut failed = 0;
    for _ in 0..SAMPLES {
        match healthz(port, Duration::from_secs(5)) {
            Ok((line, d)) if line.contains("200") => took.push(d),
            _ => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    took.sort();
    (took, failed)
}

fn report(what: &str, (took, failed): &(Vec<Duration>, usize)) {
    let at = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{what}: {} answers, {failed} failed; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

fn main() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_server(dir.path(), port, OPEN_FILES);
    wait_until_up(port);
    report("no flood", &samples(port));
    let flood = Flood::start(port, HALF_OPEN, SLOWLORIS);
    std::thread::sleep(Duration::from_secs(2));
    report(
        &format!(
            "{HALF_OPEN} half-open + {SLOWLORIS} slowloris, server limited to {OPEN_FILES} files"
        ),
        &samples(port),
    );
    let (opened, slow) = flood.stop();
    println!("flood: {opened} half-open connections opened in all, {slow} slowloris clients");
    report("after the flood", &samples(port));
    server.kill().unwrap();
    let _ = server.wait();
}
