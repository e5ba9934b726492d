//! A zone's `templates:` list: answers made from the query name, as CoreDNS's `template` plugin
//! makes them (see [`crate::template`]). Each entry is one `template` directive; they are tried
//! in order.
//!
//! Its keys, their defaults and meanings are in README.md, "Configuration reference" (the
//! one list, checked against this model both ways by `tests/config_docs.rs`).
//!
//! Substitutions (the part of Go's templates the field uses): `{{ .Name }}`, `{{ .Zone }}`,
//! `{{ .Class }}`, `{{ .Type }}`, `{{ .Remote }}`, `{{ index .Match N }}`, `{{ .Group.NAME }}`
//! (or `{{ index .Group "NAME" }}`), each with Go's `{{-`/`-}}` trimming; anything else is
//! refused when the config is read. Records without substitutions are read then too; records
//! with them are read per query, and one that does not read makes a SERVFAIL (logged).
//!
//! A Corefile's `template` directive is translated into this list by
//! [`crate::nodecache::translate`](mod@crate::nodecache::translate).

use regex::Regex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::hosts::Fallthrough;
use super::{FieldPath, ZoneName};
use crate::wire::text::{
    CLASS_ANY, Record, TYPE_ANY, class_from_str, parse_record, rcode_from_str, rtype_from_str,
};
use crate::wire::{Name, RType, Rcode};

/// CoreDNS's limit on a `match` expression's length, against patterns that take too much memory
/// to compile.
pub const MAX_REGEX_LEN: usize = 10_000;

/// One template of a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    #[serde(default = "default_class")]
    pub class: String,
    #[serde(rename = "type")]
    pub qtype: String,
    /// Empty means the zone's own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneName>,
    /// Empty means `.*`.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authority: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<String>,
    #[serde(default = "default_rcode")]
    pub rcode: String,
    #[serde(default)]
    pub fallthrough: Fallthrough,
}

fn default_class() -> String {
    "IN".into()
}

fn default_rcode() -> String {
    "NOERROR".into()
}

impl TemplateConfig {
    /// A template of `qtype`'s records in class IN, with CoreDNS's defaults otherwise.
    pub fn new(qtype: &str) -> TemplateConfig {
        TemplateConfig {
            class: default_class(),
            qtype: qtype.into(),
            zones: Vec::new(),
            matches: Vec::new(),
            answer: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            rcode: default_rcode(),
            fallthrough: Fallthrough::Off,
        }
    }

    /// The template read and checked for the zone named `zone`: what answers queries.
    pub fn compile(&self, zone: &Name) -> Result<Template, TemplateError> {
        let class = class_from_str(&self.class).ok_or_else(|| {
            TemplateError::new(
                FieldPath::top("class"),
                format!("unknown class `{}`", self.class),
            )
        })?;
        let qtype = rtype_from_str(&self.qtype).ok_or_else(|| {
            TemplateError::new(
                FieldPath::top("type"),
                format!("unknown type `{}`", self.qtype),
            )
        })?;
        let rcode = rcode_from_str(&self.rcode).ok_or_else(|| {
            TemplateError::new(
                FieldPath::top("rcode"),
                format!(
                    "unknown rcode `{}` (NOERROR, NXDOMAIN, SERVFAIL, REFUSED...)",
                    self.rcode
                ),
            )
        })?;
        if self.fallthrough == Fallthrough::Zones(Vec::new()) {
            return Err(TemplateError::new(
                FieldPath::top("fallthrough"),
                "an empty list falls through nowhere: write false, true, or zones",
            ));
        }
        let mut regexes = Vec::new();
        for (i, pattern) in self.matches.iter().enumerate() {
            let field = FieldPath::top("match").item(i);
            if pattern.len() > MAX_REGEX_LEN {
                return Err(TemplateError::new(
                    field,
                    format!("longer than {MAX_REGEX_LEN} characters"),
                ));
            }
            let regex = Regex::new(pattern)
                .map_err(|e| TemplateError::new(field, format!("bad regular expression: {e}")))?;
            regexes.push(regex);
        }
        if regexes.is_empty() {
            regexes.push(
                Regex::new(".*")
                    .map_err(|e| TemplateError::new(FieldPath::top("match"), e.to_string()))?,
            );
        }
        let sections = [
            ("answer", &self.answer),
            ("authority", &self.authority),
            ("additional", &self.additional),
        ];
        let mut records: [Vec<Rr>; 3] = Default::default();
        for ((key, texts), out) in sections.into_iter().zip(&mut records) {
            for (i, text) in texts.iter().enumerate() {
                let rr = Rr::read(text, &regexes)
                    .map_err(|message| TemplateError::new(FieldPath::top(key).item(i), message))?;
                out.push(rr);
            }
        }
        let [answer, authority, additional] = records;
        Ok(Template {
            class,
            qtype,
            zones: if self.zones.is_empty() {
                vec![*zone]
            } else {
                self.zones.iter().map(|z| z.0).collect()
            },
            matched: !self.matches.is_empty(),
            regexes,
            answer,
            authority,
            additional,
            rcode,
            fallthrough: self.fallthrough.clone(),
        })
    }
}

