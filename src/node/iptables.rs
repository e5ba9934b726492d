//! The iptables backend: node-cache's rules, 12 per local IP with the same tables, chains,
//! matches and comments, inserted at the top of their chain with `-w 5` after a `-C` check;
//! with two changes that make them fail open ([`super::rules`]):
//!
//! - the two raw PREROUTING NOTRACK rules match only while a socket of ours is bound to the
//!   local IP and port (`-m socket --nowildcard`);
//! - each fallback IP gets a jump from nat PREROUTING to [`FALLBACK_CHAIN`], which DNATs to the
//!   kube-dns endpoints (spread at random, as kube-proxy does). The chain's contents are
//!   replaced in one `iptables-restore --noflush` transaction whenever the endpoints change.
//!
//! node-cache's own unconditional PREROUTING NOTRACK rules ([`legacy_rules`]) black-hole the
//! node when nothing listens: an install removes them wherever it finds them (a node moving
//! from node-cache to us), and so does teardown.
//!
//! The `iptables`/`ip6tables` binaries of the image are used (not a library) so the xtables
//! lock, the legacy/nft backend choice of the image's wrapper and the rule syntax are the ones
//! kube-proxy and the CNI see. A rule is identified by its full spec including the comment, so
//! teardown removes our rules and nothing else.

use std::fmt;
use std::net::IpAddr;
use std::process::Command;

use super::rules::{
    DivertSpec, L4, RuleError, RuleErrorKind, ServiceEndpoints, run_with_input, shell_words,
};

/// The comment of the NOTRACK rules.
pub const SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
/// The comment of the filter ACCEPT rules.
pub const ALLOW_DNS: &str = "NodeLocal DNS Cache: allow DNS traffic";
/// The comment of the nat jumps to the fallback chain.
pub const FALLBACK: &str = "NodeLocal DNS Cache: fall back to kube-dns";
/// The nat chain that DNATs to the kube-dns endpoints while no process of ours listens.
pub const FALLBACK_CHAIN: &str = "NODELOCALDNS-FALLBACK";
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

/// Which way a rule matches the local IP and port.
#[derive(Clone, Copy)]
enum Dir {
    Dst,
    Src,
}

/// One rule of node-cache's shape: `-p PROTO -d|-s IP --dport|--sport PORT [MATCH...] -j
/// TARGET -m comment --comment COMMENT`.
struct Shape<'a> {
    table: &'static str,
    chain: &'static str,
    proto: L4,
    dir: Dir,
    port: u16,
    matches: &'a [&'a str],
    target: &'a str,
    comment: &'a str,
}

impl Shape<'_> {
    fn rule(&self, ip: IpAddr) -> Rule {
        let (addr_flag, port_flag) = match self.dir {
            Dir::Dst => ("-d", "--dport"),
            Dir::Src => ("-s", "--sport"),
        };
        let (ip, port) = (ip.to_string(), self.port.to_string());
        let mut args = vec!["-p", self.proto.name(), addr_flag, &ip, port_flag, &port];
        args.extend(self.matches);
        args.extend([
            "-j",
            self.target,
            "-m",
            "comment",
            "--comment",
            self.comment,
        ]);
        Rule {
            table: self.table,
            chain: self.chain,
            args: args.into_iter().map(str::to_string).collect(),
            ipv6: ip.contains(':'),
        }
    }
}

/// The match that makes a NOTRACK rule fail open: a socket bound to this exact address and
/// port (not a wildcard one) must exist.
const WHILE_LISTENING: &[&str] = &["-m", "socket", "--nowildcard"];
/// The same for a local IP we answer on a wildcard socket: any socket on the port.
const WHILE_ANY_LISTENS: &[&str] = &["-m", "socket"];

