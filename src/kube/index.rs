//! The pod index: which pod a client IP belongs to, for autopath.
//!
//! Two halves with one owner each. [`PodTable`] is the full picture of this node's pods (every
//! phase, with a reverse map IP -> pods); only the watch task holds it, so it needs no lock.
//! [`PodIndex`] is what the request path reads: IP -> [`IpMatch`], recomputed by the watch
//! task for exactly the IPs an event touched, behind an `RwLock` read on the hot path (no
//! await, no allocation: one hash lookup and an `Arc` clone).
//!
//! The rules (docs/design.md, failure 3: "autopath is all-or-nothing per client"):
//! - only a pod in phase `Running` that is not `hostNetwork` claims its IPs (all of
//!   `status.podIPs`, IPv4 and IPv6); a terminating Running pod keeps them until it is deleted;
//! - a Succeeded/Failed/Pending/Unknown pod that holds (or held) an IP never matches, however
//!   long it stays in the API: IPs are reused, and a Completed pod in another namespace is how
//!   CoreDNS got the namespace wrong (coredns#2842);
//! - two Running pods with one IP is ambiguous: nobody gets autopath from that IP.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::ViewId;
use crate::wire::Name;

/// A pod's identity: namespace and name.
pub type PodKey = (String, String);

/// What the index keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub phase: PodPhase,
    pub host_network: bool,
    /// `metadata.deletionTimestamp` is set: shutting down, but still the IP's owner while
    /// Running.
    pub terminating: bool,
}

/// `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    /// Reads the API's phase string; anything unexpected is `Unknown` (never matches).
    pub fn parse(phase: Option<&str>) -> PodPhase {
        match phase {
            Some("Pending") => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }
}

impl PodRecord {
    pub fn key(&self) -> PodKey {
        (self.namespace.clone(), self.name.clone())
    }

    /// Whether this pod owns its IPs for autopath.
    fn claims_ips(&self) -> bool {
        self.phase == PodPhase::Running && !self.host_network
    }
}

/// A namespace as autopath needs it: its cache view and the first element of its pods'
/// search path (`NS.svc.CLUSTER_DOMAIN`).
#[derive(Debug)]
pub struct ClientNamespace {
    pub name: String,
    pub view: ViewId,
    /// `None` when `NS.svc.CLUSTER_DOMAIN` is not a valid name (too long): no autopath.
    pub first_search: Option<Name>,
}

/// What the index says about one IP.
#[derive(Debug, Clone)]
pub enum IpMatch {
    /// Exactly one Running pod has this IP.
    Pod(Arc<ClientNamespace>),
    /// Only pods that are not Running (Pending, Completed, Failed, Unknown) have this IP.
    NotRunning,
    /// Two or more Running pods claim this IP.
    Ambiguous,
}

/// What a client lookup found (the request path's view of [`IpMatch`]).
#[derive(Debug, Clone)]
pub enum ClientMatch {
    Pod(Arc<ClientNamespace>),
    NotRunning,
    Ambiguous,
    /// No pod of this node has the IP (hostNetwork pods, the node itself, other nodes).
    NoPod,
    /// The first list of pods has not completed yet.
    Unsynced,
}

/// Every pod of the node, in any phase, with IP -> pods. Owned by the watch task.
#[derive(Debug, Default)]
pub struct PodTable {
    pods: HashMap<PodKey, PodRecord>,
    by_ip: HashMap<IpAddr, HashSet<PodKey>>,
}

impl PodTable {
    pub fn new() -> PodTable {
        PodTable::default()
    }

