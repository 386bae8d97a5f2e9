//! Real git for the source tests: repositories made with the `git` CLI, served over
//! `file://`, `git://` (`git daemon`) and smart HTTP (`git http-backend` behind a small
//! CGI bridge that requires a token, as GitHub does).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// Runs `git` in `dir` with an isolated configuration; panics with stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=drover test",
            "-c",
            "user.email=test@drover.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A working repository `work/` and a bare `origin.git` it pushes to, in one temp dir.
pub struct Fixture {
    _tmp: TempDir,
    /// The temp dir.
    pub root: PathBuf,
    /// The working repository.
    pub work: PathBuf,
    /// The bare repository (served by the servers below under the name `origin.git`).
    pub bare: PathBuf,
}

impl Fixture {
    /// Both repositories, with one commit holding `fleet.yaml` pushed to `main`.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let work = root.join("work");
        let bare = root.join("origin.git");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q"]);
        git(&root, &["init", "-q", "--bare", "origin.git"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let fixture = Self {
            _tmp: tmp,
            root,
            work,
            bare,
        };
        fixture.write("fleet.yaml", "kind: Fleet\n");
        fixture.commit("first");
        fixture.push();
        fixture
    }

    /// Writes a file in the working repository (creating directories).
    pub fn write(&self, relative: &str, content: &str) {
        let path = self.work.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Commits everything in the working repository; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.rev_parse("HEAD")
    }

    /// Pushes every branch and tag to the bare repository.
    pub fn push(&self) {
        git(&self.work, &["push", "-q", "--all", "origin"]);
        git(&self.work, &["push", "-q", "--tags", "origin"]);
    }

    /// `git rev-parse` in the working repository.
    pub fn rev_parse(&self, rev: &str) -> String {
        git(&self.work, &["rev-parse", rev])
    }

    /// `file://` URL of the bare repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// A fresh cache directory inside the fixture.
    pub fn cache(&self, name: &str) -> PathBuf {
        self.root.join("cache").join(name)
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// Standard base64 (with padding), enough to build a Basic authorization header.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Counters of what the HTTP server saw.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests received.
    pub requests: AtomicUsize,
    /// Requests refused with 401.
    pub unauthorized: AtomicUsize,
    /// Requests passed to `git http-backend`.
    pub served: AtomicUsize,
}

/// Smart HTTP on loopback: `git http-backend` over the repositories in a directory,
/// requiring `Authorization: Basic x-access-token:<token>` when a token is set.
pub struct HttpGitServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub stats: Arc<HttpStats>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpGitServer {
    /// Serves the repositories under `project_root`.
    pub async fn start(project_root: &Path, token: Option<&str>) -> Self {
        let expected =
            token.map(|t| format!("Basic {}", base64(format!("x-access-token:{t}").as_bytes())));
        let stats = Arc::new(HttpStats::default());
        let root = project_root.to_path_buf();
        let handler_stats = stats.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let root = root.clone();
            let expected = expected.clone();
            let stats = handler_stats.clone();
            async move { handle(request, &root, expected.as_deref(), &stats).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, stats, task }
    }

    /// URL of a repository, e.g. `origin.git`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }

    /// Stops serving and closes the port.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Body>,
    root: &Path,
    expected: Option<&str>,
    stats: &HttpStats,
) -> Response<Body> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    if let Some(expected) = expected {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected) {
            stats.unauthorized.fetch_add(1, Ordering::SeqCst);
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, "Basic realm=\"drover-test\"")
                .body(Body::from("authentication required"))
                .unwrap();
        }
    }
    stats.served.fetch_add(1, Ordering::SeqCst);
    let body = to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let header_str = |headers: &HeaderMap, name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env(
            "CONTENT_TYPE",
            header_str(&parts.headers, header::CONTENT_TYPE),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header_str(&parts.headers, header::CONTENT_ENCODING),
        )
        .env(
            "GIT_PROTOCOL",
            header_str(
                &parts.headers,
                header::HeaderName::from_static("git-protocol"),
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    cgi_response(&output.stdout)
}

/// Turns CGI output (headers, blank line, body) into a response.
fn cgi_response(output: &[u8]) -> Response<Body> {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .unwrap_or((output.len(), output.len()));
    let head = String::from_utf8_lossy(&output[..split.0]);
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(status);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .status(status)
        .body(Body::from(output[split.1..].to_vec()))
        .unwrap()
}

/// `git daemon` on a free loopback port, serving a directory; killed on drop.
pub struct GitDaemon {
    /// Its port.
    pub port: u16,
    child: Child,
}

impl GitDaemon {
    /// Starts it and waits until it accepts connections.
    pub fn start(base: &Path) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("git")
                .args([
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    "--informative-errors",
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                    &format!("--base-path={}", base.display()),
                    base.to_str().unwrap(),
                ])
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn git daemon");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { port, child };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("git daemon did not start");
    }

    /// `git://` URL of a repository.
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
