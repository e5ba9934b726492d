//! A `forward` TO word (and a kube-dns ConfigMap nameserver): an address, or a resolv.conf
//! path.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A `forward` TO word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    Addr(SocketAddr),
    ResolvConf(PathBuf),
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`, `dns://` of those, or a resolv.conf path.
pub fn parse_forward_target(text: &str) -> Result<ForwardTarget, String> {
    if text.starts_with('/') {
        return Ok(ForwardTarget::ResolvConf(PathBuf::from(text)));
    }
    let plain = match text.split_once("://") {
        Some(("dns", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{text}: {scheme}:// upstreams are not supported; only plain DNS"
            ));
        }
        None => text,
    };
    if let Ok(addr) = plain.parse::<SocketAddr>() {
        return Ok(ForwardTarget::Addr(addr));
    }
    if let Ok(ip) = plain
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ForwardTarget::Addr(SocketAddr::new(ip, 53)));
    }
    Err(format!(
        "{text:?} is not an upstream: want IP, IP:PORT, [IPv6]:PORT or a resolv.conf path"
    ))
}
