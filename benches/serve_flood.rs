//! `/healthz` latency of `drover serve` under a connection flood (prints figures;
//! harness = false). The server is a child process started with the common soft limit of
//! 1,024 open files; this process raises its own limit and holds 2,000 half-open
//! connections (connected, nothing sent, reopened when closed) and 200 slowloris clients
//! (a request line, then one header byte a second) against it, while it asks `/healthz`
//! 200 times on new connections. The same 200 requests without a flood give the baseline.
//! `tests/it/serve_load.rs` asserts liveness under the same load; the figures live here and
//! in docs/reliability.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HALF_OPEN: usize = 2_000;
const SLOWLORIS: usize = 200;
const SAMPLES: usize = 200;
const OPEN_FILES: u64 = 1_024;

fn raise_own_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn start_server(dir: &std::path::Path, port: u16) -> Child {
    std::fs::write(
        dir.join("fleet.yaml"),
        "apiVersion: drover.dev/v1alpha1\nkind: Fleet\nmetadata: {name: flood}\n\
         spec: {github: {tokenRef: gh}}\n---\napiVersion: drover.dev/v1alpha1\n\
         kind: SecretRef\nmetadata: {name: gh}\nspec: {env: {name: DROVER_BENCH_UNUSED}}\n",
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
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: OPEN_FILES,
                rlim_max: OPEN_FILES,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// One `GET /healthz` on a new connection: how long until the whole answer came, if it
/// was a 200 within 5 s.
fn healthz(port: u16) -> Option<Duration> {
    let started = Instant::now();
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    answer
        .starts_with(b"HTTP/1.1 200")
        .then(|| started.elapsed())
}

fn samples(port: u16) -> (Vec<Duration>, usize) {
    let mut took = Vec::new();
    let mut failed = 0;
    for _ in 0..SAMPLES {
        match healthz(port) {
            Some(d) => took.push(d),
            None => failed += 1,
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

fn flood(port: u16, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<usize>> {
    let half_open = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut opened = 0;
            while !stop.load(Ordering::Relaxed) {
                held.retain(|s| s.peek(&mut [0u8; 1]).is_err());
                while held.len() < HALF_OPEN {
                    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
                        break;
                    };
                    s.set_nonblocking(true).unwrap();
                    held.push(s);
                    opened += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            opened
        })
    };
    let slowloris = std::thread::spawn(move || {
        let mut clients: Vec<TcpStream> = (0..SLOWLORIS)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        for c in &mut clients {
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ");
        }
        while !stop.load(Ordering::Relaxed) {
            for c in &mut clients {
                let _ = c.write_all(b"a");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        clients.len()
    });
    vec![half_open, slowloris]
}

fn main() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = start_server(dir.path(), port);
    let up = Instant::now();
    while healthz(port).is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    report("no flood", &samples(port));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = flood(port, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    report(
        &format!(
            "{HALF_OPEN} half-open + {SLOWLORIS} slowloris, server limited to {OPEN_FILES} files"
        ),
        &samples(port),
    );
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    println!(
        "flood: {} half-open connections opened in all, {} slowloris clients",
        counts[0], counts[1]
    );
    report("after the flood", &samples(port));
    server.kill().unwrap();
    let _ = server.wait();
}