/// A template's field (its path below the template, such as `match[0]`) and what is wrong
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct TemplateError {
    pub field: FieldPath,
    pub message: String,
}

impl TemplateError {
    fn new(field: FieldPath, message: impl Into<String>) -> TemplateError {
        TemplateError {
            field,
            message: message.into(),
        }
    }
}

/// A checked template, ready to answer.
#[derive(Debug, Clone)]
pub struct Template {
    /// [`CLASS_ANY`] answers every class.
    pub class: u16,
    /// [`TYPE_ANY`] answers every type.
    pub qtype: RType,
    pub zones: Vec<Name>,
    /// `.*` when the template has no `match`.
    pub regexes: Vec<Regex>,
    /// The template has a `match` (else every name matches).
    pub matched: bool,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    pub rcode: Rcode,
    pub fallthrough: Fallthrough,
}

impl Template {
    /// Whether it answers every class.
    pub fn any_class(&self) -> bool {
        self.class == CLASS_ANY
    }

    /// Whether it answers every type.
    pub fn any_type(&self) -> bool {
        self.qtype == TYPE_ANY
    }

    /// Whether an answer needs the name written out: to try `match` on it, or for a record's
    /// substitutions. Without `match` every name matches.
    pub fn reads_name(&self) -> bool {
        self.matched
            || [&self.answer, &self.authority, &self.additional]
                .into_iter()
                .flatten()
                .any(|rr| matches!(rr, Rr::Rendered(_)))
    }
}

/// One record of a template: read once, or rendered per query.
#[derive(Debug, Clone)]
pub enum Rr {
    Static(Box<Record>),
    Rendered(Text),
}

impl Rr {
    fn read(text: &str, regexes: &[Regex]) -> Result<Rr, String> {
        let parsed = Text::parse(text)?;
        parsed.check(regexes)?;
        match parsed.0.as_slice() {
            [] => parse_record("")
                .map(|r| Rr::Static(Box::new(r)))
                .map_err(|e| e.to_string()),
            [Piece::Literal(literal)] => parse_record(literal)
                .map(|r| Rr::Static(Box::new(r)))
                .map_err(|e| e.to_string()),
            _ => Ok(Rr::Rendered(parsed)),
        }
    }
}

/// A record's text with its substitutions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub Vec<Piece>);

/// A part of a [`Text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    /// `.Name`: the query name, lowercased, with its trailing dot.
    Name,
    /// `.Zone`: the template's zone the name is in.
    Zone,
    /// `.Class`: the query's class (the template's for a query of class ANY).
    Class,
    /// `.Type`: the query's type (the template's for a query of type ANY).
    Type,
    /// `.Remote`: the client's address.
    Remote,
    /// `index .Match N`: the regex's Nth capture, 0 the whole match.
    Match(usize),
    /// `.Group.NAME`: a capture group by name (or number).
    Group(String),
}

const SUPPORTED: &str = "supported: .Name, .Zone, .Class, .Type, .Remote, index .Match N, \
                         .Group.NAME, index .Group \"NAME\"";