/// Our rules for `spec`, in node-cache's order per local IP (`cache_app.go: initIptables`),
/// then the fallback jumps.
pub fn rules(spec: &DivertSpec) -> Vec<Rule> {
    let (p, h) = (spec.dns_port, spec.health_port);
    let shape = |table, chain, proto, dir, port, matches, target, comment| Shape {
        table,
        chain,
        proto,
        dir,
        port,
        matches,
        target,
        comment,
    };
    let (tcp, udp, dst, src) = (L4::Tcp, L4::Udp, Dir::Dst, Dir::Src);
    let per_ip = |listening| {
        [
            shape(
                "raw",
                "PREROUTING",
                tcp,
                dst,
                p,
                listening,
                "NOTRACK",
                SKIP_CONNTRACK,
            ),
            shape(
                "raw",
                "PREROUTING",
                udp,
                dst,
                p,
                listening,
                "NOTRACK",
                SKIP_CONNTRACK,
            ),
            shape("filter", "INPUT", tcp, dst, p, &[], "ACCEPT", ALLOW_DNS),
            shape("filter", "INPUT", udp, dst, p, &[], "ACCEPT", ALLOW_DNS),
            shape("raw", "OUTPUT", tcp, src, p, &[], "NOTRACK", SKIP_CONNTRACK),
            shape("raw", "OUTPUT", udp, src, p, &[], "NOTRACK", SKIP_CONNTRACK),
            shape("filter", "OUTPUT", tcp, src, p, &[], "ACCEPT", ALLOW_DNS),
            shape("filter", "OUTPUT", udp, src, p, &[], "ACCEPT", ALLOW_DNS),
            shape("raw", "OUTPUT", tcp, dst, p, &[], "NOTRACK", SKIP_CONNTRACK),
            shape("raw", "OUTPUT", udp, dst, p, &[], "NOTRACK", SKIP_CONNTRACK),
            shape("raw", "OUTPUT", tcp, dst, h, &[], "NOTRACK", SKIP_CONNTRACK),
            shape("raw", "OUTPUT", tcp, src, h, &[], "NOTRACK", SKIP_CONNTRACK),
        ]
    };
    let fallback = L4::BOTH.map(|proto| {
        shape(
            "nat",
            "PREROUTING",
            proto,
            dst,
            p,
            &[],
            FALLBACK_CHAIN,
            FALLBACK,
        )
    });
    let mut rules = Vec::with_capacity(spec.local_ips.len() * 12 + spec.fallback_ips.len() * 2);
    for &ip in &spec.local_ips {
        let listening = match spec.exact(ip) {
            true => WHILE_LISTENING,
            false => WHILE_ANY_LISTENS,
        };
        rules.extend(per_ip(listening).iter().map(|shape| shape.rule(ip)));
    }
    for &ip in &spec.fallback_ips {
        rules.extend(fallback.iter().map(|shape| shape.rule(ip)));
    }
    rules
}

/// node-cache's PREROUTING NOTRACK rules, which divert whether or not anyone listens: never
/// ours, removed wherever found.
pub fn legacy_rules(spec: &DivertSpec) -> Vec<Rule> {
    let shapes = L4::BOTH.map(|proto| Shape {
        table: "raw",
        chain: "PREROUTING",
        proto,
        dir: Dir::Dst,
        port: spec.dns_port,
        matches: &[],
        target: "NOTRACK",
        comment: SKIP_CONNTRACK,
    });
    spec.local_ips
        .iter()
        .flat_map(|&ip| shapes.iter().map(move |shape| shape.rule(ip)))
        .collect()
}

/// The `iptables-restore --noflush` input that makes [`FALLBACK_CHAIN`] of one family hold
/// exactly the DNATs to `endpoints` (declaring the chain flushes it in the same transaction).
/// Each endpoint gets an equal share: rule i of n matches with probability 1/(n-i).
pub fn fallback_chain(ipv6: bool, endpoints: &ServiceEndpoints) -> String {
    let mut text = format!("*nat\n:{FALLBACK_CHAIN} - [0:0]\n");
    for proto in L4::BOTH {
        let targets = endpoints.of(proto, ipv6);
        for (i, target) in targets.iter().enumerate() {
            let left = targets.len() - i;
            let share = if left > 1 {
                format!(
                    "-m statistic --mode random --probability {:.5} ",
                    1.0 / left as f64
                )
            } else {
                String::new()
            };
            text.push_str(&format!(
                "-A {FALLBACK_CHAIN} -p {} {share}-m comment --comment \"{FALLBACK}\" -j DNAT \
                 --to-destination {target}\n",
                proto.name()
            ));
        }
    }
    text.push_str("COMMIT\n");
    text
}

/// The families `spec` has rules in: `false` for IPv4, `true` for IPv6.
fn families(ips: &[IpAddr]) -> Vec<bool> {
    let mut families: Vec<bool> = ips.iter().map(IpAddr::is_ipv6).collect();
    families.sort();
    families.dedup();
    families
}

