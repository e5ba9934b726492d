//! node-cache's iptables rules, exactly: 12 per local IP, same tables, chains, matches and
//! comments, inserted at the top of their chain with `-w 5` after a `-C` check.
//!
//! The `iptables`/`ip6tables` binaries of the image are used (not a library) so the xtables
//! lock, the legacy/nft backend choice of the image's wrapper and the rule syntax are the ones
//! kube-proxy and the CNI see. A rule is identified by its full spec including the comment, so
//! teardown removes our rules and nothing else.

use std::fmt;
use std::net::IpAddr;
use std::process::Command;

use thiserror::Error;

/// The comment of the NOTRACK rules.
pub const SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
/// The comment of the filter ACCEPT rules.
pub const ALLOW_DNS: &str = "NodeLocal DNS Cache: allow DNS traffic";
/// How long iptables waits for the xtables lock (node-cache's `-w 5`).
const LOCK_WAIT_SECONDS: &str = "5";
/// Duplicates removed at most per rule on teardown (node-cache loops until none is left).
const MAX_DUPLICATES: usize = 16;

/// One rule: table, chain, and the match/target words after the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub args: Vec<String>,
    /// An IPv6 local IP's rule goes through ip6tables.
    pub ipv6: bool,
}

impl fmt::Display for Rule {
    /// node-cache's log form: `{raw PREROUTING [-p tcp -d 169.254.20.10 --dport 53 ...]}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{} {} [{}]}}",
            self.table,
            self.chain,
            self.args.join(" ")
        )
    }
}

/// node-cache's rules (`cache_app.go: initIptables`) for every local IP, in its order.
pub fn node_cache_rules(ips: &[IpAddr], dns_port: u16, health_port: u16) -> Vec<Rule> {
    let mut rules = Vec::with_capacity(ips.len() * 12);
    for ip in ips {
        let ipv6 = ip.is_ipv6();
        let ip = ip.to_string();
        let rule =
            |table, chain, proto: &str, dir: &str, port: u16, target: &str, comment: &str| {
                let (addr_flag, port_flag) = match dir {
                    "dst" => ("-d", "--dport"),
                    _ => ("-s", "--sport"),
                };
                Rule {
                    ipv6,
                    table,
                    chain,
                    args: [
                        "-p",
                        proto,
                        addr_flag,
                        &ip,
                        port_flag,
                        &port.to_string(),
                        "-j",
                        target,
                        "-m",
                        "comment",
                        "--comment",
                        comment,
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                }
            };
        let (p, h) = (dns_port, health_port);
        rules.extend([
            rule(
                "raw",
                "PREROUTING",
                "tcp",
                "dst",
                p,
                "NOTRACK",
                SKIP_CONNTRACK,
            ),
            rule(
                "raw",
                "PREROUTING",
                "udp",
                "dst",
                p,
                "NOTRACK",
                SKIP_CONNTRACK,
            ),
            rule("filter", "INPUT", "tcp", "dst", p, "ACCEPT", ALLOW_DNS),
            rule("filter", "INPUT", "udp", "dst", p, "ACCEPT", ALLOW_DNS),
            rule("raw", "OUTPUT", "tcp", "src", p, "NOTRACK", SKIP_CONNTRACK),
            rule("raw", "OUTPUT", "udp", "src", p, "NOTRACK", SKIP_CONNTRACK),
            rule("filter", "OUTPUT", "tcp", "src", p, "ACCEPT", ALLOW_DNS),
            rule("filter", "OUTPUT", "udp", "src", p, "ACCEPT", ALLOW_DNS),
            rule("raw", "OUTPUT", "tcp", "dst", p, "NOTRACK", SKIP_CONNTRACK),
            rule("raw", "OUTPUT", "udp", "dst", p, "NOTRACK", SKIP_CONNTRACK),
            rule("raw", "OUTPUT", "tcp", "dst", h, "NOTRACK", SKIP_CONNTRACK),
            rule("raw", "OUTPUT", "tcp", "src", h, "NOTRACK", SKIP_CONNTRACK),
        ]);
    }
    rules
}

/// Why an iptables command failed; the variant is the `errortype` of the setup error metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// Another program held the xtables lock longer than 5 s (`iptables_lock`).
    Lock,
    /// Anything else (`iptables`).
    Other,
}

/// An iptables command that failed, with the rule and what to do.
#[derive(Debug, Error)]
#[error("{binary} {action} {rule}: {message}")]
pub struct RuleError {
    pub kind: RuleErrorKind,
    binary: &'static str,
    action: &'static str,
    rule: String,
    message: String,
}

/// Runs `iptables` or `ip6tables` for one address family.
#[derive(Debug, Clone, Copy)]
pub struct Iptables {
    binary: &'static str,
}

impl Iptables {
    /// The binary for `rule`'s address family.
    pub fn for_rule(rule: &Rule) -> Iptables {
        Iptables::for_family(rule.ipv6)
    }

    /// `ip6tables` for IPv6 local IPs, `iptables` otherwise.
    pub fn for_family(ipv6: bool) -> Iptables {
        Iptables {
            binary: if ipv6 { "ip6tables" } else { "iptables" },
        }
    }

