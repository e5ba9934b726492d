//! How long an answer may be cached, per zone: positive answers by their smallest answer TTL,
//! NXDOMAIN and NODATA by the RFC 2308 negative TTL (min of SOA TTL and SOA MINIMUM), each
//! clamped to the zone's limits; SERVFAIL only when `servfail_ttl` allows it.

use std::time::Duration;

use crate::config::{PrefetchConfig, ZoneCacheConfig};
use crate::observe::labels::label_enum;
use crate::wire::answer::AnswerInfo;
use crate::wire::rcode;

/// Everything a zone's cache settings decide, in the form the request path uses.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    pub ttl: TtlPolicy,
    pub prefetch: PrefetchConfig,
    /// How long past expiry an entry may be served when upstreams fail; zero turns it off.
    pub stale_window: Duration,
    /// How long a client with a stale entry waits for upstreams before it is answered stale.
    pub stale_client_timeout: Duration,
}

impl CachePolicy {
    /// The zone's policy; `None` when the zone is not cached.
    pub fn of_zone(config: &ZoneCacheConfig) -> Option<CachePolicy> {
        config.enabled.then(|| CachePolicy {
            ttl: TtlPolicy::new(config),
            prefetch: config.prefetch.clone(),
            stale_window: config.serve_stale.max_age,
            stale_client_timeout: config.serve_stale.client_timeout,
        })
    }
}

/// A zone's TTL limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    pub success_max: Duration,
    pub denial_max: Duration,
    pub min: Duration,
    pub servfail: Duration,
}

label_enum! {
    /// What kind of answer an entry holds: the `type` label of the cache metrics (CoreDNS's
    /// `success` and `denial`).
    pub enum AnswerKind: "type" {
        Success => "success",
        Denial => "denial",
    }
}

impl TtlPolicy {
    pub fn new(config: &ZoneCacheConfig) -> TtlPolicy {
        TtlPolicy {
            success_max: config.success_ttl,
            denial_max: config.denial_ttl,
            min: config.min_ttl,
            servfail: config.servfail_ttl,
        }
    }

    /// How long this answer may be cached and as what; `None` when it must not be.
    pub fn cacheable(&self, info: &AnswerInfo) -> Option<(Duration, AnswerKind)> {
        if info.truncated || info.opt.is_some() {
            return None;
        }
        let clamp = |ttl: u32, max: Duration| Duration::from_secs(ttl.into()).clamp(self.min, max);
        let (ttl, kind) = match info.rcode {
            rcode::NOERROR if info.answer_count > 0 => (
                clamp(info.min_answer_ttl?, self.success_max),
                AnswerKind::Success,
            ),
            // NODATA and NXDOMAIN: without an SOA there is no negative TTL, and RFC 2308
            // section 5 says such answers should not be cached.
            rcode::NOERROR | rcode::NXDOMAIN => (
                clamp(info.negative_ttl?, self.denial_max),
                AnswerKind::Denial,
            ),
            rcode::SERVFAIL => (self.servfail, AnswerKind::Denial),
            _ => return None,
        };
        (!ttl.is_zero()).then_some((ttl, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TtlPolicy {
        TtlPolicy::new(&ZoneCacheConfig::default())
    }

    fn info(rcode: u16, answers: u16, min_ttl: Option<u32>, negative: Option<u32>) -> AnswerInfo {
        AnswerInfo {
            rcode: crate::wire::Rcode(rcode),
            answer_count: answers,
            min_answer_ttl: min_ttl,
            negative_ttl: negative,
            ..AnswerInfo::default()
        }
    }

    #[test]
    fn positive_ttl_is_capped_at_success_ttl() {
        let (ttl, kind) = policy().cacheable(&info(0, 1, Some(300), None)).unwrap();
        assert_eq!((ttl, kind), (Duration::from_secs(30), AnswerKind::Success));
        let (ttl, _) = policy().cacheable(&info(0, 1, Some(7), None)).unwrap();
        assert_eq!(ttl, Duration::from_secs(7));
    }

    #[test]
    fn negative_ttl_comes_from_the_soa_and_is_capped() {
        let (ttl, kind) = policy().cacheable(&info(3, 0, None, Some(60))).unwrap();
        assert_eq!((ttl, kind), (Duration::from_secs(5), AnswerKind::Denial));
        let (ttl, _) = policy().cacheable(&info(0, 0, None, Some(2))).unwrap();
        assert_eq!(ttl, Duration::from_secs(2));
    }

    #[test]
    fn negative_answers_without_soa_servfail_and_zero_ttls_are_not_cached() {
        assert_eq!(policy().cacheable(&info(3, 0, None, None)), None);
        assert_eq!(policy().cacheable(&info(2, 0, None, None)), None);
        assert_eq!(policy().cacheable(&info(0, 1, Some(0), None)), None);
        assert_eq!(policy().cacheable(&info(5, 0, None, None)), None);
    }

    #[test]
    fn min_ttl_raises_short_ttls_and_servfail_ttl_allows_servfail() {
        let config = ZoneCacheConfig {
            min_ttl: Duration::from_secs(3),
            servfail_ttl: Duration::from_secs(2),
            ..ZoneCacheConfig::default()
        };
        let policy = TtlPolicy::new(&config);
        let (ttl, _) = policy.cacheable(&info(0, 1, Some(0), None)).unwrap();
        assert_eq!(ttl, Duration::from_secs(3));
        let (ttl, _) = policy.cacheable(&info(2, 0, None, None)).unwrap();
        assert_eq!(ttl, Duration::from_secs(2));
    }
}