/// Installs what is missing: the fallback chains (contents replaced), every rule of [`rules`],
/// and removes node-cache's [`legacy_rules`]. Returns how many rules were inserted and every
/// failure (one rule failing does not stop the others).
pub fn install(spec: &DivertSpec, endpoints: &ServiceEndpoints) -> (usize, Vec<RuleError>) {
    // The chain first: a jump to a chain that does not exist is refused.
    let mut errors = update_fallback(spec, endpoints);
    let mut inserted = 0;
    for rule in install_order(spec) {
        match Iptables::for_rule(&rule).ensure(&rule) {
            Ok(true) => inserted += 1,
            Ok(false) => {}
            Err(err) => errors.push(err),
        }
    }
    for rule in legacy_rules(spec) {
        if let Err(err) = Iptables::for_rule(&rule).delete_all(&rule) {
            errors.push(err);
        }
    }
    (inserted, errors)
}

/// [`rules`] in the order an install inserts them: the divert (raw PREROUTING) last. One
/// command inserts one rule, so while a divert is in and the NOTRACK of our answers is not,
/// those answers would make conntrack entries (from the local IP, port 53, to the client's
/// port); if we died while one lived, a client that keeps its port (a connected socket) would
/// match it as a reply, skip kube-proxy's DNAT and get nothing until the entry expired.
fn install_order(spec: &DivertSpec) -> Vec<Rule> {
    let (divert, rest): (Vec<Rule>, Vec<Rule>) = rules(spec)
        .into_iter()
        .partition(|rule| (rule.table, rule.chain) == ("raw", "PREROUTING"));
    rest.into_iter().chain(divert).collect()
}

/// Replaces the fallback chains' contents with DNATs to `endpoints`.
pub fn update_fallback(spec: &DivertSpec, endpoints: &ServiceEndpoints) -> Vec<RuleError> {
    families(&spec.fallback_ips)
        .into_iter()
        .filter_map(|ipv6| {
            Iptables::for_family(ipv6)
                .restore(&fallback_chain(ipv6, endpoints))
                .err()
        })
        .collect()
}

/// Removes every copy of our rules and of node-cache's legacy ones, then the fallback chains.
pub fn remove(spec: &DivertSpec) -> Vec<RuleError> {
    let mut errors: Vec<RuleError> = rules(spec)
        .iter()
        .chain(&legacy_rules(spec))
        .filter_map(|rule| Iptables::for_rule(rule).delete_all(rule).err())
        .collect();
    for ipv6 in families(&spec.local_ips) {
        if let Err(err) = Iptables::for_family(ipv6).delete_chain("nat", FALLBACK_CHAIN) {
            errors.push(err);
        }
    }
    errors
}

/// Whether any rule or chain of ours (or node-cache's) is in the kernel, by one
/// `iptables-save` per family: cheaper than a `-C` per rule when, most often, there is none.
pub fn any_installed(spec: &DivertSpec) -> bool {
    families(&spec.local_ips).into_iter().any(|ipv6| {
        let save = format!("{}-save", Iptables::for_family(ipv6).binary);
        Command::new(&save).output().is_ok_and(|out| {
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains(SKIP_CONNTRACK) || text.contains(ALLOW_DNS) || text.contains(FALLBACK)
        })
    })
}

