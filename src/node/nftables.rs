//! The nftables backend: one table of our own, `inet nodelocaldns`, written whole in one `nft`
//! transaction (never half installed) and removed by one delete.
//!
//! ```text
//! chain divert    prerouting, priority raw:   DNS to a local IP, while a socket of ours is
//!                                             bound to it (socket wildcard 0): notrack
//! chain output    output, priority raw:       node-cache's output NOTRACK rules
//! chain fallback  prerouting, priority dstnat - 10: DNS to a fallback IP (tracked, so nobody
//!                                             of ours listens): dnat to a kube-dns endpoint
//! ```
//!
//! The filter ACCEPT rules of the iptables backend have no counterpart: an nftables `accept`
//! ends only its own base chain, so a drop in another table (a host firewall) still drops. A
//! host that drops by default must allow DNS to the local IPs in its own rules.
//!
//! The `nft` binary of the image is used: its ruleset language is what `nodelocal-dns rules`
//! prints and what an operator reads back with `nft list table inet nodelocaldns`, and one
//! `nft -f` is one kernel transaction.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Command;

use super::rules::{DivertSpec, L4, RuleError, RuleErrorKind, ServiceEndpoints, run_with_input};

/// Our table's family and name, as `nft` names it.
pub const TABLE: &str = "inet nodelocaldns";
const TABLE_FAMILY: &str = "inet";
const TABLE_NAME: &str = "nodelocaldns";

/// The comment of the notrack rules.
const SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
/// The comment of the fallback DNATs.
const FALLBACK: &str = "NodeLocal DNS Cache: fall back to kube-dns";

/// The table `spec` and `endpoints` ask for, in nft's ruleset language.
pub fn render(spec: &DivertSpec, endpoints: &ServiceEndpoints) -> String {
    let (p, h) = (spec.dns_port, spec.health_port);
    let mut divert = String::new();
    let mut output = String::new();
    let mut fallback = String::new();
    for &ip in &spec.local_ips {
        let family = family(ip);
        // A socket found and bound to the address itself; for a local IP we answer on a
        // wildcard socket, any socket found (`transparent 0` holds for every ordinary one).
        let listening = match spec.exact(ip) {
            true => "socket wildcard 0",
            false => "socket transparent 0",
        };
        for proto in L4::BOTH {
            let l4 = proto.name();
            let _ = writeln!(
                divert,
                "\t\t{family} daddr {ip} {l4} dport {p} {listening} notrack comment \"{SKIP_CONNTRACK}\""
            );
            let _ = writeln!(
                output,
                "\t\t{family} saddr {ip} {l4} sport {p} notrack comment \"{SKIP_CONNTRACK}\""
            );
            let _ = writeln!(
                output,
                "\t\t{family} daddr {ip} {l4} dport {p} notrack comment \"{SKIP_CONNTRACK}\""
            );
        }
        let _ = writeln!(
            output,
            "\t\t{family} daddr {ip} tcp dport {h} notrack comment \"{SKIP_CONNTRACK}\""
        );
        let _ = writeln!(
            output,
            "\t\t{family} saddr {ip} tcp sport {h} notrack comment \"{SKIP_CONNTRACK}\""
        );
    }
    for &ip in &spec.fallback_ips {
        let family = family(ip);
        for proto in L4::BOTH {
            let targets = endpoints.of(proto, ip.is_ipv6());
            if targets.is_empty() {
                continue;
            }
            let map = targets
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : {} . {}", t.ip(), t.port()))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                fallback,
                "\t\t{family} daddr {ip} {} dport {p} dnat {family} addr . port to numgen \
                 random mod {} map {{ {map} }} comment \"{FALLBACK}\"",
                proto.name(),
                targets.len()
            );
        }
    }
    format!(
        "table {TABLE} {{\n\
         \tchain divert {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n{divert}\t}}\n\
         \tchain output {{\n\t\ttype filter hook output priority raw; policy accept;\n{output}\t}}\n\
         \tchain fallback {{\n\t\ttype nat hook prerouting priority dstnat - 10; policy accept;\n{fallback}\t}}\n\
         }}\n"
    )
}

/// `ip` or `ip6`: the nft payload family of an address.
fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() { "ip6" } else { "ip" }
}

