//! A zone's `rewrite:` list: question names rewritten before they go upstream, and the answers
//! rewritten back, as CoreDNS's `rewrite name` rules do (see [`crate::rewrite`]). Each entry is
//! one rule; they are tried in order.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `zones[].rewrite[].match` | required | `exact`, `prefix`, `suffix`, `substring` or `regex` |
//! | `zones[].rewrite[].from` | required | what the name (lowercased, with its trailing dot) must be, begin with, end with or contain; for `regex`, the expression |
//! | `zones[].rewrite[].to` | required | what replaces it; for `regex` the whole new name, `{N}` standing for the Nth group |
//! | `zones[].rewrite[].mode` | `stop` | `stop`: a rule that matched is the last one tried; `continue`: the next rule is tried on the rewritten name |
//! | `zones[].rewrite[].answer` | `[]` | how the answer's records are rewritten back: `{type: auto}`, `{type: name, from: REGEX, to: NAME}`, `{type: value, from: REGEX, to: NAME}`, in order |
//!
//! As in CoreDNS, `from` and `to` of the plain matches are lowercased and get a trailing dot if
//! they lack one (so `prefix foo` matches `foo.`, not `food.`), as does every `to`; an `exact`
//! rule always reverts the answer's names as `auto` does; `auto` cannot be combined with
//! `name` answer rules.
//!
//! A Corefile's `rewrite` directive is translated into this list by
//! [`crate::nodecache::translate`](mod@crate::nodecache::translate).

use regex::Regex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::FieldPath;

/// CoreDNS's limit on a regular expression's length, against patterns that take too much
/// memory to compile.
pub const MAX_REGEX_LEN: usize = 10_000;

/// One rule of a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    #[serde(rename = "match")]
    pub kind: NameMatch,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer: Vec<AnswerConfig>,
}

/// How a rule's `from` is compared with the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameMatch {
    Exact,
    Prefix,
    Suffix,
    Substring,
    Regex,
}

/// What happens after a rule matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No later rule is tried (CoreDNS's default).
    #[default]
    Stop,
    /// The next rule is tried on the rewritten name.
    Continue,
}

/// One answer rule of a rewrite rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerConfig {
    #[serde(rename = "type")]
    pub kind: AnswerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// CoreDNS's `answer auto`, `answer name FROM TO`, `answer value FROM TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// The rewrite undone on owner names and values, whatever the match.
    Auto,
    /// Owner names matching `from` are replaced by `to`.
    Name,
    /// Names in record data (CNAME, NS, PTR, MX, SRV, SOA MNAME, NAPTR) likewise.
    Value,
}

impl AnswerConfig {
    /// An answer rule of `kind` with its regex and replacement (none for `auto`).
    pub fn new(kind: AnswerKind, from_to: Option<(&str, &str)>) -> AnswerConfig {
        AnswerConfig {
            kind,
            from: from_to.map(|(from, _)| from.to_string()),
            to: from_to.map(|(_, to)| to.to_string()),
        }
    }
}

/// A rule's field (its key below the rule, such as `answer[1].from`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct RewriteConfigError {
    pub field: FieldPath,
    pub message: String,
}

impl RewriteConfigError {
    fn new(field: FieldPath, message: impl Into<String>) -> RewriteConfigError {
        RewriteConfigError {
            field,
            message: message.into(),
        }
    }
}

/// A checked rule, ready to rewrite.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    pub mode: Mode,
    pub matcher: Matcher,
    /// The replacement, normalized; for a regex, with its `{N}` still in it.
    pub to: String,
    /// Whether the answer is reverted by undoing this rule's own rewrite (CoreDNS's `auto`
    /// outside `suffix`, which has [`StringRewrite::Suffix`] rules in `answers` instead).
    pub remap: bool,
    /// The answer rules that do not depend on the name asked, in order.
    pub answers: Vec<AnswerRule>,
}

/// What a rule compares with the name.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Substring(String),
    Regex(Regex),
}

/// One rewrite of an answer's records.
#[derive(Debug, Clone)]
pub enum AnswerRule {
    /// Of owner names.
    Name(StringRewrite),
    /// Of the names in record data.
    Value(StringRewrite),
}

/// How a name of an answer is rewritten.
#[derive(Debug, Clone)]
pub enum StringRewrite {
    /// A name the regex matches becomes the replacement, `{N}` the Nth group.
    Regex(Regex, String),
    /// `from` itself, or a name below it, gets `to` in its place.
    Remap { from: String, to: String },
    /// A name ending in `from` gets `to` in its place.
    Suffix { from: String, to: String },
}