/// The commands an install runs, for a person to read (`nodelocal-dns rules`).
pub fn render(spec: &DivertSpec, endpoints: &ServiceEndpoints) -> String {
    let mut text = String::new();
    for ipv6 in families(&spec.fallback_ips) {
        let binary = Iptables::for_family(ipv6).binary;
        text.push_str(&format!(
            "{binary}-restore -w {LOCK_WAIT_SECONDS} --noflush <<EOF\n{}EOF\n",
            fallback_chain(ipv6, endpoints)
        ));
    }
    for rule in install_order(spec) {
        let binary = Iptables::for_rule(&rule).binary;
        let words = [
            binary,
            "-w",
            LOCK_WAIT_SECONDS,
            "-t",
            rule.table,
            "-I",
            rule.chain,
        ];
        text.push_str(&shell_words(
            words
                .into_iter()
                .chain(rule.args.iter().map(String::as_str)),
        ));
        text.push('\n');
    }
    for rule in legacy_rules(spec) {
        text.push_str(&format!("# removed where found (node-cache's): {rule}\n"));
    }
    text
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

    /// Applies an `iptables-restore` input without flushing anything it does not name.
    fn restore(&self, input: &str) -> Result<(), RuleError> {
        let tool = format!("{}-restore", self.binary);
        let failed = |message: String| self.error("restore", FALLBACK_CHAIN, message);
        let output = run_with_input(
            Command::new(&tool).args(["-w", LOCK_WAIT_SECONDS, "--noflush"]),
            Some(input),
        )
        .map_err(|err| failed(self.spawn_hint(&tool, err)))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(failed(format!(
            "exit status {}: {stderr}{}",
            output.status,
            hint(&stderr)
        )))
    }

    /// Flushes and deletes a chain of ours; one that is not there is no error.
    fn delete_chain(&self, table: &'static str, chain: &'static str) -> Result<(), RuleError> {
        for (op, action) in [("-F", "flush"), ("-X", "delete")] {
            let output = Command::new(self.binary)
                .args(["-w", LOCK_WAIT_SECONDS, "-t", table, op, chain])
                .output()
                .map_err(|err| self.error(action, chain, self.spawn_hint(self.binary, err)))?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() && !stderr.contains("No chain/target/match by that name") {
                return Err(self.error(
                    action,
                    chain,
                    format!("exit status {}: {}", output.status, stderr.trim()),
                ));
            }
        }
        Ok(())
    }

    fn expect_ok(
        &self,
        outcome: Outcome,
        action: &'static str,
        rule: &Rule,
    ) -> Result<(), RuleError> {
        match outcome {
            Outcome::Ok => Ok(()),
            Outcome::Absent => {
                Err(self.error(action, &rule.to_string(), "the rule is not there".into()))
            }
        }
    }

    fn error(&self, action: &'static str, target: &str, message: String) -> RuleError {
        let kind = if message.contains("holding the xtables lock") {
            RuleErrorKind::Lock
        } else if message.contains("Couldn't load") || message.contains("is not installed") {
            RuleErrorKind::Missing
        } else {
            RuleErrorKind::Other
        };
        RuleError {
            kind,
            tool: self.binary,
            action,
            target: target.to_string(),
            message,
        }
    }

    fn spawn_hint(&self, tool: &str, err: std::io::Error) -> String {
        if err.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{tool} is not installed: use the project's image (it ships iptables and nft), \
                 node.backend: nftables, or set node.setup_iptables: false (-setupiptables=false) \
                 and manage the rules elsewhere"
            )
        } else {
            format!("cannot run {tool}: {err}")
        }
    }

    fn run(&self, op: &str, action: &'static str, rule: &Rule) -> Result<Outcome, RuleError> {
        let output = Command::new(self.binary)
            .args(["-w", LOCK_WAIT_SECONDS, "-t", rule.table, op, rule.chain])
            .args(&rule.args)
            .output()
            .map_err(|err| {
                self.error(action, &rule.to_string(), self.spawn_hint(self.binary, err))
            })?;
        if output.status.success() {
            return Ok(Outcome::Ok);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        // `-C` exits 1 for "no such rule". A rule that jumps to a chain that does not exist
        // cannot exist either (exit 2, "Chain ... does not exist", from iptables-nft). Any other
        // failure (a bad rule, a missing match module) must not be taken for absence.
        let absent = match output.status.code() {
            Some(1) => is_absence(&stderr),
            Some(2) => stderr.contains("does not exist"),
            _ => false,
        };
        if op == "-C" && absent {
            return Ok(Outcome::Absent);
        }
        Err(self.error(
            action,
            &rule.to_string(),
            format!("exit status {}: {stderr}{}", output.status, hint(&stderr)),
        ))
    }
}

