//! A zone's templates (`zones[].templates`, [`crate::config::template`]): answers made from the
//! query name before hosts entries, the cache and the upstreams, with the semantics of CoreDNS's
//! `template` plugin (which runs before `hosts` there too):
//!
//! - templates are tried in order; one whose zones do not hold the name, or whose class or type
//!   is not the query's (a query of class or type ANY matches any), is passed over;
//! - otherwise its `match` expressions are tried on the name (lowercased, trailing dot); the
//!   first that matches makes the answer: AA set, the template's rcode, its `answer`,
//!   `authority` and `additional` records rendered with that match. An rcode of SERVFAIL is
//!   CoreDNS's plain SERVFAIL, without records;
//! - when none matches, the next template is tried if `fallthrough` covers the name, otherwise
//!   the answer is SERVFAIL;
//! - after the last template the query goes on.
//!
//! A record that does not read after rendering (a group that matched text an A record cannot
//! hold) makes a SERVFAIL, logged, as CoreDNS answers it.
//!
//! Where it differs from CoreDNS: a CNAME answered for an A or AAAA query is not followed (CoreDNS
//! looks its target up and appends those records; here the client's resolver follows it);
//! `ederror`, `var`, `expr` and template data beyond `.Name .Zone .Class .Type .Remote .Match
//! .Group` are refused when the config is read; `coredns_template_*` metrics are not exported.
//!
//! It stands on [`crate::config`] and [`crate::wire`]; the responder asks it first for a zone
//! that has templates. Metrics: none of its own (its answers count in the request metrics,
//! plugin label `template`).

use std::fmt::Write as _;
use std::net::IpAddr;

use regex::{Captures, Regex};
use tracing::warn;

use crate::config::template::{Piece, Rr, Template, TemplateConfig, TemplateError, Text};
use crate::wire::reply::{ReplyLimits, Sections, write_records};
use crate::wire::text::{CLASS_ANY, Record, TYPE_ANY, class_name, parse_record, rtype_name};
use crate::wire::{Name, Query, Rcode, rcode};

/// What [`Templates::answer`] did with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A template's answer, with this rcode, is in the output buffer.
    Answered(Rcode),
    /// Answer SERVFAIL: a template's rcode, no match without fallthrough, or a record that
    /// did not render.
    ServFail,
    /// No template is for this query: on to the hosts entries, the cache and upstreams.
    Next,
}

/// One zone's templates, in order.
pub struct Templates {
    list: Vec<Template>,
}

impl Templates {
    /// The templates of the zone named `zone`. Errors only for a config that was not validated.
    pub fn new(configs: &[TemplateConfig], zone: &Name) -> Result<Templates, TemplateError> {
        let list = configs
            .iter()
            .map(|c| c.compile(zone))
            .collect::<Result<_, _>>()?;
        Ok(Templates { list })
    }

