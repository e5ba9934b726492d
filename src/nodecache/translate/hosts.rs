//! `hosts [FILE [ZONES...]] { [INLINE...] ttl SECONDS; no_reverse; reload DURATION;
//! fallthrough [ZONES...]; fallthrough_unsupported }`: a zone's `hosts` section, read as
//! CoreDNS's `hosts` setup reads it. FILE defaults to `/etc/hosts`, ZONES to the block's
//! zones; lines before `fallthrough` that are no option are inline entries, after it they are
//! errors.

use std::path::PathBuf;

use super::{CorefileError, Directive, Token, Translator};
use crate::config::ZoneName;
use crate::config::hosts::{Fallthrough, HostsConfig, MAX_TTL_SECS};
use crate::wire::Name;

/// The file CoreDNS's `hosts` reads when the directive names none.
pub(super) const HOSTS_FILE: &str = "/etc/hosts";

impl Translator<'_> {
    /// `block_zones` are the block's zone names, the default ZONES.
    pub(super) fn hosts(
        &mut self,
        d: &Directive,
        block_zones: &[(String, usize)],
    ) -> Result<HostsConfig, CorefileError> {
        let mut hosts = HostsConfig {
            file: Some(PathBuf::from(HOSTS_FILE)),
            ..HostsConfig::default()
        };
        if let [file, zones @ ..] = d.args.as_slice() {
            hosts.file = Some(PathBuf::from(&file.text));
            hosts.zones = self.plugin_zones("hosts", zones, &[])?;
        }
        if hosts.zones.is_empty() {
            hosts.zones = self.plugin_zones("hosts", &[], block_zones)?;
        }
        for option in &d.block {
            self.hosts_option(&mut hosts, option)?;
        }
        if hosts.fallthrough_unsupported && hosts.fallthrough == Fallthrough::Off {
            return Err(self.err(d.name.line, "fallthrough_unsupported requires fallthrough"));
        }
        Ok(hosts)
    }

    /// One line of the `hosts` block: an option, or (before `fallthrough`) an entry.
    fn hosts_option(
        &mut self,
        hosts: &mut HostsConfig,
        option: &[Token],
    ) -> Result<(), CorefileError> {
        let name = &option[0];
        let args = &option[1..];
        let line = name.line;
        match name.text.as_str() {
            "fallthrough" => {
                hosts.fallthrough = self.fallthrough("hosts", args)?;
            }
            "fallthrough_unsupported" | "no_reverse" if !args.is_empty() => {
                return Err(self.err(line, format!("hosts: {} takes no arguments", name.text)));
            }
            "fallthrough_unsupported" => hosts.fallthrough_unsupported = true,
            "no_reverse" => hosts.no_reverse = true,
            "ttl" => {
                let [ttl, ..] = args else {
                    return Err(self.err(line, "hosts: ttl needs a time in seconds"));
                };
                let secs = ttl
                    .text
                    .parse::<u64>()
                    .map_err(|_| self.err(line, "hosts: ttl needs a number of seconds"))?;
                if !(1..=MAX_TTL_SECS).contains(&secs) {
                    return Err(self.err(
                        line,
                        format!("hosts: ttl {secs} is invalid (1 to {MAX_TTL_SECS} seconds)"),
                    ));
                }
                hosts.ttl = std::time::Duration::from_secs(secs);
            }
            "reload" => {
                let [every] = args else {
                    return Err(self.err(
                        line,
                        "hosts: reload needs a duration (zero seconds to disable)",
                    ));
                };
                hosts.reload = self.duration(every)?;
            }
            // CoreDNS takes every other line as an entry until `fallthrough` is seen.
            _ if hosts.fallthrough == Fallthrough::Off => {
                let words: Vec<&str> = option.iter().map(|t| t.text.as_str()).collect();
                hosts.entries.push(words.join(" "));
            }
            other => {
                return Err(self.err(
                    line,
                    format!(
                        "hosts: unknown property `{other}` (entries go before fallthrough; \
                         options: ttl, no_reverse, reload, fallthrough, fallthrough_unsupported)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A plugin's ZONES: `args` written after it, else `block_zones` (with their lines).
    /// `plugin` names it in errors.
    pub(super) fn plugin_zones(
        &self,
        plugin: &str,
        args: &[Token],
        block_zones: &[(String, usize)],
    ) -> Result<Vec<ZoneName>, CorefileError> {
        let mut zones = Vec::new();
        for zone in args {
            let (text, _port) = self.zone_key(zone, 0)?;
            zones.push(self.plugin_zone(plugin, &text, zone.line)?);
        }
        if args.is_empty() {
            for (text, line) in block_zones {
                zones.push(self.plugin_zone(plugin, text, *line)?);
            }
        }
        Ok(zones)
    }

    /// `fallthrough [ZONES...]`'s arguments, as CoreDNS's plugins read them: none is every name.
    pub(super) fn fallthrough(
        &self,
        plugin: &str,
        args: &[Token],
    ) -> Result<Fallthrough, CorefileError> {
        Ok(if args.is_empty() {
            Fallthrough::All
        } else {
            Fallthrough::Zones(self.plugin_zones(plugin, args, &[])?)
        })
    }

    fn plugin_zone(
        &self,
        plugin: &str,
        text: &str,
        line: usize,
    ) -> Result<ZoneName, CorefileError> {
        Name::from_dotted(&text.to_lowercase())
            .map(ZoneName)
            .map_err(|e| self.err(line, format!("{plugin}: invalid zone {text:?}: {e}")))
    }
}
