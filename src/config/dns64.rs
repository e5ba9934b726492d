//! A zone's `dns64:` section: AAAA answers synthesized from A records for IPv6-only clients
//! behind NAT64 (RFC 6147), as CoreDNS's `dns64` plugin makes them (see [`crate::dns64`]).
//!
//! Its keys, their defaults and meanings are in README.md, "Configuration reference" (the
//! one list, checked against this model both ways by `tests/config_docs.rs`).
//!
//! A Corefile's `dns64` directive is translated into this section by
//! [`crate::nodecache::translate`](mod@crate::nodecache::translate).

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use super::{FieldPath, Invalid};

/// RFC 6052's well-known prefix, CoreDNS's default.
pub const WELL_KNOWN_PREFIX: &str = "64:ff9b::/96";

/// The prefix lengths RFC 6052 section 2.2 defines an address format for.
pub const PREFIX_LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// DNS64 for a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns64Config {
    /// `ADDRESS/LENGTH`; checked by [`Dns64Config::validate`].
    pub prefix: String,
    pub translate_all: bool,
    pub allow_ipv4: bool,
}

impl Default for Dns64Config {
    fn default() -> Self {
        Dns64Config {
            prefix: WELL_KNOWN_PREFIX.into(),
            translate_all: false,
            allow_ipv4: false,
        }
    }
}

impl Dns64Config {
    /// The prefix's network address (bits past its length cleared, as CoreDNS's reading of a
    /// CIDR clears them) and length, or why it is not one RFC 6052 can embed into.
    pub fn network(&self) -> Result<(Ipv6Addr, u8), String> {
        parse_prefix(&self.prefix)
    }

    /// Range checks of the section at `at`.
    pub(super) fn validate(&self, at: FieldPath) -> Result<(), Invalid> {
        self.network()
            .map(|_| ())
            .map_err(|m| (at.key("prefix"), m))
    }
}

/// Reads `ADDRESS/LENGTH` as a DNS64 prefix (see [`Dns64Config::network`]).
pub fn parse_prefix(text: &str) -> Result<(Ipv6Addr, u8), String> {
    let Some((address, length)) = text.split_once('/') else {
        return Err(format!(
            "{text:?}: want ADDRESS/LENGTH, such as {WELL_KNOWN_PREFIX}"
        ));
    };
    let address: Ipv6Addr = address.parse().map_err(|_| {
        format!("{text:?}: {address:?} is not an IPv6 address (NAT64 prefixes are IPv6)")
    })?;
    let length: u8 = length
        .parse()
        .ok()
        .filter(|l| PREFIX_LENGTHS.contains(l))
        .ok_or_else(|| {
            format!(
                "{text:?}: prefix length {length} is not one RFC 6052 defines (32, 40, 48, 56, \
                 64 or 96)"
            )
        })?;
    let bits = u128::from(address) & (u128::MAX << (128 - u32::from(length)));
    // RFC 6052 2.2: bits 64 to 71 are zero in every synthesized address; only a /96 prefix
    // covers them.
    if length == 96 && (bits >> 56) & 0xff != 0 {
        return Err(format!(
            "{text:?}: bits 64 to 71 (the u-octet) must be zero (RFC 6052 section 2.2)"
        ));
    }
    Ok((Ipv6Addr::from(bits), length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_ipv6_networks_of_the_six_lengths() {
        assert_eq!(
            parse_prefix(WELL_KNOWN_PREFIX),
            Ok(("64:ff9b::".parse().unwrap(), 96))
        );
        for length in PREFIX_LENGTHS {
            assert!(parse_prefix(&format!("2001:db8::/{length}")).is_ok());
        }
        // Bits past the length are the network's host part: cleared, as CoreDNS does.
        assert_eq!(
            parse_prefix("2001:db8:1:2::/32"),
            Ok(("2001:db8::".parse().unwrap(), 32))
        );
        for (text, why) in [
            ("64:ff9b::", "want ADDRESS/LENGTH"),
            (
                "64:ff9b::/72",
                "prefix length 72 is not one RFC 6052 defines",
            ),
            ("64:ff9b::/128", "prefix length 128"),
            ("64:ff9b::/x", "prefix length x"),
            ("10.0.0.0/96", "is not an IPv6 address"),
            ("64:ff9b:0:0:100::/96", "the u-octet"),
        ] {
            let err = parse_prefix(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
