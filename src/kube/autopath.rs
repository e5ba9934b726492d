//! Autopath: the pod's search-path walk, answered server-side (CoreDNS `autopath @kubernetes`,
//! docs/design.md, failure 5), only for clients that are exactly one Running pod (failure 3).
//!
//! A pod in namespace NS has the search path
//! `[NS.svc.ZONE, svc.ZONE, ZONE, <search domains of the node's resolv.conf>..., ""]` and, with
//! `ndots:5`, asks `api.example.com.NS.svc.ZONE` first. For such a query (the qname strictly
//! below the first element) autopath strips the first element to the base name, tries
//! `base.ELEMENT` for each element in order through the plain cache and the normal upstream
//! path, and answers with the first result that is not NXDOMAIN as `qname CNAME found` plus the
//! found answer; when every element is NXDOMAIN, with the NXDOMAIN of the first. An upstream
//! failure for any element fails the whole query (nothing is cached): skipping the element
//! could answer with a later name where an earlier one exists.
//!
//! Coherence: the responder resolves the synthesised answer through the cache under the
//! namespace's view ([`ClientNamespace::view`]), so A and AAAA are fetched together and one
//! walk serves both halves; the plain expansions are cached in the plain view, each a coherent
//! pair of its own. An autopath answer is never read by a client whose namespace differs, nor by
//! one for which autopath does not apply.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use prometheus::IntCounter;
use thiserror::Error;
use tokio::time::Instant;

use super::index::{ClientMatch, ClientNamespace, PodIndex};
use crate::cache::{Entry, Resolved, Served};
use crate::observe::Metrics;
use crate::observe::labels::{PerValue, label_enum};
use crate::wire::alias::{AliasError, alias_answer};
use crate::wire::answer::Answer;
use crate::wire::query::{Query, message_id};
use crate::wire::reply::ReplyLimits;
use crate::wire::{LetterCase, Name, Question, RType, Rcode, rcode};

/// Why an autopath answer could not be made (the client gets SERVFAIL, or stale data).
#[derive(Debug, Clone, Error)]
pub enum AutopathError {
    #[error("no usable answer for {0} (upstream failed or answered SERVFAIL/REFUSED)")]
    Upstream(String),
    #[error("the qname is not below the namespace's first search domain")]
    NotApplicable,
    #[error(transparent)]
    Alias(#[from] AliasError),
    #[error("synthesised answer rejected: {0}")]
    Malformed(String),
}

/// One expansion's outcome from the plain path.
#[derive(Debug, Clone)]
pub enum Plain {
    /// A fresh entry of the plain cache.
    Entry(Entry),
    /// What a fetch produced (stored or not).
    Fetched(Resolved),
}

impl Plain {
    /// The rcode that decides the walk: the entry's (one for both halves of a pair), else the
    /// upstream answer's for `qtype`; `None` when there was no answer.
    fn rcode(&self, qtype: RType) -> Option<Rcode> {
        match self {
            Plain::Entry(entry) => Some(entry.rcode()),
            Plain::Fetched(fetched) => match fetched.entry() {
                Some(entry) => Some(entry.rcode()),
                None => fetched.answer_for(qtype).map(|a| a.info.rcode),
            },
        }
    }

    /// The answer bytes for `query` (a question for the expanded name, no EDNS).
    fn message_for(&self, query: &Query) -> Option<Vec<u8>> {
        let entry = match self {
            Plain::Entry(entry) => Some(entry),
            Plain::Fetched(fetched) => fetched.entry(),
        };
        if let Some(entry) = entry {
            let mut out = Vec::new();
            let limits = ReplyLimits::UNTRUNCATED;
            entry.write_for(query, Instant::now(), Served::Fresh, limits, &mut out);
            return Some(out);
        }
        match self {
            Plain::Fetched(fetched) => fetched
                .answer_for(query.question.qtype)
                .map(|a| a.message.to_vec()),
            Plain::Entry(_) => None,
        }
    }
}

/// Where a walk ended.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The outcome whose answer is served.
    chosen: Plain,
    /// The name answered, when it is not the qname itself (found past the first element).
    alias_to: Option<Name>,
}

