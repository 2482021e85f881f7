//! Loopback ports for servers the tests start.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback address with a port free right now (bound, then released), for a server
/// process to bind.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// `n` distinct free ports on 127.0.0.1 (held together while probing, so distinct).
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe a free port: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

/// Waits (up to 20 s) until something listens on `addr`; panics otherwise.
pub fn wait_listening(addr: SocketAddr) {
    wait_listening_or(addr, String::new)
}

/// [`wait_listening`], showing `why()` (a log, say) in the panic when nothing listens.
pub fn wait_listening_or(addr: SocketAddr, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}: {}", why());
        std::thread::sleep(Duration::from_millis(10));
    }
}
