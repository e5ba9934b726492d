//! A memory cgroup of the test's own (a child of the one this process runs in), so that a
//! forwarder can be OOM-killed by the kernel as a pod over its memory limit is: cgroup v1's
//! memory controller, or v2's where this process's cgroup delegates it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which hierarchy holds the memory controller: the file names differ.
#[derive(Debug, Clone, Copy)]
enum Flavour {
    V1,
    V2,
}

/// A memory cgroup removed on drop (once the processes in it are gone).
pub struct MemoryCgroup {
    dir: PathBuf,
    flavour: Flavour,
}

impl MemoryCgroup {
    /// `None` (with a message) when no memory controller can be had.
    pub fn new(tag: &str) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let (parent, flavour) = match own_path(&own, "memory") {
            Some(path) => (Path::new("/sys/fs/cgroup/memory").join(path), Flavour::V1),
            None => {
                let path = own_path(&own, "").unwrap_or_default();
                let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                    .into_iter()
                    .map(Path::new)
                    .find(|root| root.join("cgroup.controllers").exists());
                let Some(root) = root else {
                    eprintln!("skipped: no memory cgroup (neither v1 nor v2 is mounted)");
                    return None;
                };
                (root.join(path), Flavour::V2)
            }
        };
        let delegated = match flavour {
            Flavour::V1 => parent.join("memory.limit_in_bytes").exists(),
            Flavour::V2 => std::fs::read_to_string(parent.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory")),
        };
        if !delegated {
            eprintln!(
                "skipped: {} has no memory controller for a child cgroup",
                parent.display()
            );
            return None;
        }
        let dir = parent.join(format!("nldns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir); // left by a killed earlier run of this process id
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: cannot create {}: {e}", dir.display());
            return None;
        }
        Some(MemoryCgroup { dir, flavour })
    }

    /// `cgroup.procs`, open for writing: a process writing "0" there moves itself in.
    pub fn procs(&self) -> File {
        File::options()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("open cgroup.procs")
    }

    fn file(&self, v1: &str, v2: &str) -> PathBuf {
        self.dir.join(match self.flavour {
            Flavour::V1 => v1,
            Flavour::V2 => v2,
        })
    }

    /// The memory charged to the cgroup now, in bytes.
    pub fn usage(&self) -> u64 {
        let path = self.file("memory.usage_in_bytes", "memory.current");
        let text = std::fs::read_to_string(&path).expect("read the memory usage");
        text.trim().parse().expect("a byte count")
    }

    /// Sets the limit; v1 refuses (EBUSY) a limit it cannot reclaim down to.
    pub fn set_limit(&self, bytes: u64) -> std::io::Result<()> {
        std::fs::write(
            self.file("memory.limit_in_bytes", "memory.max"),
            bytes.to_string(),
        )
    }

    /// How many processes of the cgroup the kernel's OOM killer has killed.
    pub fn oom_kills(&self) -> u64 {
        let path = self.file("memory.oom_control", "memory.events");
        let text = std::fs::read_to_string(&path).expect("read the OOM counts");
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A killed process leaves the cgroup a moment after it is reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// This process's path in the hierarchy of `controller` ("" for v2's) from
/// `/proc/self/cgroup`.
fn own_path(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let found = match controller {
            "" => controllers.is_empty(),
            name => controllers.split(',').any(|c| c == name),
        };
        found.then(|| path.trim_start_matches('/').to_string())
    })
}
