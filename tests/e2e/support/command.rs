//! Tools and commands: where they are, how they run (printed first, bounded in time, killed as
//! a process group), and what they printed.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// The extra directories searched for tools (and given to daemons, which look up runc, shims
/// and conmon on PATH): root's sbin directories may be missing from a CI environment's PATH.
pub(crate) const EXTRA_PATH: &[&str] =
    &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

pub(crate) fn search_path() -> String {
    let mut p = std::env::var("PATH").unwrap_or_default();
    for d in EXTRA_PATH {
        if !p.split(':').any(|x| x == *d) {
            if !p.is_empty() {
                p.push(':');
            }
            p.push_str(d);
        }
    }
    p
}

/// The absolute path of `name`, or a test failure telling how to install it.
pub(crate) fn tool(name: &str) -> PathBuf {
    for dir in search_path().split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("DONJON_E2E=1 but the tool `{name}` is not installed (run .ci/e2e-deps.sh as root)");
}

/// Debian's docker CLI (matching Debian's dockerd) when present, else the first on PATH.
pub(crate) fn docker_cli() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        tool("docker")
    }
}

/// A `Command` for `tool(name)` with the extended PATH.
pub(crate) fn cmd(name: &str) -> Command {
    cmd_path(&tool(name))
}

pub(crate) fn cmd_path(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", search_path());
    c
}

/// The outcome of one external command.
pub(crate) struct Out {
    /// `None` when it was killed at its timeout.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) line: String,
    pub(crate) elapsed: Duration,
}

impl Out {
    pub(crate) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub(crate) fn describe(&self) -> String {
        let status = match self.status {
            None => "TIMED OUT (killed)".to_string(),
            Some(s) => format!("{s}"),
        };
        format!(
            "command: {}\nstatus: {status} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.line,
            self.elapsed,
            tail(&self.stdout, 6000),
            tail(&self.stderr, 6000)
        )
    }
}

pub(crate) fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

pub(crate) fn command_line(c: &Command) -> String {
    let mut s = String::new();
    for (k, v) in c.get_envs() {
        // PATH is only extended; removed variables are not worth showing.
        if let (Some(v), false) = (v, k == "PATH") {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), shell_quote(v));
        }
    }
    s.push_str(&shell_quote(c.get_program()));
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

pub(crate) fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Sends `signal` (e.g. "TERM") to one process, by PID.
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends SIGKILL to a process group we created (the command's own group, by its PID).
pub(crate) fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `c` to completion or `timeout`, printing its command line first and its duration after.
/// A command still running at its timeout is killed (its whole process group).
pub(crate) fn run_with(c: &mut Command, timeout: Duration) -> Out {
    let line = command_line(c);
    println!("$ {line}");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        let _ = tx_out.send(b);
    });
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        let _ = tx_err.send(b);
    });
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for `{line}`: {e}"),
        }
    };
    // A daemonized grandchild may keep the pipes open: don't wait for it forever.
    let grab = |rx: mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()).into_owned()
    };
    let out = Out { status, stdout: grab(rx_out), stderr: grab(rx_err), line, elapsed: start.elapsed() };
    println!(
        "  -> {} in {:.1?}",
        match out.status {
            None => "TIMED OUT".to_string(),
            Some(s) =>
                s.code().map(|c| format!("exit {c}")).unwrap_or_else(|| format!("signal {:?}", s.signal())),
        },
        out.elapsed
    );
    out
}

/// Whether `c` succeeds within 10 s, silently (for readiness polls).
pub(crate) fn probe(c: &mut Command) -> bool {
    let Ok(mut child) = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Runs `c` with the default timeout and requires success; returns its stdout.
pub(crate) fn ok(c: &mut Command) -> String {
    ok_with(c, TIMEOUT)
}

pub(crate) fn ok_with(c: &mut Command, timeout: Duration) -> String {
    let out = run_with(c, timeout);
    if !out.success() {
        panic!("command failed\n{}", out.describe());
    }
    out.stdout
}

/// Runs `c` with the default timeout and requires that it fails (not by timing out).
pub(crate) fn fails(c: &mut Command) -> Out {
    let out = run_with(c, TIMEOUT);
    assert!(out.status.is_some(), "expected a failure, got a timeout\n{}", out.describe());
    assert!(!out.success(), "expected a failure\n{}", out.describe());
    out
}