label_enum! {
    /// Why a query in an autopath zone is forwarded as asked: the `reason` label of
    /// `nodelocaldns_autopath_skipped_total`.
    pub enum SkipReason: "reason" {
        /// The client's IP is no pod of this node.
        NoPod => "no_pod",
        /// The client's pod is not Running.
        NotRunning => "not_running",
        /// Two or more Running pods claim the client's IP.
        Ambiguous => "ambiguous",
        /// The qname is not under the pod's `NS.svc.DOMAIN`.
        NoMatch => "no_match",
        /// No pod list yet.
        Unsynced => "unsynced",
    }
}

/// The autopath decision and walk, for the zones that have `autopath: true`.
pub struct Autopath {
    index: Arc<PodIndex>,
    /// The search path after its first element: `svc.ZONE`, `ZONE`, host search..., `.`.
    rest: Vec<Name>,
    applied: IntCounter,
    skipped: PerValue<SkipReason, IntCounter>,
}

impl Autopath {
    /// Autopath over `index`'s pods; `host_search` are the node's resolv.conf search domains
    /// (names that are not valid domain names are skipped).
    pub fn new(index: Arc<PodIndex>, host_search: &[String], metrics: &Metrics) -> Autopath {
        let domain = *index.cluster_domain();
        let mut rest = Vec::new();
        if let Ok(svc) = Name::from_dotted(&format!("svc.{}", domain.to_dotted())) {
            rest.push(svc);
        }
        rest.push(domain);
        rest.extend(host_search.iter().filter_map(|s| Name::from_dotted(s).ok()));
        rest.push(Name::root());
        Autopath {
            index,
            rest,
            applied: metrics.autopath_applied.clone(),
            skipped: PerValue::resolve(&metrics.autopath_skipped, &[]),
        }
    }

    /// Whether autopath applies to `qname` from `client`: the client's namespace when it is
    /// exactly one Running pod and `qname` is strictly below `NS.svc.ZONE`. Counted either
    /// way. On the hot path: one index read, no allocation.
    pub fn decide(&self, client: IpAddr, qname: &Name) -> Option<Arc<ClientNamespace>> {
        let namespace = match self.index.lookup(client) {
            ClientMatch::Pod(namespace) => namespace,
            ClientMatch::NoPod => return self.skip(SkipReason::NoPod),
            ClientMatch::NotRunning => return self.skip(SkipReason::NotRunning),
            ClientMatch::Ambiguous => return self.skip(SkipReason::Ambiguous),
            ClientMatch::Unsynced => return self.skip(SkipReason::Unsynced),
        };
        match &namespace.first_search {
            Some(first) if qname.prefix_before(first).is_some() => {
                self.applied.inc();
                Some(namespace)
            }
            _ => self.skip(SkipReason::NoMatch),
        }
    }

    fn skip(&self, reason: SkipReason) -> Option<Arc<ClientNamespace>> {
        self.skipped.get(reason).inc();
        None
    }

    /// The names to try for `qname`, in order (the first is `qname` itself).
    pub fn candidates(
        &self,
        namespace: &ClientNamespace,
        qname: &Name,
    ) -> Result<Vec<Name>, AutopathError> {
        let first = namespace
            .first_search
            .as_ref()
            .ok_or(AutopathError::NotApplicable)?;
        let base = qname
            .prefix_before(first)
            .ok_or(AutopathError::NotApplicable)?;
        // An expansion too long to be a name cannot exist: skipped, as NXDOMAIN would be.
        Ok(std::iter::once(*qname)
            .chain(self.rest.iter().filter_map(|s| Name::concat(base, s).ok()))
            .collect())
    }

    /// Walks the search path of `query` for `namespace`; `plain` answers one expanded query
    /// through the plain path (`None` when no zone routes the name: skipped).
    pub async fn walk<F, Fut>(
        &self,
        namespace: &ClientNamespace,
        query: &Query,
        plain: F,
    ) -> Result<Walk, AutopathError>
    where
        F: Fn(Query) -> Fut,
        Fut: Future<Output = Option<Plain>>,
    {
        let qtype = query.question.qtype;
        let mut first_nxdomain = None;
        for (i, name) in self
            .candidates(namespace, &query.question.name)?
            .into_iter()
            .enumerate()
        {
            let Some(outcome) = plain(expanded(query, name)).await else {
                continue;
            };
            match outcome.rcode(qtype) {
                Some(rcode::NXDOMAIN) => {
                    first_nxdomain.get_or_insert(outcome);
                }
                Some(rcode::NOERROR) => {
                    return Ok(Walk {
                        chosen: outcome,
                        alias_to: (i > 0).then_some(name),
                    });
                }
                _ => return Err(AutopathError::Upstream(name.to_dotted())),
            }
        }
        first_nxdomain
            .map(|chosen| Walk {
                chosen,
                alias_to: None,
            })
            .ok_or_else(|| AutopathError::Upstream(query.question.name.to_dotted()))
    }

