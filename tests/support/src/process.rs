//! A server process the test started, stopped by its PID when the guard is dropped (never by
//! name: other processes on the machine are not the test's).

use std::process::Child;

/// Kills and reaps the child when dropped.
pub struct Process(pub Child);

impl Process {
    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