    /// Answers `query` (from `client`) into `out` within `limits`, or says what to do instead.
    /// A query no template is for costs a few comparisons and allocates nothing.
    pub fn answer(
        &self,
        query: &Query,
        client: IpAddr,
        limits: ReplyLimits,
        out: &mut Vec<u8>,
    ) -> Decision {
        let question = &query.question;
        let name = &question.name;
        let mut dotted = None;
        for template in &self.list {
            // CoreDNS's `.Zone` is the longest of the template's zones that holds the name.
            let Some(zone) = template
                .zones
                .iter()
                .filter(|z| name.is_subdomain_of(z))
                .max_by_key(|z| z.label_count())
            else {
                continue;
            };
            if !template.any_class()
                && question.qclass != CLASS_ANY
                && question.qclass != template.class
            {
                continue;
            }
            if !template.any_type()
                && question.qtype != TYPE_ANY
                && question.qtype != template.qtype
            {
                continue;
            }
            // A template without `match` and without substitutions (the chart's rcode-only
            // AAAA) answers without the name written out: nothing is allocated for it.
            let mut matched = None;
            if template.reads_name() {
                let dotted: &str = dotted.get_or_insert_with(|| name.to_dotted());
                let found = template
                    .regexes
                    .iter()
                    .find_map(|r| r.captures(dotted).map(|c| (r, c)));
                match found {
                    Some((regex, captures)) => matched = Some((dotted, regex, captures)),
                    None if template.fallthrough.covers(name) => continue,
                    None => return Decision::ServFail,
                }
            }
            if template.rcode == rcode::SERVFAIL {
                return Decision::ServFail;
            }
            let data = matched.map(|(dotted, regex, captures)| Data {
                name: dotted,
                zone,
                class: if question.qclass == CLASS_ANY {
                    template.class
                } else {
                    question.qclass
                },
                qtype: if question.qtype == TYPE_ANY {
                    template.qtype
                } else {
                    question.qtype
                },
                remote: client,
                regex,
                captures,
            });
            let render = |rrs: &[Rr]| -> Result<Vec<Record>, String> {
                rrs.iter().map(|rr| record(data.as_ref(), rr)).collect()
            };
            let sections: Result<[Vec<Record>; 3], String> = (|| {
                Ok([
                    render(&template.answer)?,
                    render(&template.authority)?,
                    render(&template.additional)?,
                ])
            })();
            let [answer, authority, additional] = match sections {
                Ok(sections) => sections,
                Err(err) => {
                    warn!(%name, %err, "template record did not render; answered SERVFAIL");
                    return Decision::ServFail;
                }
            };
            let sections = Sections {
                answer: &answer,
                authority: &authority,
                additional: &additional,
            };
            write_records(out, query, template.rcode, sections, limits);
            return Decision::Answered(template.rcode);
        }
        Decision::Next
    }
}

/// What a template's substitutions read for one query (CoreDNS's template data).
struct Data<'a> {
    name: &'a str,
    zone: &'a Name,
    class: u16,
    qtype: crate::wire::RType,
    remote: IpAddr,
    regex: &'a Regex,
    captures: Captures<'a>,
}

/// One record of a template for a query; `data` is there whenever the template has
/// substitutions ([`Template::reads_name`]).
fn record(data: Option<&Data>, rr: &Rr) -> Result<Record, String> {
    match (rr, data) {
        (Rr::Static(record), _) => Ok(Record::clone(record)),
        (Rr::Rendered(text), Some(data)) => {
            let rendered = data.render(text)?;
            parse_record(&rendered).map_err(|e| format!("{rendered:?}: {e}"))
        }
        (Rr::Rendered(_), None) => Err("no match to render from".into()),
    }
}

impl Data<'_> {
    fn render(&self, text: &Text) -> Result<String, String> {
        let mut out = String::new();
        for piece in &text.0 {
            // Writing to a String cannot fail.
            let _ = match piece {
                Piece::Literal(literal) => write!(out, "{literal}"),
                Piece::Name => write!(out, "{}", self.name),
                Piece::Zone => write!(out, "{}", self.zone.to_dotted()),
                Piece::Class => write!(out, "{}", class_name(self.class)),
                Piece::Type => write!(out, "{}", rtype_name(self.qtype)),
                Piece::Remote => write!(out, "{}", self.remote),
                Piece::Match(n) => {
                    // Go's `index` fails past the end; a group that did not take part is "".
                    if *n >= self.regex.captures_len() {
                        return Err(format!("index .Match {n}: out of range"));
                    }
                    let text = self.captures.get(*n).map_or("", |m| m.as_str());
                    write!(out, "{text}")
                }
                Piece::Group(group) => {
                    let found = match group.parse::<usize>() {
                        Ok(n) if n < self.regex.captures_len() => Some(self.captures.get(n)),
                        Ok(_) => None,
                        Err(_) => self
                            .regex
                            .capture_names()
                            .flatten()
                            .any(|g| g == group)
                            .then(|| self.captures.name(group)),
                    };
                    // A key the map lacks prints as Go's `<no value>`.
                    let text = found.map_or("<no value>", |m| m.map_or("", |m| m.as_str()));
                    write!(out, "{text}")
                }
            };
        }
        Ok(out)
    }
}