impl StringRewrite {
    /// `name` rewritten, or `None` when this rewrite leaves it as it is.
    pub fn apply(&self, name: &str) -> Option<String> {
        match self {
            StringRewrite::Regex(regex, replacement) => substitute(regex, replacement, name),
            StringRewrite::Remap { from, to } => {
                if name == from {
                    return Some(to.clone());
                }
                let cut = name.len().checked_sub(from.len()).filter(|&i| i > 0)?;
                (name.as_bytes()[cut - 1] == b'.' && name.get(cut..) == Some(from.as_str()))
                    .then(|| format!("{}{to}", &name[..cut]))
            }
            StringRewrite::Suffix { from, to } => name
                .strip_suffix(from.as_str())
                .map(|before| format!("{before}{to}")),
        }
    }
}

/// `replacement` with each `{N}` replaced by the Nth group of `regex`'s first match in `text`,
/// in CoreDNS's way: group by group in order, a group that took no part being empty. `None`
/// when the regex does not match.
pub fn substitute(regex: &Regex, replacement: &str, text: &str) -> Option<String> {
    let captures = regex.captures(text)?;
    let mut out = replacement.to_string();
    for (n, group) in captures.iter().enumerate() {
        out = out.replace(&format!("{{{n}}}"), group.map_or("", |m| m.as_str()));
    }
    Some(out)
}

