//! Network namespaces the tests create (root only): commands run inside with `ip netns exec`,
//! per-namespace `/etc` files, and in-process servers whose sockets live inside.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nodelocal_dns::node::iptables::Rule;

/// A network namespace, deleted (with everything in it) on drop.
pub struct Netns(String);

impl Netns {
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The namespace's file, for setns(2).
    pub fn file(&self) -> std::fs::File {
        let path = Path::new("/run/netns").join(&self.0);
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Where `ip netns exec` finds the files it mounts over `/etc` for this namespace.
    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.0)
    }

    /// Writes `/etc/netns/NAME/FILE`: `ip netns exec` bind-mounts it over `/etc/FILE` for
    /// every command it runs here (a pod's `/etc/resolv.conf`, say). Removed on drop.
    pub fn etc_file(&self, file: &str, text: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join(file), text).expect("write a namespace's /etc file");
    }

    /// Runs `body` on a thread of its own that has entered this namespace: every socket the
    /// body opens, and every thread it starts (a tokio runtime's workers), is inside. The
    /// calling thread stays where it was. A panic in `body` is this call's panic.
    pub fn run_inside<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let inside = scope.spawn(|| {
                let file = self.file();
                // SAFETY: setns on an open namespace file changes only this thread's network
                // namespace; no memory is shared with the kernel.
                let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    entered,
                    0,
                    "setns {}: {}",
                    self.0,
                    std::io::Error::last_os_error()
                );
                body()
            });
            inside
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `None` (with a message) when not root.
    pub fn new(tag: &str) -> Option<Netns> {
        if !is_root() {
            eprintln!("skipped: network namespaces need root");
            return None;
        }
        let name = format!("nldns-{tag}-{}", std::process::id());
        // A namespace left by a killed earlier run of this process id.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let created = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs");
        assert!(created.success(), "ip netns add {name}");
        let ns = Netns(name);
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]).args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("ip netns exec runs")
    }

    /// Runs `args` in the namespace; panics unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn has_rule(&self, rule: &Rule) -> bool {
        let binary = if rule.ipv6 { "ip6tables" } else { "iptables" };
        let mut args = vec![binary, "-w", "5", "-t", rule.table, "-C", rule.chain];
        args.extend(rule.args.iter().map(String::as_str));
        self.run(&args).status.success()
    }

    /// Lines of `iptables-save` and `ip6tables-save` that are our rules, and rules of our
    /// nftables table.
    pub fn our_rule_count(&self) -> usize {
        let nft = self.run(&["nft", "list", "table", "inet", "nodelocaldns"]);
        let lines = |text: &str| {
            text.lines()
                .filter(|l| l.contains("NodeLocal DNS Cache"))
                .count()
        };
        let iptables: usize = ["iptables-save", "ip6tables-save"]
            .iter()
            .map(|save| lines(&self.ok(&[save])))
            .sum();
        iptables + lines(&String::from_utf8_lossy(&nft.stdout))
    }

    pub fn addresses(&self, link: &str) -> String {
        self.ok(&["ip", "-o", "addr", "show", "dev", link])
    }

    pub fn dummy_supported(&self) -> bool {
        let added = self
            .run(&["ip", "link", "add", "probe0", "type", "dummy"])
            .status
            .success();
        if added {
            self.ok(&["ip", "link", "del", "probe0"]);
        }
        added
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