/// What to do about an iptables error message.
fn hint(stderr: &str) -> &'static str {
    if stderr.contains("Permission denied") || stderr.contains("you must be root") {
        " (changing iptables needs CAP_NET_ADMIN: add NET_ADMIN to the container's \
         securityContext.capabilities, or run as root)"
    } else if stderr.contains("holding the xtables lock") {
        " (kube-proxy or the CNI held the lock; the next sync retries; mount the host's \
         /run/xtables.lock so the wait is shared)"
    } else if stderr.contains("Couldn't load match `socket'") {
        " (the kernel has no socket match, xt_socket: without it the rules cannot divert only \
         while we listen. Use node.backend: nftables where the kernel has nft_socket, or a \
         kernel built with CONFIG_NETFILTER_XT_MATCH_SOCKET)"
    } else if stderr.contains("Couldn't load") {
        " (the kernel lacks a netfilter module these rules need: load it, or use node.backend: \
         nftables)"
    } else {
        ""
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

    fn spec(ips: &[&str]) -> DivertSpec {
        let local_ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        DivertSpec {
            fallback_ips: local_ips
                .iter()
                .copied()
                .filter(|ip| ip.to_string().starts_with("169.254."))
                .collect(),
            local_ips,
            dns_port: 53,
            health_port: 8080,
            wildcard_ips: Vec::new(),
        }
    }

    #[test]
    fn node_cache_rules_divert_only_while_a_socket_listens() {
        let rules = rules(&spec(&["169.254.20.10"]));
        assert_eq!(rules.len(), 14, "node-cache's 12 and two fallback jumps");
        assert_eq!(
            rules[0].to_string(),
            "{raw PREROUTING [-p tcp -d 169.254.20.10 --dport 53 -m socket --nowildcard -j \
             NOTRACK -m comment --comment NodeLocal DNS Cache: skip conntrack]}"
        );
        assert!(rules[1].args.contains(&"--nowildcard".to_string()));
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
        assert_eq!(
            rules[13].to_string(),
            "{nat PREROUTING [-p udp -d 169.254.20.10 --dport 53 -j NODELOCALDNS-FALLBACK -m \
             comment --comment NodeLocal DNS Cache: fall back to kube-dns]}"
        );
        let wildcard = DivertSpec {
            wildcard_ips: vec!["169.254.20.10".parse().unwrap()],
            ..spec(&["169.254.20.10"])
        };
        let rules = super::rules(&wildcard);
        assert!(rules[0].args.contains(&"socket".to_string()));
        assert!(
            !rules[0].args.contains(&"--nowildcard".to_string()),
            "a wildcard listener is a listener too"
        );
        let two = super::rules(&spec(&["169.254.20.10", "10.96.0.10"]));
        assert_eq!(two.len(), 26, "no fallback jump for a ClusterIP");
        assert!(two[12].args.contains(&"10.96.0.10".to_string()));
    }

    #[test]
    fn the_divert_goes_in_after_every_rule_our_answers_need() {
        let order = install_order(&spec(&["169.254.20.10", "10.96.0.10"]));
        let first_divert = order
            .iter()
            .position(|rule| rule.chain == "PREROUTING" && rule.table == "raw")
            .unwrap();
        assert_eq!(first_divert, order.len() - 4, "the four diverts come last");
        let removal = rules(&spec(&["169.254.20.10"]));
        assert_eq!(
            (removal[0].table, removal[0].chain),
            ("raw", "PREROUTING"),
            "teardown removes the divert first"
        );
    }

    #[test]
    fn legacy_rules_are_node_cache_s_unconditional_notrack() {
        let legacy = legacy_rules(&spec(&["169.254.20.10"]));
        assert_eq!(legacy.len(), 2);
        assert_eq!(
            legacy[1].args.join(" "),
            "-p udp -d 169.254.20.10 --dport 53 -j NOTRACK -m comment --comment NodeLocal DNS \
             Cache: skip conntrack"
        );
    }

    #[test]
    fn the_fallback_chain_spreads_over_every_endpoint() {
        let endpoints = ServiceEndpoints {
            udp: vec![
                "10.244.1.2:53".parse().unwrap(),
                "10.244.1.3:53".parse().unwrap(),
                "[fd00::2]:53".parse().unwrap(),
            ],
            tcp: vec!["10.244.1.2:53".parse().unwrap()],
        };
        let chain = fallback_chain(false, &endpoints);
        assert_eq!(
            chain,
            "*nat\n:NODELOCALDNS-FALLBACK - [0:0]\n\
             -A NODELOCALDNS-FALLBACK -p tcp -m comment --comment \"NodeLocal DNS Cache: fall \
             back to kube-dns\" -j DNAT --to-destination 10.244.1.2:53\n\
             -A NODELOCALDNS-FALLBACK -p udp -m statistic --mode random --probability 0.50000 \
             -m comment --comment \"NodeLocal DNS Cache: fall back to kube-dns\" -j DNAT \
             --to-destination 10.244.1.2:53\n\
             -A NODELOCALDNS-FALLBACK -p udp -m comment --comment \"NodeLocal DNS Cache: fall \
             back to kube-dns\" -j DNAT --to-destination 10.244.1.3:53\nCOMMIT\n"
        );
        assert!(fallback_chain(true, &endpoints).contains("--to-destination [fd00::2]:53"));
        assert!(!fallback_chain(false, &ServiceEndpoints::default()).contains("-A "));
    }

    #[test]
    fn errors_are_told_apart() {
        let ipt = Iptables::for_family(false);
        let lock = "Another app is currently holding the xtables lock. Stopped waiting after 5s.";
        assert_eq!(
            ipt.error("insert", "r", lock.into()).kind,
            RuleErrorKind::Lock
        );
        let missing = "iptables v1.8.9 (nf_tables): Couldn't load match `socket':No such file";
        assert_eq!(
            ipt.error("insert", "r", missing.into()).kind,
            RuleErrorKind::Missing
        );
        assert!(hint(missing).contains("node.backend: nftables"));
        assert_eq!(
            ipt.error("insert", "r", "x".into()).kind,
            RuleErrorKind::Other
        );
    }
}
