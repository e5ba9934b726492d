//! Zone routing: each query goes to the zone with the longest suffix that contains its name;
//! `.` is the default route. A name no zone contains is REFUSED (we are not an open resolver
//! for names we were not asked to serve).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::UpstreamGroup;
use super::pool::Pools;
use crate::cache::policy::CachePolicy;
use crate::config::Config;
use crate::observe::Metrics;
use crate::observe::labels;
use crate::tasks::Tasks;
use crate::wire::Name;

/// A routed zone.
pub struct Route {
    pub name: Name,
    /// `name` as a log and metric label.
    pub label: String,
    pub upstreams: UpstreamGroup,
    /// `None` when the zone is not cached.
    pub cache: Option<CachePolicy>,
    /// Set when a loop probe came back to us through this zone's upstreams: the zone is
    /// answered REFUSED from then on (see [`super::loop_check`]).
    pub looped: AtomicBool,
}

/// The zones of a config, most specific first.
pub struct ZoneRouter {
    routes: Vec<Route>,
    pools: Pools,
}

/// Index of a route in its router, so a query routed once need not be routed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(usize);

impl ZoneRouter {
    /// The routes of `config`; their upstream connections and probes run as `tasks`.
    pub fn new(config: &Config, metrics: &Arc<Metrics>, tasks: &Tasks) -> ZoneRouter {
        let mut pools = Pools::new(tasks.clone());
        let mut routes: Vec<Route> = config
            .zones
            .iter()
            .map(|zone| Route {
                name: zone.name.0,
                label: labels::zone(&zone.name.0),
                upstreams: UpstreamGroup::new(
                    zone,
                    config.server.max_udp_size,
                    metrics.clone(),
                    &mut pools,
                ),
                cache: CachePolicy::of_zone(&zone.cache),
                looped: AtomicBool::new(false),
            })
            .collect();
        routes.sort_by_key(|route| std::cmp::Reverse(route.name.label_count()));
        ZoneRouter { routes, pools }
    }

    /// Every route, most specific first.
    pub fn routes(&self) -> Vec<&Route> {
        self.routes.iter().collect()
    }

    /// The pool of every upstream address, in address order.
    pub fn pools(&self) -> Vec<std::sync::Arc<super::pool::Pool>> {
        self.pools.all()
    }

    /// The most specific zone containing `name`.
    pub fn route(&self, name: &Name) -> Option<RouteId> {
        self.routes
            .iter()
            .position(|route| name.is_subdomain_of(&route.name))
            .map(RouteId)
    }

    pub fn get(&self, id: RouteId) -> &Route {
        &self.routes[id.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_suffix_wins_and_unrouted_names_have_no_route() {
        let config = Config::from_yaml(
            "zones:\n  - name: local\n    upstreams: [10.0.0.1]\n  - name: cluster.local\n    upstreams: [10.0.0.2]\n",
            "t",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let router = ZoneRouter::new(&config, &metrics, &Tasks::new(&metrics));
        let zone_of = |name: &str| {
            router
                .route(&Name::from_dotted(name).unwrap())
                .map(|id| router.get(id).name.to_dotted())
        };
        assert_eq!(
            zone_of("a.svc.cluster.local").as_deref(),
            Some("cluster.local.")
        );
        assert_eq!(zone_of("cluster.local").as_deref(), Some("cluster.local."));
        assert_eq!(zone_of("other.local").as_deref(), Some("local."));
        assert_eq!(zone_of("example.com"), None);
    }
}