    /// Adds or replaces a pod; returns the IPs whose match may have changed.
    pub fn apply(&mut self, pod: PodRecord) -> Vec<IpAddr> {
        let key = pod.key();
        let mut touched: Vec<IpAddr> = pod.ips.clone();
        if let Some(old) = self.pods.get(&key) {
            touched.extend(old.ips.iter().copied());
        }
        self.unlink(&key);
        for ip in &pod.ips {
            self.by_ip.entry(*ip).or_default().insert(key.clone());
        }
        self.pods.insert(key, pod);
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Removes a pod; returns the IPs it had.
    pub fn delete(&mut self, namespace: &str, name: &str) -> Vec<IpAddr> {
        let key = (namespace.to_string(), name.to_string());
        let ips = self
            .pods
            .get(&key)
            .map(|p| p.ips.clone())
            .unwrap_or_default();
        self.unlink(&key);
        self.pods.remove(&key);
        ips
    }

    fn unlink(&mut self, key: &PodKey) {
        let Some(old) = self.pods.get(key) else {
            return;
        };
        for ip in &old.ips {
            if let Some(keys) = self.by_ip.get_mut(ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    /// The match of `ip` from the pods that have it (host-network pods are ignored: their IP
    /// is the node's, shared by all of them).
    fn match_of(&self, ip: &IpAddr) -> Option<Verdict<'_>> {
        let keys = self.by_ip.get(ip)?;
        let pods = keys
            .iter()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| !p.host_network);
        let mut running = None;
        let mut seen = false;
        for pod in pods {
            seen = true;
            if pod.claims_ips() {
                if running.is_some() {
                    return Some(Verdict::Ambiguous);
                }
                running = Some(pod.namespace.as_str());
            }
        }
        match running {
            Some(namespace) => Some(Verdict::Pod(namespace)),
            None if seen => Some(Verdict::NotRunning),
            None => None,
        }
    }

    /// Every pod that has `ip`, in any phase, sorted by namespace and name.
    fn pods_at(&self, ip: &IpAddr) -> Vec<PodRecord> {
        let mut pods: Vec<PodRecord> = self
            .by_ip
            .get(ip)
            .into_iter()
            .flatten()
            .filter_map(|key| self.pods.get(key).cloned())
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// Pods that claim IPs (Running, not hostNetwork, with at least one IP).
    pub fn indexed_pods(&self) -> usize {
        self.pods
            .values()
            .filter(|p| p.claims_ips() && !p.ips.is_empty())
            .count()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn ips(&self) -> impl Iterator<Item = &IpAddr> {
        self.by_ip.keys()
    }
}

/// [`PodTable::match_of`] before the namespace is interned.
enum Verdict<'a> {
    Pod(&'a str),
    NotRunning,
    Ambiguous,
}

/// Counts of the published index, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    pub pods: usize,
    pub ambiguous_ips: usize,
}

/// The IP -> pod map the request path reads.
pub struct PodIndex {
    cluster_domain: Name,
    by_ip: RwLock<HashMap<IpAddr, IpMatch>>,
    synced: AtomicBool,
    synced_tx: tokio::sync::watch::Sender<bool>,
    /// Namespace -> its view; views are handed out once and never reused, so a cached
    /// autopath answer can only ever be read by clients of the namespace it was made for.
    namespaces: Mutex<HashMap<String, Arc<ClientNamespace>>>,
    /// Every pod behind each IP, for `/debug/autopath` (never read by the request path).
    pods_by_ip: Mutex<HashMap<IpAddr, Vec<PodRecord>>>,
}

impl PodIndex {
    /// An empty, unsynced index for pods of `cluster_domain`.
    pub fn new(cluster_domain: Name) -> PodIndex {
        PodIndex {
            cluster_domain,
            by_ip: RwLock::new(HashMap::new()),
            synced: AtomicBool::new(false),
            synced_tx: tokio::sync::watch::Sender::new(false),
            namespaces: Mutex::new(HashMap::new()),
            pods_by_ip: Mutex::new(HashMap::new()),
        }
    }

    pub fn cluster_domain(&self) -> &Name {
        &self.cluster_domain
    }

    /// The pod behind a client address. The hot path: one read lock, one hash lookup.
    pub fn lookup(&self, ip: IpAddr) -> ClientMatch {
        if !self.synced.load(Ordering::Acquire) {
            return ClientMatch::Unsynced;
        }
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let by_ip = self.by_ip.read().unwrap_or_else(|p| p.into_inner());
        match by_ip.get(&ip) {
            Some(IpMatch::Pod(ns)) => ClientMatch::Pod(ns.clone()),
            Some(IpMatch::NotRunning) => ClientMatch::NotRunning,
            Some(IpMatch::Ambiguous) => ClientMatch::Ambiguous,
            None => ClientMatch::NoPod,
        }
    }

    /// Whether the first full list of pods has been published.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Resolves once the first full list of pods has been published (for `/ready`).
    pub async fn wait_synced(&self) {
        let mut rx = self.synced_tx.subscribe();
        // Err only when the sender is gone, and the sender is `self`.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Publishes the whole table (after a full list): the map is rebuilt aside and swapped in.
    pub fn replace(&self, table: &PodTable) -> IndexStats {
        let mut fresh = HashMap::with_capacity(table.by_ip.len());
        for ip in table.ips() {
            if let Some(found) = self.intern(table.match_of(ip)) {
                fresh.insert(*ip, found);
            }
        }
        let stats = stats_of(table, &fresh);
        let pods = table.ips().map(|ip| (*ip, table.pods_at(ip))).collect();
        *self.pods_by_ip.lock().unwrap_or_else(|p| p.into_inner()) = pods;
        *self.by_ip.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.synced.store(true, Ordering::Release);
        self.synced_tx.send_replace(true);
        stats
    }

    /// Publishes the matches of `touched` IPs after a single change to `table`.
    pub fn update(&self, table: &PodTable, touched: &[IpAddr]) -> IndexStats {
        let computed: Vec<(IpAddr, Option<IpMatch>)> = touched
            .iter()
            .map(|ip| (*ip, self.intern(table.match_of(ip))))
            .collect();
        {
            let mut pods = self.pods_by_ip.lock().unwrap_or_else(|p| p.into_inner());
            for ip in touched {
                match table.pods_at(ip) {
                    found if found.is_empty() => pods.remove(ip),
                    found => pods.insert(*ip, found),
                };
            }
        }
        let mut by_ip = self.by_ip.write().unwrap_or_else(|p| p.into_inner());
        for (ip, found) in computed {
            match found {
                Some(found) => by_ip.insert(ip, found),
                None => by_ip.remove(&ip),
            };
        }
        stats_of(table, &by_ip)
    }

    fn intern(&self, verdict: Option<Verdict<'_>>) -> Option<IpMatch> {
        Some(match verdict? {
            Verdict::Pod(namespace) => IpMatch::Pod(self.namespace(namespace)),
            Verdict::NotRunning => IpMatch::NotRunning,
            Verdict::Ambiguous => IpMatch::Ambiguous,
        })
    }

    /// Every pod of this node that has `ip`, in any phase (for `/debug/autopath`).
    pub fn pods_with_ip(&self, ip: IpAddr) -> Vec<PodRecord> {
        let pods = self.pods_by_ip.lock().unwrap_or_else(|p| p.into_inner());
        pods.get(&ip.to_canonical()).cloned().unwrap_or_default()
    }

    /// The namespaces seen so far, each with its cache view.
    pub fn namespaces(&self) -> Vec<Arc<ClientNamespace>> {
        let namespaces = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = namespaces.values().cloned().collect();
        all.sort_by_key(|ns| ns.view);
        all
    }

    /// The namespace's entry, created with a new view the first time it is seen.
    pub fn namespace(&self, name: &str) -> Arc<ClientNamespace> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ns) = namespaces.get(name) {
            return ns.clone();
        }
        // Views start after PLAIN_VIEW (0); u32 namespaces are not going to run out.
        let view = namespaces.len() as ViewId + 1;
        let first_search =
            Name::from_dotted(&format!("{name}.svc.{}", self.cluster_domain.to_dotted())).ok();
        let ns = Arc::new(ClientNamespace {
            name: name.to_string(),
            view,
            first_search,
        });
        namespaces.insert(name.to_string(), ns.clone());
        ns
    }
}

fn stats_of(table: &PodTable, by_ip: &HashMap<IpAddr, IpMatch>) -> IndexStats {
    IndexStats {
        pods: table.indexed_pods(),
        ambiguous_ips: by_ip
            .values()
            .filter(|m| matches!(m, IpMatch::Ambiguous))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, ip: &str, phase: PodPhase) -> PodRecord {
        PodRecord {
            namespace: namespace.into(),
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            phase,
            host_network: false,
            terminating: false,
        }
    }

    fn index() -> PodIndex {
        PodIndex::new(Name::from_dotted("cluster.local").unwrap())
    }

    fn namespace_of(index: &PodIndex, ip: &str) -> Option<String> {
        match index.lookup(ip.parse().unwrap()) {
            ClientMatch::Pod(ns) => Some(ns.name.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_completed_pod_never_shadows_the_running_pod_with_its_ip() {
        let index = index();
        let mut table = PodTable::new();
        table.apply(pod("argo-events", "job-1", "10.0.0.7", PodPhase::Succeeded));
        table.apply(pod("default", "web", "10.0.0.7", PodPhase::Running));
        index.replace(&table);
        for _ in 0..100 {
            assert_eq!(namespace_of(&index, "10.0.0.7").as_deref(), Some("default"));
        }
    }

    #[test]
    fn a_pod_that_stops_running_stops_matching_and_a_new_pod_takes_the_ip() {
        let index = index();
        let mut table = PodTable::new();
        index.replace(&table);
        let touched = table.apply(pod("default", "web", "10.0.0.7", PodPhase::Running));
        index.update(&table, &touched);
        assert_eq!(namespace_of(&index, "10.0.0.7").as_deref(), Some("default"));

        let touched = table.apply(pod("default", "web", "10.0.0.7", PodPhase::Succeeded));
        index.update(&table, &touched);
        assert!(matches!(
            index.lookup("10.0.0.7".parse().unwrap()),
            ClientMatch::NotRunning
        ));

        let touched = table.apply(pod("team-b", "api", "10.0.0.7", PodPhase::Running));
        index.update(&table, &touched);
        assert_eq!(namespace_of(&index, "10.0.0.7").as_deref(), Some("team-b"));

        let touched = table.delete("team-b", "api");
        index.update(&table, &touched);
        assert!(matches!(
            index.lookup("10.0.0.7".parse().unwrap()),
            ClientMatch::NotRunning
        ));
        let touched = table.delete("default", "web");
        index.update(&table, &touched);
        assert!(matches!(
            index.lookup("10.0.0.7".parse().unwrap()),
            ClientMatch::NoPod
        ));
    }

    #[test]
    fn two_running_pods_with_one_ip_are_ambiguous() {
        let index = index();
        let mut table = PodTable::new();
        table.apply(pod("a", "one", "10.0.0.8", PodPhase::Running));
        table.apply(pod("b", "two", "10.0.0.8", PodPhase::Running));
        let stats = index.replace(&table);
        assert_eq!(stats.ambiguous_ips, 1);
        assert_eq!(stats.pods, 2);
        assert!(matches!(
            index.lookup("10.0.0.8".parse().unwrap()),
            ClientMatch::Ambiguous
        ));
    }

    #[test]
    fn host_network_pods_and_pending_pods_never_match() {
        let index = index();
        let mut table = PodTable::new();
        let mut host = pod("kube-system", "proxy", "192.168.1.10", PodPhase::Running);
        host.host_network = true;
        table.apply(host);
        table.apply(pod("default", "starting", "10.0.0.9", PodPhase::Pending));
        table.apply(pod("default", "lost", "10.0.0.10", PodPhase::Unknown));
        table.apply(pod("default", "crashed", "10.0.0.11", PodPhase::Failed));
        let stats = index.replace(&table);
        assert_eq!(stats.pods, 0);
        assert!(matches!(
            index.lookup("192.168.1.10".parse().unwrap()),
            ClientMatch::NoPod
        ));
        for ip in ["10.0.0.9", "10.0.0.10", "10.0.0.11"] {
            assert!(matches!(
                index.lookup(ip.parse().unwrap()),
                ClientMatch::NotRunning
            ));
        }
    }

    #[test]
    fn a_terminating_running_pod_keeps_its_ip_until_deleted() {
        let index = index();
        let mut table = PodTable::new();
        let mut web = pod("default", "web", "10.0.0.7", PodPhase::Running);
        table.apply(web.clone());
        index.replace(&table);
        web.terminating = true;
        let touched = table.apply(web);
        index.update(&table, &touched);
        assert_eq!(namespace_of(&index, "10.0.0.7").as_deref(), Some("default"));
        let touched = table.delete("default", "web");
        index.update(&table, &touched);
        assert!(namespace_of(&index, "10.0.0.7").is_none());
    }

    #[test]
    fn both_families_match_and_mapped_ipv4_sources_are_canonical() {
        let index = index();
        let mut table = PodTable::new();
        let mut web = pod("default", "web", "10.0.0.7", PodPhase::Running);
        web.ips.push("fd00::7".parse().unwrap());
        table.apply(web);
        index.replace(&table);
        assert_eq!(namespace_of(&index, "fd00::7").as_deref(), Some("default"));
        assert_eq!(
            namespace_of(&index, "::ffff:10.0.0.7").as_deref(),
            Some("default")
        );
    }

    #[test]
    fn a_changed_ip_releases_the_old_one() {
        let index = index();
        let mut table = PodTable::new();
        table.apply(pod("default", "web", "10.0.0.7", PodPhase::Running));
        index.replace(&table);
        let touched = table.apply(pod("default", "web", "10.0.0.8", PodPhase::Running));
        assert_eq!(touched.len(), 2);
        index.update(&table, &touched);
        assert!(matches!(
            index.lookup("10.0.0.7".parse().unwrap()),
            ClientMatch::NoPod
        ));
        assert_eq!(namespace_of(&index, "10.0.0.8").as_deref(), Some("default"));
    }

    #[test]
    fn nothing_matches_before_the_first_sync_and_views_are_per_namespace() {
        let index = index();
        assert!(matches!(
            index.lookup("10.0.0.7".parse().unwrap()),
            ClientMatch::Unsynced
        ));
        let a = index.namespace("a");
        let b = index.namespace("b");
        assert_ne!(a.view, b.view);
        assert_ne!(a.view, crate::cache::PLAIN_VIEW);
        assert_eq!(index.namespace("a").view, a.view);
        assert_eq!(
            a.first_search,
            Some(Name::from_dotted("a.svc.cluster.local").unwrap())
        );
    }
}
