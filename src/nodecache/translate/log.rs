//! `log [NAMES...] [FORMAT] { class CLASSES... }`: which answers of the block's zones the query
//! log writes, read as CoreDNS's `log` setup reads it. NAMES default to `.`; each of the
//! block's zones must be under one of them (a narrower scope would need a filter per name:
//! write a block for that zone instead). A FORMAT (an argument with `{`) is accepted with a
//! warning, since our log lines have one format. CLASSES are `success`, `denial`, `error` and
//! `all` (the default); several `log` lines add up.

use super::{CorefileError, Directive, Translator};
use crate::config::zone_log::ZoneLog;
use crate::wire::Name;

impl Translator<'_> {
    pub(super) fn log(
        &mut self,
        d: &Directive,
        block_zones: &[(String, usize)],
    ) -> Result<ZoneLog, CorefileError> {
        let line = d.name.line;
        let mut names: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        if names.last().is_some_and(|last| last.contains('{')) {
            names.pop();
            self.warn(
                line,
                "log: the FORMAT argument is not read: query log lines have one format \
                 (client, proto, name, qtype, rcode, bytes)",
            );
        }
        let scopes = if names.is_empty() { vec!["."] } else { names };
        let scopes = scopes
            .iter()
            .map(|scope| {
                Name::from_dotted(scope)
                    .map_err(|err| self.err(line, format!("log {scope}: not a name: {err}")))
            })
            .collect::<Result<Vec<Name>, _>>()?;
        for (zone, _) in block_zones {
            let zone = Name::from_dotted(zone)
                .map_err(|err| self.err(line, format!("{zone}: not a name: {err}")))?;
            if !scopes.iter().any(|scope| zone.is_subdomain_of(scope)) {
                return Err(self.err(
                    line,
                    format!(
                        "log: the block's zone {} is not under the names given; logging part \
                         of a zone is not supported: write a block for the names to log",
                        zone.to_dotted()
                    ),
                ));
            }
        }
        let mut classes = None::<ZoneLog>;
        for option in &d.block {
            let (name, args) = (&option[0], &option[1..]);
            if name.text != "class" {
                return Err(self.err(
                    name.line,
                    format!("log: unknown property `{}` (supported: class)", name.text),
                ));
            }
            if args.is_empty() {
                return Err(self.err(name.line, "log: class needs at least one CLASS"));
            }
            for arg in args {
                let class = ZoneLog::parse_class(&arg.text).ok_or_else(|| {
                    self.err(
                        arg.line,
                        format!(
                            "log: unknown class `{}` (success, denial, error, all)",
                            arg.text
                        ),
                    )
                })?;
                classes = Some(classes.unwrap_or_default().with(class));
            }
        }
        Ok(classes.unwrap_or(ZoneLog::ALL))
    }
}
