//! A server run in the background under a small `sh` watchdog script: the
//! script starts the server, prints the server's pid, and stops the server
//! as soon as its own stdin closes — when the handle is stopped or dropped,
//! or when the test process exits in any way (a static handle is never
//! dropped, but the process's end closes the pipe).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

pub struct Watched {
    watchdog: Child,
    /// Closing it makes the watchdog stop the server.
    stdin: Option<ChildStdin>,
    /// The server's own pid, as the script printed it.
    pub pid: u32,
}

impl Watched {
    /// Spawns the watchdog `cmd` describes (`sh -c <script> <args>…`) with
    /// its stdin and stdout piped, and reads the pid the script prints first.
    pub fn spawn(cmd: &mut Command) -> Result<Self, String> {
        let mut watchdog = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let pid: u32 = line
            .trim()
            .parse()
            .map_err(|_| format!("watchdog printed {line:?}"))?;
        Ok(Watched {
            stdin: watchdog.stdin.take(),
            watchdog,
            pid,
        })
    }

    /// The server has not exited.
    pub fn server_alive(&self) -> bool {
        // A zombie (state Z) has exited: the watchdog only reaps it later.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
    }

    /// Closes the watchdog's stdin: the script stops the server.
    pub fn close(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits until the watchdog (and so the server) has exited.
    pub fn wait(&mut self) {
        let _ = self.watchdog.wait();
    }
}
