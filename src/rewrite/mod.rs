//! A zone's rewrite rules (`zones[].rewrite`, [`crate::config::rewrite`]): the question name
//! rewritten before it goes to the zone's upstreams, and their answer rewritten back, with the
//! semantics of CoreDNS's `rewrite name` rules:
//!
//! - the rules are tried in order on the name (lowercased, with its trailing dot); one that
//!   matches rewrites it, and then the next rule is tried on the new name when its mode is
//!   `continue`, none when it is `stop`;
//! - a rewritten name that is not a valid domain name makes a SERVFAIL, logged;
//! - the answer gets the client's question back, always; its records (answer, authority and
//!   additional sections) are rewritten by the answer rules of every rule that matched, the last
//!   matched rule's first, each record by each rule: `auto` undoes the rule's own rewrite on
//!   owner names and on names in record data (a `suffix` rule by swapping its suffixes, every
//!   other match by mapping the new name, and names below it, back to the old one), `name` and
//!   `value` replace the owner names or data names their regex matches;
//! - an answer that cannot be read and written again with its new names is SERVFAIL, logged.
//!
//! Where it sits: CoreDNS runs `rewrite` after `cache` and before `template`, `hosts` and
//! `forward`, so the cache is keyed by the client's name and the zone (server block) is the one
//! of the client's name. Here the responder applies the rules in its exchange with the zone's
//! upstreams, below the cache: the route and the cache key stay the client's, both halves of an
//! address pair are rewritten alike, and what the cache stores and serves is the reverted
//! answer. Templates and hosts entries run before the cache here (they answer without a task or
//! a cache entry), so they see the client's name, not the rewritten one: a zone's own data
//! answers the names as its clients ask them, and a rewrite changes only what is asked of its
//! upstreams. In CoreDNS they would see the rewritten name.
//!
//! Where it differs from CoreDNS otherwise: only `name` rules (the `type`, `class`, `edns0`,
//! `ttl`, `cname` and `rcode` fields are refused when a Corefile is translated); the question is
//! restored even when only `continue` rules without answer rules matched (CoreDNS forgets to
//! then); OPT and DNAME records are not rewritten (hickory-proto does not read DNAME data);
//! names are compared in presentation form with our escapes (`\DDD` for bytes outside printable
//! ASCII).
//!
//! It stands on [`crate::config`] and [`crate::wire`]; the responder calls it around the
//! upstream exchange of a zone that has rules. Metrics: none of its own.

mod revert;

use thiserror::Error;
use tracing::warn;

use crate::config::rewrite::{
    AnswerRule, Matcher, Mode, RewriteConfig, RewriteConfigError, RewriteRule, StringRewrite,
    substitute,
};
use crate::wire::Question;
use crate::wire::answer::Answer;
use crate::wire::name::Name;

pub use revert::RevertError;

/// Why a rewritten query is answered SERVFAIL.
#[derive(Debug, Clone, Error)]
pub enum RewriteError {
    #[error("the name {name} was rewritten to {rewritten:?}, not a valid domain name")]
    InvalidName { name: String, rewritten: String },
    #[error(transparent)]
    Revert(#[from] RevertError),
}

/// One zone's rules, in order.
pub struct Rewrites {
    rules: Vec<RewriteRule>,
}

/// A question after the rules that matched it, and how to revert its answer.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// What is asked upstream.
    pub question: Question,
    /// The answer rules of the rules that matched, in the order they matched.
    answer_rules: Vec<AnswerRule>,
}

impl Rewrites {
    /// The rules of a zone. Errors only for a config that was not validated.
    pub fn new(configs: &[RewriteConfig]) -> Result<Rewrites, RewriteConfigError> {
        let rules = configs
            .iter()
            .map(RewriteConfig::compile)
            .collect::<Result<_, _>>()?;
        Ok(Rewrites { rules })
    }

    /// `question` with its name rewritten by the rules that match it; `None` when none does.
    pub fn apply(&self, question: &Question) -> Result<Option<Rewritten>, RewriteError> {
        let original = question.name.to_dotted();
        let mut name = original.clone();
        // The last rewritten name, read; `None` while no rule matched.
        let mut rewritten_name = None;
        let mut answer_rules = Vec::new();
        for rule in &self.rules {
            let Some(rewritten) = rewrite_name(rule, &name) else {
                continue;
            };
            // Read back at once: the next rule sees the name as a valid, lowercased name.
            let parsed = Name::from_dotted(&rewritten).map_err(|_| RewriteError::InvalidName {
                name: original.clone(),
                rewritten: rewritten.clone(),
            })?;
            let rewritten = parsed.to_dotted();
            if rule.remap {
                let undo = || StringRewrite::Remap {
                    from: rewritten.clone(),
                    to: name.clone(),
                };
                answer_rules.push(AnswerRule::Name(undo()));
                answer_rules.push(AnswerRule::Value(undo()));
            }
            answer_rules.extend(rule.answers.iter().cloned());
            name = rewritten;
            rewritten_name = Some(parsed);
            if rule.mode == Mode::Stop {
                break;
            }
        }
        Ok(rewritten_name.map(|name| Rewritten {
            question: Question { name, ..*question },
            answer_rules,
        }))
    }
}

