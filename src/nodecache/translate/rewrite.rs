//! `rewrite [continue|stop] name [exact|prefix|suffix|substring|regex] FROM TO [answer auto |
//! answer name FROM TO | answer value FROM TO]...`, or the same words after `rewrite
//! [continue|stop]` inside a block: one entry of a zone's `rewrite` list, read as CoreDNS's
//! `rewrite` setup reads it (a block's lines are the directive's words continued; `answer` may
//! be left out before the second and later answer rules; two words after `name` are an `exact`
//! rule). Only the `name` field is served; the rule is checked here, so a bad regex is reported
//! at its Corefile line.

use super::{CorefileError, Directive, Token, Translator};
use crate::config::FieldPath;
use crate::config::rewrite::{AnswerConfig, AnswerKind, Mode, NameMatch, RewriteConfig};

/// The fields of CoreDNS's `rewrite` that are refused.
const UNSUPPORTED_FIELDS: [&str; 6] = ["type", "class", "edns0", "ttl", "cname", "rcode"];

impl Translator<'_> {
    pub(super) fn rewrite(&self, d: &Directive) -> Result<RewriteConfig, CorefileError> {
        let line = d.name.line;
        let mut words: Vec<&Token> = d.args.iter().collect();
        if words.len() < 2 {
            words.extend(d.block.iter().flatten());
        } else if let Some(first) = d.block.first() {
            return Err(self.err(
                first[0].line,
                "rewrite: a rule written on its line takes no block",
            ));
        }
        let (mode, rest) = match words.split_first() {
            Some((first, rest)) if first.text.eq_ignore_ascii_case("continue") => {
                (Mode::Continue, rest)
            }
            Some((first, rest)) if first.text.eq_ignore_ascii_case("stop") => (Mode::Stop, rest),
            _ => (Mode::Stop, &words[..]),
        };
        let Some((field, args)) = rest.split_first() else {
            return Err(self.err(line, "rewrite needs a rule (such as name suffix FROM TO)"));
        };
        let field_name = field.text.to_lowercase();
        match field_name.as_str() {
            "name" => {}
            "answer" => {
                return Err(self.err(field.line, "rewrite: answer rules must follow a name rule"));
            }
            other if UNSUPPORTED_FIELDS.contains(&other) => {
                return Err(self.err(
                    field.line,
                    format!("rewrite {other} is not supported (supported: rewrite name)"),
                ));
            }
            other => {
                return Err(self.err(
                    field.line,
                    format!("rewrite: unknown field `{other}` (supported: name)"),
                ));
            }
        }
        let (rule, lines) = self.name_rule(mode, field, args)?;
        rule.compile().map_err(|e| {
            let at = lines
                .iter()
                .find(|(f, _)| *f == e.field)
                .map_or(line, |&(_, at)| at);
            self.err(at, format!("rewrite: {}: {}", e.field, e.message))
        })?;
        Ok(rule)
    }

    /// The words after `name`, with the line of each field compile's errors name.
    fn name_rule(
        &self,
        mode: Mode,
        name: &Token,
        args: &[&Token],
    ) -> Result<(RewriteConfig, Vec<(FieldPath, usize)>), CorefileError> {
        let (kind, from, to, answers) = match args {
            [] | [_] => {
                return Err(self.err(name.line, "rewrite name needs FROM and TO"));
            }
            [from, to] => (NameMatch::Exact, *from, *to, &[][..]),
            [kind, from, to, answers @ ..] => (self.name_match(kind)?, *from, *to, answers),
        };
        let mut lines = vec![
            (FieldPath::top("from"), from.line),
            (FieldPath::top("to"), to.line),
        ];
        let answer = self.answer_rules(answers, &mut lines)?;
        let rule = RewriteConfig {
            kind,
            from: from.text.clone(),
            to: to.text.clone(),
            mode,
            answer,
        };
        Ok((rule, lines))
    }

    fn name_match(&self, kind: &Token) -> Result<NameMatch, CorefileError> {
        Ok(match kind.text.to_lowercase().as_str() {
            "exact" => NameMatch::Exact,
            "prefix" => NameMatch::Prefix,
            "suffix" => NameMatch::Suffix,
            "substring" => NameMatch::Substring,
            "regex" => NameMatch::Regex,
            other => {
                return Err(self.err(
                    kind.line,
                    format!(
                        "rewrite name: unknown match `{other}` (exact, prefix, suffix, \
                         substring, regex)"
                    ),
                ));
            }
        })
    }

    /// `answer auto | answer name FROM TO | answer value FROM TO`, repeated, the `answer` word
    /// optional after the first, as CoreDNS's `parseAnswerRules` reads them.
    fn answer_rules(
        &self,
        words: &[&Token],
        lines: &mut Vec<(FieldPath, usize)>,
    ) -> Result<Vec<AnswerConfig>, CorefileError> {
        let mut rules = Vec::new();
        let mut rest = words;
        while let Some((first, after)) = rest.split_first() {
            let is_answer = first.text == "answer";
            if rules.is_empty() && !is_answer {
                return Err(self.err(
                    first.line,
                    format!(
                        "rewrite name: `{}` after FROM TO: expected answer auto, answer name \
                         FROM TO or answer value FROM TO",
                        first.text
                    ),
                ));
            }
            let words = if is_answer { after } else { rest };
            let Some((kind, after)) = words.split_first() else {
                return Err(self.err(first.line, "rewrite: answer needs auto, name or value"));
            };
            let index = rules.len();
            lines.push((FieldPath::top("answer").item(index), kind.line));
            let (rule, after) = match kind.text.as_str() {
                "auto" => (AnswerConfig::new(AnswerKind::Auto, None), after),
                "name" | "value" => {
                    let [from, to, after @ ..] = after else {
                        return Err(self.err(
                            kind.line,
                            format!("rewrite: answer {} needs FROM and TO", kind.text),
                        ));
                    };
                    lines.push((FieldPath::top("answer").item(index).key("from"), from.line));
                    lines.push((FieldPath::top("answer").item(index).key("to"), to.line));
                    let kind = match kind.text.as_str() {
                        "name" => AnswerKind::Name,
                        _ => AnswerKind::Value,
                    };
                    (AnswerConfig::new(kind, Some((&from.text, &to.text))), after)
                }
                other => {
                    return Err(self.err(
                        kind.line,
                        format!("rewrite: unknown answer rule `{other}` (auto, name, value)"),
                    ));
                }
            };
            rules.push(rule);
            rest = after;
        }
        // compile names the whole list for a conflict between its rules: the first one's line.
        let first_answer = FieldPath::top("answer").item(0);
        if let Some(&(_, first)) = lines.iter().find(|(f, _)| *f == first_answer) {
            lines.push((FieldPath::top("answer"), first));
        }
        Ok(rules)
    }
}
