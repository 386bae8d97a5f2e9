//! `drover serve` under a connection flood, as a child process with the common soft limit
//! of 1,024 open files: 2,000 half-open connections (connected, nothing sent) and 200
//! slowloris clients (headers one byte a second) are held against it, and `/healthz` must
//! still answer (5 s timeout each), and again once the flood is gone.
//!
//! A liveness check, not a speed goal: latency under this load is measured by
//! `benches/serve_flood.rs`. Loopback only; bounded in count (2,200 connections) and time
//! (the flood is held for 15 s).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HALF_OPEN: usize = 2_000;
const SLOWLORIS: usize = 200;

/// Raises this process's soft open-files limit to its hard limit (the flood needs ~2,300).
fn raise_own_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 4_096,
        "the hard open-files limit ({}) is too low for this test",
        limit.rlim_cur
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `drover serve` on a one-file fleet, with its open-files limit set to `open_files`.
fn start_server(dir: &std::path::Path, port: u16, open_files: u64) -> Child {
    std::fs::write(
        dir.join("fleet.yaml"),
        "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata: {name: flood}\n\
         spec: {github: {tokenRef: gh}}\n---\napiVersion: drover.dev/v1alpha1\n\
         kind: SecretRef\nmetadata: {name: gh}\nspec: {env: {name: DROVER_TEST_UNUSED}}\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    cmd.args(["serve", "--dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: open_files,
                rlim_max: open_files,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// `GET /healthz` on a new connection; the answer's status line, within `timeout`.
fn healthz(port: u16, timeout: Duration) -> Result<String, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
        .map_err(|e| format!("connect: {e}"))?;
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).unwrap();
    stream.set_write_timeout(Some(left)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

fn wait_until_up(port: u16) {
    let started = Instant::now();
    while healthz(port, Duration::from_secs(1)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn healthz_answers_under_a_flood_of_half_open_and_slowloris_clients() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_server(dir.path(), port, 1_024);
    wait_until_up(port);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Half-open: connected, nothing sent; reconnects whenever the server closes one, so
    // the flood stays at full strength.
    let half_open = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<Option<TcpStream>> = Vec::new();
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.retain(|s| s.as_ref().is_some_and(|s| s.peek(&mut [0u8; 1]).is_err()));
                while held.len() < HALF_OPEN {
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(s) => {
                            s.set_nonblocking(true).unwrap();
                            held.push(Some(s));
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            opened
        })
    };
    // Slowloris: a request line, then one header byte a second.
    let slowloris = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut clients: Vec<TcpStream> = (0..SLOWLORIS)
                .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
                .collect();
            for c in &mut clients {
                let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ");
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for c in &mut clients {
                    let _ = c.write_all(b"a");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            clients.len()
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let flood_ends = Instant::now() + Duration::from_secs(15);
    let mut answers = 0;
    while Instant::now() < flood_ends {
        match healthz(port, Duration::from_secs(5)) {
            Ok(line) => assert!(line.contains("200"), "{line}"),
            Err(e) => panic!("/healthz did not answer under the flood: {e}"),
        }
        answers += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = half_open.join().unwrap();
    let slow = slowloris.join().unwrap();
    assert!(
        opened >= HALF_OPEN,
        "the flood opened only {opened} connections"
    );
    assert_eq!(slow, SLOWLORIS);
    assert!(answers >= 10, "{answers}");

    // The flood is gone: the service answers as before, and is still running.
    let line = healthz(port, Duration::from_secs(5)).expect("/healthz after the flood");
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
        let line = healthz(port, Duration::from_secs(5)).expect("/healthz");
        assert!(line.contains("200"), "{line}");
        server.kill().unwrap();
        let _ = server.wait();
    }
}