    pub fn binary(&self) -> &'static str {
        self.binary
    }

    /// Whether the rule is in its chain (`-C`; exit status 1 means absent).
    pub fn exists(&self, rule: &Rule) -> Result<bool, RuleError> {
        match self.run("-C", "check", rule)? {
            Outcome::Ok => Ok(true),
            Outcome::Absent => Ok(false),
        }
    }

    /// Inserts the rule at the top of its chain unless it is there. Returns whether it was
    /// inserted.
    pub fn ensure(&self, rule: &Rule) -> Result<bool, RuleError> {
        if self.exists(rule)? {
            return Ok(false);
        }
        self.expect_ok(self.run("-I", "insert", rule)?, "insert", rule)?;
        Ok(true)
    }

    /// Deletes every copy of the rule. Returns how many were deleted.
    pub fn delete_all(&self, rule: &Rule) -> Result<usize, RuleError> {
        let mut deleted = 0;
        while deleted < MAX_DUPLICATES && self.exists(rule)? {
            self.expect_ok(self.run("-D", "delete", rule)?, "delete", rule)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    fn expect_ok(
        &self,
        outcome: Outcome,
        action: &'static str,
        rule: &Rule,
    ) -> Result<(), RuleError> {
        match outcome {
            Outcome::Ok => Ok(()),
            Outcome::Absent => Err(self.error(action, rule, "the rule is not there".into())),
        }
    }

    fn error(&self, action: &'static str, rule: &Rule, message: String) -> RuleError {
        let kind = if message.contains("holding the xtables lock") {
            RuleErrorKind::Lock
        } else {
            RuleErrorKind::Other
        };
        RuleError {
            kind,
            binary: self.binary,
            action,
            rule: rule.to_string(),
            message,
        }
    }

    fn run(&self, op: &str, action: &'static str, rule: &Rule) -> Result<Outcome, RuleError> {
        let output = Command::new(self.binary)
            .args(["-w", LOCK_WAIT_SECONDS, "-t", rule.table, op, rule.chain])
            .args(&rule.args)
            .output()
            .map_err(|err| {
                let hint = if err.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "{} is not installed: use the project's image (it ships iptables), \
                         install it, or set node.setup_iptables: false (-setupiptables=false) and \
                         manage the rules elsewhere",
                        self.binary
                    )
                } else {
                    format!("cannot run {}: {err}", self.binary)
                };
                self.error(action, rule, hint)
            })?;
        if output.status.success() {
            return Ok(Outcome::Ok);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        // `-C` exits 1 for "no such rule"; a missing chain or a bad rule exits 1 or 2 with a
        // message that says so, which we must not take for absence.
        if op == "-C" && output.status.code() == Some(1) && is_absence(&stderr) {
            return Ok(Outcome::Absent);
        }
        let hint = if stderr.contains("Permission denied") || stderr.contains("you must be root") {
            " (changing iptables needs CAP_NET_ADMIN: add NET_ADMIN to the container's \
             securityContext.capabilities, or run as root)"
        } else if stderr.contains("holding the xtables lock") {
            " (kube-proxy or the CNI held the lock; the next sync retries; mount the host's \
             /run/xtables.lock so the wait is shared)"
        } else {
            ""
        };
        Err(self.error(
            action,
            rule,
            format!("exit status {}: {stderr}{hint}", output.status),
        ))
    }
}

enum Outcome {
    Ok,
    Absent,
}

/// What `iptables -C` prints when the rule is simply not there (legacy and nft backends).
fn is_absence(stderr: &str) -> bool {
    stderr.is_empty()
        || stderr.contains("does a matching rule exist")
        || stderr.contains("Bad rule")
        || stderr.contains("No chain/target/match by that name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_rules_per_ip_in_node_cache_order() {
        let rules = node_cache_rules(&["169.254.20.10".parse().unwrap()], 53, 8080);
        assert_eq!(rules.len(), 12);
        assert_eq!(
            rules[0].to_string(),
            "{raw PREROUTING [-p tcp -d 169.254.20.10 --dport 53 -j NOTRACK -m comment \
             --comment NodeLocal DNS Cache: skip conntrack]}"
        );
        assert_eq!(
            rules[7].args.join(" "),
            "-p udp -s 169.254.20.10 --sport 53 -j ACCEPT -m comment --comment NodeLocal DNS \
             Cache: allow DNS traffic"
        );
        assert_eq!((rules[7].table, rules[7].chain), ("filter", "OUTPUT"));
        assert_eq!(
            rules[11].args[..6].join(" "),
            "-p tcp -s 169.254.20.10 --sport 8080"
        );
        let two = node_cache_rules(
            &[
                "169.254.20.10".parse().unwrap(),
                "10.96.0.10".parse().unwrap(),
            ],
            53,
            8080,
        );
        assert_eq!(two.len(), 24);
        assert!(two[12].args.contains(&"10.96.0.10".to_string()));
    }

    #[test]
    fn lock_errors_are_told_apart() {
        let rule = &node_cache_rules(&["169.254.20.10".parse().unwrap()], 53, 8080)[0];
        let ipt = Iptables::for_family(false);
        let err = ipt.error(
            "insert",
            rule,
            "Another app is currently holding the xtables lock. Stopped waiting after 5s.".into(),
        );
        assert_eq!(err.kind, RuleErrorKind::Lock);
        assert_eq!(
            ipt.error("insert", rule, "x".into()).kind,
            RuleErrorKind::Other
        );
    }
}
