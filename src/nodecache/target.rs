//! A `forward` TO word (and a kube-dns ConfigMap nameserver): an address, a DNS-over-TLS
//! address, or a resolv.conf path.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A `forward` TO word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    Addr(SocketAddr),
    /// `tls://IP[%NAME][:PORT]`: DNS over TLS, with the name its certificate must carry when
    /// one is given after `%`.
    Tls {
        addr: SocketAddr,
        server_name: Option<String>,
    },
    ResolvConf(PathBuf),
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`, `dns://` of those, `tls://` of those (with an optional
/// `%NAME` after the IP, as CoreDNS's forward reads it), or a resolv.conf path.
pub fn parse_forward_target(text: &str) -> Result<ForwardTarget, String> {
    if text.starts_with('/') {
        return Ok(ForwardTarget::ResolvConf(PathBuf::from(text)));
    }
    match text.split_once("://") {
        Some(("dns", rest)) => parse_addr(rest, 53).map(ForwardTarget::Addr),
        Some(("tls", rest)) => {
            let (host, server_name) = split_server_name(rest);
            if server_name.as_deref() == Some("") {
                return Err(format!("{text}: empty server name after %"));
            }
            let addr = parse_addr(&host, 853)?;
            Ok(ForwardTarget::Tls { addr, server_name })
        }
        Some((scheme, _)) => Err(format!(
            "{text}: {scheme}:// upstreams are not supported; only plain DNS and tls://"
        )),
        None => parse_addr(text, 53).map(ForwardTarget::Addr),
    }
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`, `default_port` when none is written.
fn parse_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "{text:?} is not an upstream: want IP, IP:PORT, [IPv6]:PORT or a resolv.conf path"
    ))
}

/// Takes the `%NAME` out of `IP%NAME:PORT` or `[IPv6%NAME]:PORT`, keeping the port: CoreDNS's
/// forward `splitZone`.
fn split_server_name(host: &str) -> (String, Option<String>) {
    let Some((mut addr, name)) = host.rsplit_once('%').map(|(a, n)| (a.to_string(), n)) else {
        return (host.to_string(), None);
    };
    if addr.starts_with('[') {
        addr.push(']');
    }
    match name.rsplit_once(':') {
        Some((name, port)) => {
            addr.push(':');
            addr.push_str(port);
            (addr, Some(name.trim_end_matches(']').to_string()))
        }
        None => (addr, Some(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(addr: &str, name: Option<&str>) -> Result<ForwardTarget, String> {
        Ok(ForwardTarget::Tls {
            addr: addr.parse().unwrap(),
            server_name: name.map(str::to_string),
        })
    }

    #[test]
    fn tls_targets_take_port_853_and_an_optional_name() {
        let cases = [
            ("tls://9.9.9.9", tls("9.9.9.9:853", None)),
            ("tls://9.9.9.9:8853", tls("9.9.9.9:8853", None)),
            (
                "tls://9.9.9.9%dns.quad9.net",
                tls("9.9.9.9:853", Some("dns.quad9.net")),
            ),
            (
                "tls://9.9.9.9%dns.quad9.net:10853",
                tls("9.9.9.9:10853", Some("dns.quad9.net")),
            ),
            (
                "tls://[2620:fe::fe%dns.quad9.net]:853",
                tls("[2620:fe::fe]:853", Some("dns.quad9.net")),
            ),
            ("tls://[2620:fe::fe]", tls("[2620:fe::fe]:853", None)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_forward_target(text), want, "{text}");
        }
        assert!(parse_forward_target("tls://9.9.9.9%").is_err());
        assert!(parse_forward_target("tls://dns.quad9.net").is_err());
        assert!(parse_forward_target("https://9.9.9.9").is_err());
    }
}
