//! What the harness's integration tests share: the test-support crate's process guard and free
//! ports, and running `donjon-bench` for its JSON report.

use std::process::Command;

pub use donjon_test_support::net::free_port;
pub use donjon_test_support::process::Process as Server;

/// Waits up to 20 s for something to listen on `addr`; `why` says what to show if nothing does.
pub fn wait_listening(addr: &str, why: impl Fn() -> String) {
    let addr = addr.parse().expect("a socket address");
    donjon_test_support::net::wait_listening_or(addr, why)
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
