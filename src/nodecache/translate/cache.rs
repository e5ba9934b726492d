//! `cache [TTL] { options }`: a zone's TTL caps, prefetch and serve-stale, and its share of
//! the cache's capacity.

use std::time::Duration;

use super::{CorefileError, Directive, Token, Translator};
use crate::config::ZoneCacheConfig;

/// CoreDNS `cache` defaults (plugin/cache).
pub(super) const CACHE_CAPACITY: usize = 9984;
const CACHE_SUCCESS_TTL: Duration = Duration::from_secs(3600);
const CACHE_DENIAL_TTL: Duration = Duration::from_secs(1800);
const CACHE_MIN_TTL: Duration = Duration::from_secs(5);
const CACHE_SERVFAIL_TTL: Duration = Duration::from_secs(5);

/// The per-kind capacities and minimum TTLs the options set, folded into the zone's cache
/// settings once every option is read.
struct Kinds {
    success_cap: usize,
    denial_cap: usize,
    success_min: Duration,
    denial_min: Duration,
}

impl Translator<'_> {
    pub(super) fn cache(&mut self, d: &Directive) -> Result<ZoneCacheConfig, CorefileError> {
        let line = d.name.line;
        let mut cache = ZoneCacheConfig {
            enabled: true,
            success_ttl: CACHE_SUCCESS_TTL,
            denial_ttl: CACHE_DENIAL_TTL,
            min_ttl: CACHE_MIN_TTL,
            servfail_ttl: CACHE_SERVFAIL_TTL,
            ..ZoneCacheConfig::default()
        };
        match d.args.as_slice() {
            [] => {}
            [ttl] => {
                let ttl = self.cache_ttl(ttl)?;
                cache.success_ttl = ttl;
                cache.denial_ttl = ttl;
            }
            [_, zone, ..] => {
                return Err(self.err(
                    zone.line,
                    "cache limited to some zones is not supported; cache applies to the block's zones",
                ));
            }
        }
        let mut kinds = Kinds {
            success_cap: CACHE_CAPACITY,
            denial_cap: CACHE_CAPACITY,
            success_min: CACHE_MIN_TTL,
            denial_min: CACHE_MIN_TTL,
        };
        for option in &d.block {
            self.cache_option(&mut cache, &mut kinds, option)?;
        }
        // One minimum for both kinds here, and never above a cap (our validation's rule).
        let min = kinds.success_min.min(kinds.denial_min);
        cache.min_ttl = min.min(cache.success_ttl).min(cache.denial_ttl);
        if cache.min_ttl != min {
            self.warn(line, "cache: minimum TTL lowered to the TTL cap");
        }
        self.capacity = self
            .capacity
            .saturating_add(kinds.success_cap + kinds.denial_cap);
        Ok(cache)
    }

    /// One line of the `cache` block.
    fn cache_option(
        &mut self,
        cache: &mut ZoneCacheConfig,
        kinds: &mut Kinds,
        option: &[Token],
    ) -> Result<(), CorefileError> {
        let name = &option[0];
        let args = &option[1..];
        match name.text.as_str() {
            kind @ ("success" | "denial") => self.kind_option(kind, name, args, cache, kinds)?,
            "prefetch" => self.prefetch_option(name, args, cache)?,
            "serve_stale" => {
                cache.serve_stale.max_age = match args.first() {
                    Some(d) => self.duration(d)?,
                    None => Duration::from_secs(3600),
                };
                // CoreDNS's modes: `immediate` (its default) answers stale at once and
                // refreshes behind the answer; `verify` asks the upstreams first and answers
                // stale only when they fail, within the query's deadline.
                cache.serve_stale.client_timeout = match args.get(1).map(|t| t.text.as_str()) {
                    None | Some("immediate") => Duration::ZERO,
                    Some("verify") => super::FORWARD_DEADLINE,
                    Some(other) => {
                        return Err(self.err(
                            name.line,
                            format!("serve_stale mode {other:?}: want immediate or verify"),
                        ));
                    }
                };
            }
            "servfail" => {
                let [dur] = args else {
                    return Err(self.err(name.line, "servfail needs one DURATION"));
                };
                cache.servfail_ttl = self.duration(dur)?;
            }
            other => {
                return Err(self.err(
                    name.line,
                    format!(
                        "unsupported cache option `{other}` (supported: success, denial, \
                         prefetch, serve_stale, servfail)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `success|denial CAPACITY [TTL [MINTTL]]`.
    fn kind_option(
        &self,
        kind: &str,
        name: &Token,
        args: &[Token],
        cache: &mut ZoneCacheConfig,
        kinds: &mut Kinds,
    ) -> Result<(), CorefileError> {
        let [cap, rest @ ..] = args else {
            return Err(self.err(name.line, format!("{kind} needs a CAPACITY")));
        };
        let cap = self.count(cap)?;
        let ttl = rest.first().map(|t| self.cache_ttl(t)).transpose()?;
        let min = rest.get(1).map(|t| self.seconds(t)).transpose()?;
        if let Some(extra) = rest.get(2) {
            return Err(self.err(extra.line, format!("{kind}: too many arguments")));
        }
        if kind == "success" {
            kinds.success_cap = cap;
            cache.success_ttl = ttl.unwrap_or(cache.success_ttl);
            kinds.success_min = min.unwrap_or(kinds.success_min);
        } else {
            kinds.denial_cap = cap;
            cache.denial_ttl = ttl.unwrap_or(cache.denial_ttl);
            kinds.denial_min = min.unwrap_or(kinds.denial_min);
        }
        Ok(())
    }

    /// A cache TTL cap: CoreDNS refuses 0 ("cache TTL can not be zero or negative"), and a
    /// Corefile that CoreDNS refuses is refused here too, at its line.
    fn cache_ttl(&self, t: &Token) -> Result<Duration, CorefileError> {
        let ttl = self.seconds(t)?;
        if ttl.is_zero() {
            return Err(self.err(
                t.line,
                "cache TTL can not be zero (CoreDNS refuses it; to turn the cache off, leave \
                 `cache` out of the block)",
            ));
        }
        Ok(ttl)
    }

    /// `prefetch AMOUNT [DURATION] [PERCENTAGE%]`.
    fn prefetch_option(
        &mut self,
        name: &Token,
        args: &[Token],
        cache: &mut ZoneCacheConfig,
    ) -> Result<(), CorefileError> {
        let [amount, rest @ ..] = args else {
            return Err(self.err(name.line, "prefetch needs an AMOUNT"));
        };
        cache.prefetch.min_hits = self.count(amount)?.try_into().unwrap_or(u32::MAX);
        for arg in rest {
            if let Some(pct) = arg.text.strip_suffix('%') {
                cache.prefetch.percentage = pct
                    .parse()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| self.err(arg.line, format!("prefetch percentage {pct:?}")))?;
            } else {
                self.duration(arg)?;
                self.warn(
                    arg.line,
                    "prefetch DURATION ignored: popularity counts over an entry's lifetime",
                );
            }
        }
        Ok(())
    }
}
