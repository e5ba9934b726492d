//! The node's `/etc/resolv.conf`: its nameservers (the `resolv.conf` upstream) and its search
//! domains (the tail of an autopath search list).

use std::net::IpAddr;
use std::path::Path;

/// What we use of a resolv.conf file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    pub fn read(path: &Path) -> std::io::Result<ResolvConf> {
        Ok(ResolvConf::parse(&std::fs::read_to_string(path)?))
    }

    /// Parses resolv.conf text as glibc does: the last `search`/`domain` line wins; nameserver
    /// entries glibc could not use either (a scoped IPv6 address such as `fe80::1%eth0`) are
    /// skipped.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    conf.search = words.map(|w| w.trim_end_matches('.').to_string()).collect();
                }
                _ => {}
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_and_last_search_line() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver ::1 # v6\n\
             domain old.example\nsearch svc.cluster.local cluster.local.\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(conf.search, vec!["svc.cluster.local", "cluster.local"]);
    }
}
