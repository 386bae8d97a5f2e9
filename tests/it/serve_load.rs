//! `drover serve` under a connection flood, as a child process with the common soft limit
//! of 1,024 open files: 2,000 half-open connections (connected, nothing sent) and 200
//! slowloris clients (headers one byte a second) are held against it, and `/healthz` must
//! still answer (5 s timeout each), and again once the flood is gone.
//!
//! A liveness check, not a speed goal: latency under this load is measured by
//! `benches/serve_flood.rs`. Loopback only; bounded in count (2,200 connections) and time
//! (the flood is held for 15 s).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::flood::{
    Flood, free_port, healthz, raise_own_limit, start_server, wait_until_up,
};

const HALF_OPEN: usize = 2_000;
const SLOWLORIS: usize = 200;

#[test]
fn healthz_answers_under_a_flood_of_half_open_and_slowloris_clients() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_server(dir.path(), port, 1_024);
    wait_until_up(port);

    let flood = Flood::start(port, HALF_OPEN, SLOWLORIS);
    std::thread::sleep(Duration::from_secs(2));
    let flood_ends = Instant::now() + Duration::from_secs(15);
    let mut answers = 0;
    while Instant::now() < flood_ends {
        match healthz(port, Duration::from_secs(5)) {
            Ok((line, _)) => assert!(line.contains("200"), "{line}"),
            Err(e) => panic!("/healthz did not answer under the flood: {e}"),
        }
        answers += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let (opened, slow) = flood.stop();
    assert!(
        opened >= HALF_OPEN,
        "the flood opened only {opened} connections"
    );
    assert_eq!(slow, SLOWLORIS);
    assert!(answers >= 10, "{answers}");

    // The flood is gone: the service answers as before, and is still running.
    let (line, _) = healthz(port, Duration::from_secs(5)).expect("/healthz after the flood");
    assert!(line.contains("200"), "{line}");
    assert!(server.try_wait().unwrap().is_none(), "serve exited");
    server.kill().unwrap();
    let _ = server.wait();
}

/// `LimitNOFILE` of the systemd unit in deploy/.
fn unit_open_files_limit() -> u64 {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/drover.service"
    ))
    .unwrap();
    unit.lines()
        .find_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number")
}

/// Opens `n` connections that send nothing, waits, and counts those the server kept open.
fn kept_of_waiting_clients(port: u16, n: usize) -> usize {
    let held: Vec<TcpStream> = (0..n)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Well inside the 10 s header timeout: only making room closes a connection here.
    std::thread::sleep(Duration::from_secs(3));
    held.iter()
        .filter(|s| {
            matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

/// Under the systemd unit's `LimitNOFILE`, 2,000 clients waiting at once all keep their
/// connection; under the common default of 1,024 the server has to close some for room.
#[test]
fn the_units_open_files_limit_holds_two_thousand_waiting_clients() {
    raise_own_limit();
    let limit = unit_open_files_limit();
    for (open_files, all_kept) in [(limit, true), (1_024, false)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = start_server(dir.path(), port, open_files);
        wait_until_up(port);
        let kept = kept_of_waiting_clients(port, HALF_OPEN);
        assert_eq!(
            kept == HALF_OPEN,
            all_kept,
            "with {open_files} open files the server kept {kept} of {HALF_OPEN} waiting clients"
        );
        let (line, _) = healthz(port, Duration::from_secs(5)).expect("/healthz");
        assert!(line.contains("200"), "{line}");
        server.kill().unwrap();
        let _ = server.wait();
    }
}
