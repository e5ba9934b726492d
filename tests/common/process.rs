//! Child processes a test starts: killed on drop (a panicking test leaves none behind), what
//! they print kept in a file for failure messages, and entered into a network namespace (and
//! a cgroup) between fork and exec, so the PID is the program's from its first instruction.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::common::netns::Netns;

/// A child killed on drop; what it prints goes to a file.
pub struct Running {
    child: Child,
    output: tempfile::NamedTempFile,
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        let output = tempfile::NamedTempFile::new().expect("temp file");
        let file = output.reopen().expect("reopen temp file");
        let child = command
            .stdout(file.try_clone().expect("clone temp file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} starts: {e}"));
        Running { child, output }
    }

    /// `program args` as a process of `ns` from its first instruction (under `ip netns exec`
    /// the PID is `ip`'s for the first milliseconds, and a signal then would stop `ip`), and
    /// of the memory cgroup whose `cgroup.procs` is given. Returns once the exec has happened.
    pub fn exec_in(
        ns: &Netns,
        program: &str,
        args: &[&str],
        cgroup_procs: Option<File>,
    ) -> Running {
        let mut command = Command::new(program);
        command.args(args);
        let netns = ns.file();
        // SAFETY: setns and write are async-signal-safe, and the closure touches nothing but
        // the two descriptors it owns, which stay open in the child until its exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(procs) = &cgroup_procs {
                    // "0" moves the writer: this child, before it becomes the program.
                    let moved = libc::write(procs.as_raw_fd(), b"0\n".as_ptr().cast(), 2);
                    if moved != 2 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Running::spawn(command)
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t")
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child not yet waited for: its PID cannot have been reused.
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(
            sent,
            0,
            "kill {}: {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Whether it has exited, and everything it printed so far.
    pub fn report(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("status unknown: {e}"),
        };
        format!("{status}; it printed:\n{}", self.printed())
    }

    pub fn printed(&self) -> String {
        std::fs::read_to_string(self.output.path()).unwrap_or_default()
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits up to `bound` for the exit; panics (with what it printed) when none comes.
    pub fn exit_status(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {bound:?}: {}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then the exit, which must be that signal's.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.exit_status(Duration::from_secs(10));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{}", self.report());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
