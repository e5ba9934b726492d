//! `template CLASS TYPE [ZONES...] { match REGEX...; answer RR...; authority RR...;
//! additional RR...; rcode CODE; fallthrough [ZONES...] }`: one entry of a zone's `templates`
//! list, read as CoreDNS's `template` setup reads it. ZONES default to the block's zones; each
//! option line may repeat and adds to the list it names. The template is checked here, so a
//! bad regex or substitution is reported at its Corefile line.

use super::{CorefileError, Directive, Token, Translator};
use crate::config::FieldPath;
use crate::config::template::TemplateConfig;
use crate::wire::Name;

impl Translator<'_> {
    /// `block_zones` are the block's zone names, the default ZONES.
    pub(super) fn template(
        &mut self,
        d: &Directive,
        block_zones: &[(String, usize)],
    ) -> Result<TemplateConfig, CorefileError> {
        let line = d.name.line;
        let [class, qtype, zones @ ..] = d.args.as_slice() else {
            return Err(self.err(line, "template needs a CLASS and a TYPE (such as IN AAAA)"));
        };
        let mut template = TemplateConfig::new(&qtype.text);
        template.class = class.text.clone();
        template.zones = self.plugin_zones("template", zones, block_zones)?;
        // The line of each list entry, by the field name compile's errors use.
        let mut lines: Vec<(FieldPath, usize)> = Vec::new();
        for option in &d.block {
            self.template_option(&mut template, option, &mut lines)?;
        }
        let zone = template.zones.first().map_or(Name::root(), |z| z.0);
        template.compile(&zone).map_err(|e| {
            let at = lines
                .iter()
                .find(|(field, _)| *field == e.field)
                .map_or(line, |&(_, at)| at);
            self.err(at, format!("template: {}: {}", e.field, e.message))
        })?;
        Ok(template)
    }

    fn template_option(
        &mut self,
        template: &mut TemplateConfig,
        option: &[Token],
        lines: &mut Vec<(FieldPath, usize)>,
    ) -> Result<(), CorefileError> {
        let name = &option[0];
        let args = &option[1..];
        let line = name.line;
        let list = match name.text.as_str() {
            "match" => &mut template.matches,
            "answer" => &mut template.answer,
            "authority" => &mut template.authority,
            "additional" => &mut template.additional,
            "rcode" => {
                let [code] = args else {
                    return Err(self.err(line, "template: rcode needs one CODE"));
                };
                template.rcode = code.text.clone();
                lines.push((FieldPath::top("rcode"), line));
                return Ok(());
            }
            "fallthrough" => {
                template.fallthrough = self.fallthrough("template", args)?;
                return Ok(());
            }
            // CoreDNS reads and ignores it: CNAME targets are always looked up there.
            "upstream" => return Ok(()),
            "ederror" | "var" | "expr" => {
                return Err(self.err(line, format!("template: `{}` is not supported", name.text)));
            }
            other => {
                return Err(self.err(
                    line,
                    format!(
                        "template: unknown property `{other}` (supported: match, answer, \
                         authority, additional, rcode, fallthrough)"
                    ),
                ));
            }
        };
        if args.is_empty() {
            return Err(self.err(line, format!("template: {} needs an argument", name.text)));
        }
        for arg in args {
            lines.push((FieldPath::top(&name.text).item(list.len()), line));
            list.push(arg.text.clone());
        }
        Ok(())
    }
}
