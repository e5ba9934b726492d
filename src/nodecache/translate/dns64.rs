//! `dns64 [PREFIX] { prefix PREFIX; translate_all; allow_ipv4 }`: a zone's `dns64` section,
//! read as CoreDNS's `dns64` setup reads it. PREFIX defaults to `64:ff9b::/96`; it is given
//! once, as the argument or in the block. Its length must be one RFC 6052 defines (CoreDNS
//! also takes 72, 80 and 88, for which the RFC has no address format).

use super::{CorefileError, Directive, Token, Translator};
use crate::config::dns64::{Dns64Config, parse_prefix};

impl Translator<'_> {
    pub(super) fn dns64(&self, d: &Directive) -> Result<Dns64Config, CorefileError> {
        let mut dns64 = Dns64Config::default();
        let mut prefix_line = None;
        match d.args.as_slice() {
            [] => {}
            [prefix] => {
                dns64.prefix = self.dns64_prefix(prefix)?;
                prefix_line = Some(prefix.line);
            }
            [_, extra, ..] => {
                return Err(self.err(extra.line, "dns64 takes at most one PREFIX"));
            }
        }
        for option in &d.block {
            let (name, args) = (&option[0], &option[1..]);
            let line = name.line;
            match (name.text.as_str(), args) {
                ("prefix", [prefix]) => {
                    if let Some(first) = prefix_line {
                        return Err(self.err(
                            line,
                            format!("dns64: a second prefix (the first is on line {first})"),
                        ));
                    }
                    dns64.prefix = self.dns64_prefix(prefix)?;
                    prefix_line = Some(line);
                }
                ("prefix", _) => {
                    return Err(self.err(line, "dns64: prefix needs one PREFIX"));
                }
                ("translate_all" | "allow_ipv4", [_, ..]) => {
                    return Err(self.err(line, format!("dns64: {} takes no arguments", name.text)));
                }
                ("translate_all", []) => dns64.translate_all = true,
                ("allow_ipv4", []) => dns64.allow_ipv4 = true,
                (other, _) => {
                    return Err(self.err(
                        line,
                        format!(
                            "dns64: unknown property `{other}` (options: prefix, translate_all, \
                             allow_ipv4)"
                        ),
                    ));
                }
            }
        }
        Ok(dns64)
    }

    /// A PREFIX as written, once it reads as one.
    fn dns64_prefix(&self, prefix: &Token) -> Result<String, CorefileError> {
        parse_prefix(&prefix.text)
            .map(|_| prefix.text.clone())
            .map_err(|why| self.err(prefix.line, format!("dns64: {why}")))
    }
}
