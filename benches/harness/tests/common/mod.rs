//! What the harness's integration tests share: a child process killed on drop, free ports, and
//! running `donjon-bench` for its JSON report.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A server process, killed (by its PID) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to 20 s for something to listen on `addr`; `why` says what to show if nothing does.
pub fn wait_listening(addr: &str, why: impl Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "nothing listens on {addr}: {}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs donjon-bench with `--json -` and returns the JSON report that follows the table.
pub fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_donjon-bench"))
        .args(args)
        .args(["--quiet", "--json", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json = stdout.find("\n{").map_or(0, |i| i + 1);
    println!("{}", &stdout[..json]);
    serde_json::from_str(&stdout[json..]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
