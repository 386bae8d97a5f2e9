//! A connection flood against `drover serve` as a child process with a chosen open-files
//! limit: half-open clients (connected, nothing sent, reopened when the server closes
//! them) and slowloris clients (a request line, then one header byte a second). Used by
//! the liveness test (`tests/it/serve_load.rs`) and the latency benchmark
//! (`benches/serve_flood.rs`). Loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Raises this process's soft open-files limit to its hard limit (a flood needs ~2,300)
/// and checks that it is high enough.
pub fn raise_own_limit() {
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
        "the hard open-files limit ({}) is too low for a flood",
        limit.rlim_cur
    );
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `drover serve` on a one-file fleet in `dir`, with its open-files limit set to
/// `open_files`.
pub fn start_server(dir: &std::path::Path, port: u16, open_files: u64) -> Child {
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

/// `GET /healthz` on a new connection: the answer's status line and how long the whole
/// answer took, within `timeout`.
pub fn healthz(port: u16, timeout: Duration) -> Result<(String, Duration), String> {
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
    let line = text.lines().next().unwrap_or("").to_owned();
    Ok((line, started.elapsed()))
}

/// Waits until the server on `port` answers `/healthz` (at most 30 s).
pub fn wait_until_up(port: u16) {
    let started = Instant::now();
    while healthz(port, Duration::from_secs(1)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running flood; [`Flood::stop`] ends it.
pub struct Flood {
    stop: Arc<AtomicBool>,
    half_open: JoinHandle<usize>,
    slowloris: JoinHandle<usize>,
}

impl Flood {
    /// Holds `half_open` half-open and `slowloris` slowloris clients against `port`.
    pub fn start(port: u16, half_open: usize, slowloris: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let held = {
            let stop = stop.clone();
            std::thread::spawn(move || hold_half_open(port, half_open, &stop))
        };
        let slow = {
            let stop = stop.clone();
            std::thread::spawn(move || hold_slowloris(port, slowloris, &stop))
        };
        Flood {
            stop,
            half_open: held,
            slowloris: slow,
        }
    }

    /// Ends the flood: how many half-open connections were opened in all, and how many
    /// slowloris clients were held.
    pub fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.half_open.join().unwrap(),
            self.slowloris.join().unwrap(),
        )
    }
}

/// Keeps `n` connections open that send nothing, reopening those the server closes.
fn hold_half_open(port: u16, n: usize, stop: &AtomicBool) -> usize {
    let mut held: Vec<TcpStream> = Vec::new();
    let mut opened = 0;
    while !stop.load(Ordering::Relaxed) {
        held.retain(|s| s.peek(&mut [0u8; 1]).is_err());
        while held.len() < n {
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
}

/// `n` clients that send a request line, then one header byte a second.
fn hold_slowloris(port: u16, n: usize, stop: &AtomicBool) -> usize {
    let mut clients: Vec<TcpStream> = (0..n)
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
}
