//! A zone's `hosts:` section: names answered from hosts-file entries before the cache and the
//! upstreams, as CoreDNS's `hosts` plugin answers them (see [`crate::hosts`]).
//!
//! Its keys, their defaults and meanings are in README.md, "Configuration reference" (the
//! one list, checked against this model both ways by `tests/config_docs.rs`).
//!
//! A Corefile's `hosts` directive is translated into this section by
//! [`crate::nodecache::translate`](mod@crate::nodecache::translate) (its `FILE` defaults to `/etc/hosts` there, as in CoreDNS;
//! here a zone reads no file unless `file` names one).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{FieldPath, Invalid, ZoneName, duration};

/// The largest `ttl`: CoreDNS refuses a larger one.
pub const MAX_TTL_SECS: u64 = 65535;

/// Hosts-file entries served for a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostsConfig {
    /// The hosts file; none serves only `entries`.
    pub file: Option<PathBuf>,
    /// Hosts-file lines, served whatever the file holds (and after its records).
    pub entries: Vec<String>,
    /// Names outside these are neither read from the entries nor answered; empty means the
    /// zone's own name.
    pub zones: Vec<ZoneName>,
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// 0 reads the file once.
    #[serde(with = "duration")]
    pub reload: Duration,
    pub no_reverse: bool,
    pub fallthrough: Fallthrough,
    pub fallthrough_unsupported: bool,
}

impl Default for HostsConfig {
    fn default() -> Self {
        HostsConfig {
            file: None,
            entries: Vec::new(),
            zones: Vec::new(),
            ttl: Duration::from_secs(3600),
            reload: Duration::from_secs(5),
            no_reverse: false,
            fallthrough: Fallthrough::Off,
            fallthrough_unsupported: false,
        }
    }
}

impl HostsConfig {
    /// Range and consistency checks of the section at `at`.
    pub(super) fn validate(&self, at: FieldPath) -> Result<(), Invalid> {
        if self.file.is_none() && self.entries.is_empty() {
            return Err((at, "needs a file, entries, or both".into()));
        }
        let ttl = self.ttl.as_secs();
        if !(1..=MAX_TTL_SECS).contains(&ttl) || self.ttl.subsec_nanos() != 0 {
            return Err((
                at.key("ttl"),
                format!("must be whole seconds from 1s to {MAX_TTL_SECS}s"),
            ));
        }
        if self.fallthrough == Fallthrough::Zones(Vec::new()) {
            return Err((
                at.key("fallthrough"),
                "an empty list falls through nowhere: write false, true, or zones".into(),
            ));
        }
        if self.fallthrough_unsupported && self.fallthrough == Fallthrough::Off {
            return Err((
                at.key("fallthrough_unsupported"),
                "needs fallthrough (it uses the same zones)".into(),
            ));
        }
        Ok(())
    }
}

/// Where a name the entries do not hold (or no template matches) goes on to the cache and
/// upstreams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fallthrough {
    /// Nowhere: such a name is answered SERVFAIL (CoreDNS's answer: it has no SOA for an
    /// NXDOMAIN).
    #[default]
    Off,
    /// For every name.
    All,
    /// For names under these zones.
    Zones(Vec<ZoneName>),
}

impl Fallthrough {
    /// Whether a name not answered goes on (shared by `hosts` and `templates`).
    pub fn covers(&self, name: &crate::wire::Name) -> bool {
        match self {
            Fallthrough::Off => false,
            Fallthrough::All => true,
            Fallthrough::Zones(zones) => zones.iter().any(|z| name.is_subdomain_of(&z.0)),
        }
    }
}

impl Serialize for Fallthrough {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Fallthrough::Off => serializer.serialize_bool(false),
            Fallthrough::All => serializer.serialize_bool(true),
            Fallthrough::Zones(zones) => zones.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Fallthrough {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fallthrough;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a list of zones")
            }
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Fallthrough, E> {
                Ok(if on {
                    Fallthrough::All
                } else {
                    Fallthrough::Off
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Fallthrough, A::Error> {
                let zones = Vec::<ZoneName>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(Fallthrough::Zones(zones))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