/// CoreDNS's `plugin.Name(s).Normalize()`: lowercased, with a trailing dot.
fn normalize(name: &str) -> String {
    let lower = name.to_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

/// `pattern` compiled, checked that `replacement` uses no more `{N}` groups than it has. They
/// are the fields `from` and `to` at `at`.
fn regex_with(
    at: &FieldPath,
    pattern: &str,
    replacement: &str,
) -> Result<Regex, RewriteConfigError> {
    let field = || at.clone().key("from");
    if pattern.len() > MAX_REGEX_LEN {
        return Err(RewriteConfigError::new(
            field(),
            format!("longer than {MAX_REGEX_LEN} characters"),
        ));
    }
    let regex = Regex::new(pattern)
        .map_err(|e| RewriteConfigError::new(field(), format!("bad regular expression: {e}")))?;
    // CoreDNS counts the distinct `{0}` to `{100}` written, against the number of groups.
    let used = (0..=100)
        .filter(|n| replacement.contains(&format!("{{{n}}}")))
        .count();
    if used > regex.captures_len() - 1 {
        return Err(RewriteConfigError::new(
            at.clone().key("to"),
            format!(
                "the replacement {replacement:?} uses more groups than the expression has ({})",
                regex.captures_len() - 1
            ),
        ));
    }
    Ok(regex)
}

impl RewriteConfig {
    /// The rule read and checked: what rewrites questions and answers.
    pub fn compile(&self) -> Result<RewriteRule, RewriteConfigError> {
        let to = normalize(&self.to);
        let matcher = match self.kind {
            NameMatch::Exact => Matcher::Exact(normalize(&self.from)),
            NameMatch::Prefix => Matcher::Prefix(normalize(&self.from)),
            NameMatch::Suffix => Matcher::Suffix(normalize(&self.from)),
            NameMatch::Substring => Matcher::Substring(normalize(&self.from)),
            NameMatch::Regex => Matcher::Regex(regex_with(&FieldPath::default(), &self.from, &to)?),
        };
        let (auto, mut answers) = self.answer_rules()?;
        let mut remap = auto || self.kind == NameMatch::Exact;
        if auto && let Matcher::Suffix(suffix) = &matcher {
            // CoreDNS reverts a suffix rule by its suffixes in the opposite order, which also
            // reverts names the rewrite did not make.
            let undo = || StringRewrite::Suffix {
                from: to.clone(),
                to: suffix.clone(),
            };
            answers.splice(0..0, [AnswerRule::Name(undo()), AnswerRule::Value(undo())]);
            remap = false;
        }
        Ok(RewriteRule {
            mode: self.mode,
            matcher,
            to,
            remap,
            answers,
        })
    }

    /// Whether `answer` has `auto`, and its other rules compiled.
    fn answer_rules(&self) -> Result<(bool, Vec<AnswerRule>), RewriteConfigError> {
        let mut auto = false;
        let mut rules = Vec::new();
        for (i, answer) in self.answer.iter().enumerate() {
            let from_to = answer.from.as_deref().zip(answer.to.as_deref());
            match (answer.kind, from_to) {
                (AnswerKind::Auto, None) if answer.from.is_none() && answer.to.is_none() => {
                    auto = true;
                }
                (AnswerKind::Auto, _) => {
                    return Err(RewriteConfigError::new(
                        FieldPath::top("answer").item(i),
                        "auto takes no from and to",
                    ));
                }
                (kind, Some((from, to))) => {
                    let to = normalize(to);
                    let at = FieldPath::top("answer").item(i);
                    let rewrite = StringRewrite::Regex(regex_with(&at, from, &to)?, to);
                    rules.push(match kind {
                        AnswerKind::Name => AnswerRule::Name(rewrite),
                        _ => AnswerRule::Value(rewrite),
                    });
                }
                (_, None) => {
                    return Err(RewriteConfigError::new(
                        FieldPath::top("answer").item(i),
                        "name and value need from and to",
                    ));
                }
            }
        }
        if auto && rules.iter().any(|r| matches!(r, AnswerRule::Name(_))) {
            return Err(RewriteConfigError::new(
                FieldPath::top("answer"),
                "auto cannot be combined with name answer rules",
            ));
        }
        Ok((auto, rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: NameMatch, from: &str, to: &str) -> RewriteConfig {
        RewriteConfig {
            kind,
            from: from.into(),
            to: to.into(),
            mode: Mode::Stop,
            answer: Vec::new(),
        }
    }

    #[test]
    fn plain_matches_are_normalized_like_coredns() {
        let compiled = rule(NameMatch::Prefix, "Foo", "bar").compile().unwrap();
        assert!(matches!(&compiled.matcher, Matcher::Prefix(p) if p == "foo."));
        assert_eq!(compiled.to, "bar.");
        assert!(!compiled.remap, "only exact reverts without answer auto");
        assert!(rule(NameMatch::Exact, "a", "b").compile().unwrap().remap);
    }

    #[test]
    fn suffix_auto_reverts_by_suffix() {
        let mut suffix = rule(NameMatch::Suffix, ".corp.example.", ".svc.cluster.local.");
        suffix.answer = vec![AnswerConfig::new(AnswerKind::Auto, None)];
        let compiled = suffix.compile().unwrap();
        assert!(!compiled.remap);
        let [AnswerRule::Name(name), AnswerRule::Value(_)] = compiled.answers.as_slice() else {
            panic!("{:?}", compiled.answers);
        };
        assert_eq!(
            name.apply("db.svc.cluster.local.").as_deref(),
            Some("db.corp.example.")
        );
        assert_eq!(name.apply("db.other."), None);
    }

    #[test]
    fn remap_takes_the_name_and_names_below_it() {
        let remap = StringRewrite::Remap {
            from: "b.example.".into(),
            to: "a.example.".into(),
        };
        assert_eq!(remap.apply("b.example.").as_deref(), Some("a.example."));
        assert_eq!(remap.apply("x.b.example.").as_deref(), Some("x.a.example."));
        assert_eq!(remap.apply("xb.example."), None);
    }

    #[test]
    fn compile_checks_every_field() {
        let err = |change: fn(&mut RewriteConfig)| {
            let mut r = rule(NameMatch::Regex, "(.*)\\.a\\.", "{1}.b.");
            change(&mut r);
            r.compile().unwrap_err().to_string()
        };
        assert!(err(|r| r.from = "(".into()).starts_with("from: bad regular expression"));
        assert!(err(|r| r.to = "{1}.{2}.".into()).starts_with("to: the replacement"));
        assert!(
            err(|r| r.answer = vec![AnswerConfig::new(AnswerKind::Name, Some(("[", "x")))])
                .starts_with("answer[0].from: bad regular expression")
        );
        assert_eq!(
            err(|r| r.answer = vec![AnswerConfig::new(AnswerKind::Value, None)]),
            "answer[0]: name and value need from and to"
        );
        assert_eq!(
            err(|r| r.answer = vec![
                AnswerConfig::new(AnswerKind::Auto, None),
                AnswerConfig::new(AnswerKind::Name, Some(("x", "y"))),
            ]),
            "answer: auto cannot be combined with name answer rules"
        );
    }

    #[test]
    fn groups_are_substituted_in_order() {
        let regex = Regex::new("^(a)(x)?\\.").unwrap();
        assert_eq!(
            substitute(&regex, "{1}-{2}-{0}", "a.b.").as_deref(),
            Some("a--a.")
        );
        assert_eq!(substitute(&regex, "{1}", "b."), None);
    }
}