impl Text {
    /// Splits `text` at its `{{ ... }}` actions, refusing any it does not support.
    pub fn parse(text: &str) -> Result<Text, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            push_literal(&mut pieces, &rest[..open], trim_next);
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` without `}}}}` in {text:?}"))?;
            let mut action = &after[..close];
            rest = &after[close + 2..];
            // Go's trim markers: `{{- ` and ` -}}` eat the whitespace beside the action.
            if let Some(inner) = action.strip_prefix("- ") {
                if let Some(Piece::Literal(before)) = pieces.last_mut() {
                    before.truncate(before.trim_end().len());
                }
                action = inner;
            }
            trim_next = false;
            if let Some(inner) = action.strip_suffix(" -") {
                trim_next = true;
                action = inner;
            }
            pieces.push(action_piece(action.trim()).ok_or_else(|| {
                format!("unsupported template expression `{{{{{action}}}}}` ({SUPPORTED})")
            })?);
        }
        push_literal(&mut pieces, rest, trim_next);
        Ok(Text(pieces))
    }

    /// Refuses captures that no regex of the template has: Go would write `<no value>` or fail
    /// for them on every query.
    fn check(&self, regexes: &[Regex]) -> Result<(), String> {
        for piece in &self.0 {
            match piece {
                Piece::Match(n) if regexes.iter().all(|r| *n >= r.captures_len()) => {
                    return Err(format!(
                        "`index .Match {n}`: no regex of match has {n} capture groups"
                    ));
                }
                Piece::Group(group)
                    if !regexes.iter().any(|r| {
                        r.capture_names().flatten().any(|g| g == group)
                            || group.parse::<usize>().is_ok_and(|n| n < r.captures_len())
                    }) =>
                {
                    return Err(format!(
                        "`.Group.{group}`: no regex of match has that group"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn push_literal(pieces: &mut Vec<Piece>, text: &str, trim_start: bool) {
    let text = if trim_start { text.trim_start() } else { text };
    if !text.is_empty() {
        pieces.push(Piece::Literal(text.to_string()));
    }
}

fn action_piece(action: &str) -> Option<Piece> {
    let words: Vec<&str> = action.split_whitespace().collect();
    Some(match words.as_slice() {
        [".Name"] => Piece::Name,
        [".Zone"] => Piece::Zone,
        [".Class"] => Piece::Class,
        [".Type"] => Piece::Type,
        [".Remote"] => Piece::Remote,
        ["index", ".Match", n] => Piece::Match(n.parse().ok()?),
        ["index", ".Group", quoted] => Piece::Group(
            quoted
                .strip_prefix('"')?
                .strip_suffix('"')
                .filter(|g| !g.is_empty())?
                .to_string(),
        ),
        [field] => {
            let group = field.strip_prefix(".Group.")?;
            let ident = group
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && group.chars().all(|c| c.is_alphanumeric() || c == '_');
            ident.then(|| Piece::Group(group.to_string()))?
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        Name::from_dotted("example.internal").unwrap()
    }

    #[test]
    fn texts_split_at_their_substitutions() {
        let text = Text::parse("{{ .Name }} 60 IN A {{ .Group.a }}.{{index .Match 2}}").unwrap();
        assert_eq!(
            text.0,
            [
                Piece::Name,
                Piece::Literal(" 60 IN A ".into()),
                Piece::Group("a".into()),
                Piece::Literal(".".into()),
                Piece::Match(2),
            ]
        );
        let trimmed = Text::parse("a  {{- .Zone -}}  b {{ index .Group \"x\" }}").unwrap();
        assert_eq!(
            trimmed.0,
            [
                Piece::Literal("a".into()),
                Piece::Zone,
                Piece::Literal("b ".into()),
                Piece::Group("x".into()),
            ]
        );
        for bad in [
            "{{ .Message }}",
            "{{ .Group }}",
            "{{ printf \"%s\" .Name }}",
            "{{ .Name",
        ] {
            assert!(Text::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compile_checks_every_field() {
        let err = |change: fn(&mut TemplateConfig)| {
            let mut t = TemplateConfig::new("A");
            change(&mut t);
            t.compile(&zone()).unwrap_err().to_string()
        };
        assert_eq!(err(|t| t.qtype = "AAA".into()), "type: unknown type `AAA`");
        assert_eq!(
            err(|t| t.class = "INN".into()),
            "class: unknown class `INN`"
        );
        assert!(err(|t| t.rcode = "NOPE".into()).starts_with("rcode: unknown rcode `NOPE`"));
        assert!(
            err(|t| t.matches = vec![".*".into(), "(".into()]).starts_with("match[1]: bad regular")
        );
        assert!(
            err(|t| t.answer = vec!["{{ .Name }} A {{ .Message }}".into()])
                .starts_with("answer[0]: unsupported template expression `{{ .Message }}`")
        );
        assert!(
            err(|t| t.authority = vec!["x IN CAA 0 issue y".into()])
                .starts_with("authority[0]: CAA records")
        );
        assert!(
            err(|t| t.answer = vec!["{{ .Name }} A {{ .Group.b }}".into()])
                .contains("no regex of match has that group")
        );
        assert!(
            err(|t| t.additional = vec!["{{ .Name }} A {{ index .Match 1 }}".into()])
                .starts_with("additional[0]")
        );

        let mut t = TemplateConfig::new("ANY");
        t.class = "ANY".into();
        t.matches = vec!["^(?P<a>[0-9]+)[.]".into()];
        t.answer = vec![
            "x. 60 A 10.0.0.1".into(),
            "{{ .Name }} 60 A 10.0.0.{{ .Group.a }}".into(),
        ];
        let compiled = t.compile(&zone()).unwrap();
        assert!(compiled.any_class() && compiled.any_type());
        assert_eq!(compiled.zones, [zone()]);
        assert!(matches!(compiled.answer[0], Rr::Static(_)));
        assert!(matches!(compiled.answer[1], Rr::Rendered(_)));
    }
}