impl Rewritten {
    /// `answer`, the upstream's answer to [`Rewritten::question`], as the answer to `original`.
    pub fn revert(&self, answer: &Answer, original: &Question) -> Result<Answer, RewriteError> {
        revert::revert(answer, original, &self.answer_rules).map_err(|err| {
            warn!(name = %original.name, %err, "rewritten answer not reverted; answered SERVFAIL");
            RewriteError::from(err)
        })
    }
}

/// `name` rewritten by `rule`, or `None` when the rule does not match it.
fn rewrite_name(rule: &RewriteRule, name: &str) -> Option<String> {
    let to = rule.to.as_str();
    match &rule.matcher {
        Matcher::Exact(from) => (name == from).then(|| to.to_string()),
        Matcher::Prefix(prefix) => name
            .strip_prefix(prefix.as_str())
            .map(|r| format!("{to}{r}")),
        Matcher::Suffix(suffix) => name
            .strip_suffix(suffix.as_str())
            .map(|r| format!("{r}{to}")),
        Matcher::Substring(part) => name.contains(part.as_str()).then(|| name.replace(part, to)),
        Matcher::Regex(regex) => substitute(regex, to, name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rewrite::{AnswerConfig, AnswerKind, NameMatch};
    use crate::wire::{CLASS_IN, rtype};

    fn config(kind: NameMatch, from: &str, to: &str, mode: Mode) -> RewriteConfig {
        RewriteConfig {
            kind,
            from: from.into(),
            to: to.into(),
            mode,
            answer: Vec::new(),
        }
    }

    fn asked(name: &str) -> Question {
        Question {
            name: Name::from_dotted(name).unwrap(),
            qtype: rtype::A,
            qclass: CLASS_IN,
        }
    }

    fn rewritten(rules: &[RewriteConfig], name: &str) -> Option<String> {
        let rewrites = Rewrites::new(rules).unwrap();
        let result = rewrites.apply(&asked(name)).unwrap();
        result.map(|r| r.question.name.to_dotted())
    }

    #[test]
    fn each_match_rewrites_as_coredns() {
        let cases = [
            (
                NameMatch::Exact,
                "a.example",
                "b.test",
                "a.example.",
                "b.test.",
            ),
            (
                NameMatch::Prefix,
                "api",
                "web",
                "api.example.",
                "web.example.",
            ),
            (NameMatch::Suffix, ".corp.", ".svc.", "db.corp.", "db.svc."),
            (NameMatch::Substring, "x.y", "z", "a.x.y.", "a.z."),
            (
                NameMatch::Regex,
                "^(.*)\\.alias\\.$",
                "{1}.real",
                "db.alias.",
                "db.real.",
            ),
        ];
        for (kind, from, to, name, want) in cases {
            let rules = [config(kind, from, to, Mode::Stop)];
            assert_eq!(rewritten(&rules, name).as_deref(), Some(want), "{kind:?}");
        }
        let exact = [config(NameMatch::Exact, "a.example", "b.test", Mode::Stop)];
        assert_eq!(rewritten(&exact, "x.a.example."), None);
    }

    #[test]
    fn stop_ends_the_rules_and_continue_goes_on() {
        let first = |mode| config(NameMatch::Suffix, ".one.", ".two.", mode);
        let second = config(NameMatch::Suffix, ".two.", ".three.", Mode::Stop);
        let stopped = [first(Mode::Stop), second.clone()];
        assert_eq!(rewritten(&stopped, "a.one.").as_deref(), Some("a.two."));
        let continued = [first(Mode::Continue), second];
        assert_eq!(rewritten(&continued, "a.one.").as_deref(), Some("a.three."));
        assert_eq!(rewritten(&continued, "a.two.").as_deref(), Some("a.three."));
    }

    #[test]
    fn an_invalid_rewritten_name_is_an_error() {
        let rules = [config(NameMatch::Regex, "^(.*)$", "{1}.{1}", Mode::Stop)];
        let long = format!("{}.", vec!["a".repeat(60); 3].join("."));
        let err = Rewrites::new(&rules).unwrap().apply(&asked(&long));
        assert!(
            matches!(err, Err(RewriteError::InvalidName { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn answer_rules_come_from_every_matched_rule() {
        let mut first = config(NameMatch::Prefix, "a", "b", Mode::Continue);
        first.answer = vec![AnswerConfig::new(AnswerKind::Auto, None)];
        let second = config(NameMatch::Exact, "b.example", "c.example", Mode::Stop);
        let rewrites = Rewrites::new(&[first, second]).unwrap();
        let result = rewrites.apply(&asked("a.example.")).unwrap().unwrap();
        assert_eq!(result.question.name.to_dotted(), "c.example.");
        // Two remaps (name and value) for each rule.
        assert_eq!(result.answer_rules.len(), 4);
    }
}