    /// The answer to `question` (the client's question, or its other address half) from a
    /// walk, as an upstream-like [`Answer`] the cache can store.
    pub fn answer(
        &self,
        walk: &Walk,
        query: &Query,
        question: Question,
    ) -> Result<Answer, AutopathError> {
        let target = walk.alias_to.unwrap_or(question.name);
        let found_query = Query {
            question: Question {
                name: target,
                ..question
            },
            case: LetterCase::LOWER,
            edns: None,
            ..*query
        };
        let found = walk
            .chosen
            .message_for(&found_query)
            .ok_or_else(|| AutopathError::Upstream(target.to_dotted()))?;
        let message = match walk.alias_to {
            Some(found_name) => alias_answer(&found, &question, &found_name)?,
            None => found,
        };
        let id = message_id(&message).ok_or_else(|| AutopathError::Malformed("empty".into()))?;
        Answer::accept(message.as_slice().into(), id, &question)
            .map_err(|e| AutopathError::Malformed(e.to_string()))
    }
}

/// `query` asked for `name` instead (same type, class, flags and EDNS, so the same cache key
/// bits and upstream flags).
fn expanded(query: &Query, name: Name) -> Query {
    Query {
        question: Question {
            name,
            ..query.question
        },
        case: LetterCase::LOWER,
        ..*query
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::index::{PodPhase, PodRecord, PodTable};

    fn autopath(host_search: &[&str]) -> Autopath {
        let index = Arc::new(PodIndex::new(Name::from_dotted("cluster.local").unwrap()));
        let mut table = PodTable::new();
        table.apply(PodRecord {
            namespace: "default".into(),
            name: "web".into(),
            ips: vec!["10.0.0.7".parse().unwrap()],
            phase: PodPhase::Running,
            host_network: false,
            terminating: false,
        });
        index.replace(&table);
        let host: Vec<String> = host_search.iter().map(|s| s.to_string()).collect();
        Autopath::new(index, &host, &Metrics::new())
    }

    fn name(text: &str) -> Name {
        Name::from_dotted(text).unwrap()
    }

    #[test]
    fn the_search_path_is_corednss() {
        let autopath = autopath(&["corp.example", "example.net."]);
        let qname = name("api.example.com.default.svc.cluster.local");
        let namespace = autopath
            .decide("10.0.0.7".parse().unwrap(), &qname)
            .unwrap();
        let candidates: Vec<String> = autopath
            .candidates(&namespace, &qname)
            .unwrap()
            .iter()
            .map(Name::to_dotted)
            .collect();
        assert_eq!(
            candidates,
            [
                "api.example.com.default.svc.cluster.local.",
                "api.example.com.svc.cluster.local.",
                "api.example.com.cluster.local.",
                "api.example.com.corp.example.",
                "api.example.com.example.net.",
                "api.example.com.",
            ]
        );
    }

    #[test]
    fn only_names_strictly_below_the_first_search_domain_match() {
        let autopath = autopath(&[]);
        let client = "10.0.0.7".parse().unwrap();
        for miss in [
            "default.svc.cluster.local",
            "api.example.com",
            "web.other.svc.cluster.local",
            "api.example.com.svc.cluster.local",
        ] {
            assert!(autopath.decide(client, &name(miss)).is_none(), "{miss}");
        }
        assert!(
            autopath
                .decide(client, &name("web.default.svc.cluster.local"))
                .is_some()
        );
        assert!(
            autopath
                .decide(
                    "10.0.0.8".parse().unwrap(),
                    &name("x.default.svc.cluster.local")
                )
                .is_none()
        );
    }
}