/// Replaces our table with `table` (from [`render`]) in one transaction: a table that was there
/// is gone in the same commit that adds the new one.
pub fn apply(table: &str) -> Result<(), RuleError> {
    let script = format!("add table {TABLE}\ndelete table {TABLE}\n{table}");
    nft(&["-f", "-"], Some(&script), "apply").map(|_| ())
}

/// Our table as the kernel has it now (`nft list table`), or `None` when it is not there.
pub fn listing() -> Result<Option<String>, RuleError> {
    match nft(&["list", "table", TABLE_FAMILY, TABLE_NAME], None, "list") {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.message.contains("No such file or directory") => Ok(None),
        Err(err) => Err(err),
    }
}

/// Deletes our table; one that is not there is no error.
pub fn remove() -> Result<(), RuleError> {
    // `destroy` (nft 1.0.8+) would do it in one call; `add` then `delete` in one transaction
    // works on every nft.
    let script = format!("add table {TABLE}\ndelete table {TABLE}\n");
    nft(&["-f", "-"], Some(&script), "delete").map(|_| ())
}

/// Runs `nft` with `args` (and `input` on its stdin); returns what it printed.
fn nft(args: &[&str], input: Option<&str>, action: &'static str) -> Result<String, RuleError> {
    let failed = |kind, message: String| RuleError {
        kind,
        tool: "nft",
        action,
        target: format!("table {TABLE}"),
        message,
    };
    let output = run_with_input(Command::new("nft").args(args), input).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            failed(
                RuleErrorKind::Missing,
                "nft is not installed: use the project's image (it ships iptables and nft), or \
                 node.backend: iptables"
                    .into(),
            )
        } else {
            failed(RuleErrorKind::Other, format!("cannot run nft: {err}"))
        }
    })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let (kind, hint) = if stderr.contains("Operation not permitted") {
        (
            RuleErrorKind::Other,
            " (changing nftables needs CAP_NET_ADMIN: add NET_ADMIN to the container's \
             securityContext.capabilities, or run as root)",
        )
    } else if action == "apply"
        && (stderr.contains("Could not process rule: No such file or directory")
            || stderr.contains("Protocol not supported"))
    {
        (
            RuleErrorKind::Missing,
            " (the kernel lacks an nftables expression the table needs: nft_socket for \
             `socket wildcard`, nft_nat for the fallback, or the inet family's nat. Use \
             node.backend: iptables where the kernel has xt_socket)",
        )
    } else {
        (RuleErrorKind::Other, "")
    };
    Err(failed(
        kind,
        format!("exit status {}: {stderr}{hint}", output.status),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_diverts_only_while_listening_and_falls_back_to_every_endpoint() {
        let spec = DivertSpec {
            local_ips: vec![
                "169.254.20.10".parse().unwrap(),
                "10.96.0.10".parse().unwrap(),
            ],
            dns_port: 53,
            health_port: 8080,
            fallback_ips: vec!["169.254.20.10".parse().unwrap()],
            wildcard_ips: vec!["10.96.0.10".parse().unwrap()],
        };
        let endpoints = ServiceEndpoints {
            udp: vec![
                "10.244.1.2:53".parse().unwrap(),
                "10.244.1.3:53".parse().unwrap(),
            ],
            tcp: vec!["10.244.1.2:53".parse().unwrap()],
        };
        let table = render(&spec, &endpoints);
        assert!(table.starts_with("table inet nodelocaldns {\n\tchain divert {"));
        assert!(table.contains(
            "\t\tip daddr 169.254.20.10 udp dport 53 socket wildcard 0 notrack comment \
             \"NodeLocal DNS Cache: skip conntrack\"\n"
        ));
        assert!(
            table.contains("ip daddr 10.96.0.10 udp dport 53 socket transparent 0 notrack"),
            "a local IP answered on a wildcard socket: any listener"
        );
        assert!(table.contains(
            "ip daddr 169.254.20.10 udp dport 53 dnat ip addr . port to numgen random mod 2 map \
             { 0 : 10.244.1.2 . 53, 1 : 10.244.1.3 . 53 }"
        ));
        assert!(!table.contains("ip daddr 10.96.0.10 udp dport 53 dnat"));
        assert_eq!(table.matches("socket wildcard 0").count(), 2);
        assert_eq!(table.matches(" dnat ").count(), 2);

        let unarmed = render(&spec, &ServiceEndpoints::default());
        assert!(!unarmed.contains("dnat"), "no endpoint, no DNAT: {unarmed}");
    }
}
