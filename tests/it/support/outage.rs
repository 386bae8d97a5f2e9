//! A remote that goes down and comes back: a loopback TCP relay in front of a real server
//! (slurmrestd, a git HTTP server). While it is down, its port refuses connections and the
//! connections it was relaying are cut, as when the server's host or process goes away;
//! when it comes back it listens on the same port again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay to `target` that can be taken down.
pub struct Outage {
    addr: SocketAddr,
    target: SocketAddr,
    /// `true` while the relay is up.
    up: watch::Sender<bool>,
    /// Connections relayed so far.
    relayed: Arc<AtomicUsize>,
}

impl Outage {
    /// Starts a relay to `target` (`host:port`), up.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let outage = Self {
            addr,
            target,
            up,
            relayed: Arc::default(),
        };
        outage.listen(listener);
        outage
    }

    /// Starts a relay in front of the server of `url` (`http://host:port/...`); returns it
    /// and `url` with the relay's address instead.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let parsed = reqwest::Url::parse(url).unwrap();
        let target = format!(
            "{}:{}",
            parsed.host_str().unwrap(),
            parsed.port_or_known_default().unwrap()
        );
        let outage = Self::start(target.parse().unwrap()).await;
        let mut through = parsed.clone();
        through.set_port(Some(outage.addr.port())).unwrap();
        let mut through = through.to_string();
        if !url.ends_with('/') && through.ends_with('/') {
            through.pop();
        }
        (outage, through)
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections relayed so far.
    pub fn relayed(&self) -> usize {
        self.relayed.load(Ordering::SeqCst)
    }

    /// Takes the remote down: the port refuses connections, relayed ones are cut.
    pub fn down(&self) {
        self.up.send_replace(false);
    }

    /// Brings the remote back on the same port.
    pub async fn up(&self) {
        // The old listener is gone once `down` was seen by its task; bind again.
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.up.send_replace(true);
        self.listen(listener);
    }

    fn listen(&self, listener: TcpListener) {
        let state = self.up.subscribe();
        let target = self.target;
        let relayed = self.relayed.clone();
        tokio::spawn(async move {
            loop {
                let mut stop = state.clone();
                tokio::select! {
                    _ = stop.wait_for(|up| !*up) => {
                        return; // drops the listener: connections are refused
                    }
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        relayed.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(relay(client, target, state.clone()));
                    }
                }
            }
        });
    }
}

/// Copies both ways until either side closes or the relay goes down.
async fn relay(mut client: TcpStream, target: SocketAddr, mut state: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = state.wait_for(|up| !*up) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn refuses_while_down_and_relays_again_when_up() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let outage = Outage::start(target).await;
        let ping = |addr| async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        assert_eq!(&ping(outage.addr()).await.unwrap(), b"ping");
        let mut held = TcpStream::connect(outage.addr()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        outage.down();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(ping(outage.addr()).await.is_err(), "refused while down");
        let mut buf = [0u8; 1];
        assert_eq!(
            held.read(&mut buf).await.unwrap_or(0),
            0,
            "relayed connection cut"
        );
        outage.up().await;
        assert_eq!(&ping(outage.addr()).await.unwrap(), b"ping");
    }
}
