//! The kube-dns endpoints to fall back to: a watch of the upstream Service's EndpointSlices
//! (node-cache's `-upstreamsvc`, e.g. `kube-system/kube-dns-upstream`).
//!
//! While our process is dead, the node's packet rules send pods' queries for the link-local
//! address straight to the kube-dns pods, so those rules must name the pods that serve now; this
//! watch is where their addresses come from. It publishes on a `tokio::sync::watch` channel: the
//! owner of the rules reads the latest value when it wants and never waits for the API server.
//!
//! A Service's endpoints are spread over several slices (by address family, and past 100
//! endpoints), and a slice can be deleted on its own, so each slice's endpoints are kept under its
//! name and the published value is their union. A (re)list is buffered in a fresh table and
//! swapped in whole at `InitDone`, as in the pod watch ([`super::watch`]): a half-listed Service
//! never shows as fewer endpoints than it has.
//!
//! What a slice contributes (`slice_endpoints`):
//! - addresses of ready endpoints: `conditions.ready` absent counts as ready (the API's rule),
//!   `terminating: true` excludes; IPv4 and IPv6 slices, FQDN slices skipped;
//! - each with the slice's DNS port per protocol: the port named `dns` (UDP, the default when
//!   `protocol` is absent) or `dns-tcp` (TCP), else the first port of that protocol, else 53.
//!
//! RBAC: `list` and `watch` on `discovery.k8s.io` `endpointslices` in the Service's namespace.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ::kube::Client;
use ::kube::api::Api;
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::{WatchStreamExt, watcher as watch_slices};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

/// The label the EndpointSlice controller puts on every slice of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The port used when a slice names none for a protocol.
const DEFAULT_DNS_PORT: u16 = 53;

pub use crate::node::ServiceEndpoints;

/// The union of `parts`, sorted and deduplicated.
fn union<'a>(parts: impl IntoIterator<Item = &'a ServiceEndpoints>) -> ServiceEndpoints {
    let mut union = ServiceEndpoints::default();
    for part in parts {
        union.udp.extend_from_slice(&part.udp);
        union.tcp.extend_from_slice(&part.tcp);
    }
    for addrs in [&mut union.udp, &mut union.tcp] {
        addrs.sort_unstable();
        addrs.dedup();
    }
    union
}

/// A running watch; owned by its starter, stopped by `stop` (and on drop).
pub struct EndpointWatch {
    task: AbortOnDropHandle<()>,
}

impl EndpointWatch {
    /// Watches the EndpointSlices labelled `kubernetes.io/service-name=<service>` in `namespace`
    /// and publishes the union of their ready endpoints (sorted, deduplicated) on the returned receiver
    /// whenever it changes. Before the first list the receiver holds an empty value.
    pub fn start(
        client: Client,
        namespace: &str,
        service: &str,
    ) -> (EndpointWatch, watch::Receiver<ServiceEndpoints>) {
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
        let (published, receiver) = watch::channel(ServiceEndpoints::default());
        let service = format!("{namespace}/{service}");
        let task = tokio::spawn(async move {
            info!(%service, "watching the Service's EndpointSlices for the fallback endpoints");
            let events = watch_slices(api, config).default_backoff();
            run(events, &service, published).await;
        });
        let watch = EndpointWatch {
            task: AbortOnDropHandle::new(task),
        };
        (watch, receiver)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Each slice's endpoints, by slice name (the namespace is the watch's).
#[derive(Default)]
struct SliceTable(BTreeMap<String, ServiceEndpoints>);

impl SliceTable {
    fn apply(&mut self, slice: &EndpointSlice) {
        if let Some(name) = &slice.metadata.name {
            self.0.insert(name.clone(), slice_endpoints(slice));
        }
    }

    fn delete(&mut self, slice: &EndpointSlice) {
        if let Some(name) = &slice.metadata.name {
            self.0.remove(name);
        }
    }

    fn union(&self) -> ServiceEndpoints {
        union(self.0.values())
    }
}

async fn run<S>(events: S, service: &str, published: watch::Sender<ServiceEndpoints>)
where
    S: futures::Stream<Item = Result<Event<EndpointSlice>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut slices = SliceTable::default();
    let mut listing: Option<SliceTable> = None;
    while let Some(event) = events.next().await {
        match event {
            Err(err) => {
                // The watcher recovers on the next poll (after the backoff), as the pod watch's.
                warn!(%service, %err, "endpointslice watch failed; retrying");
                continue;
            }
            Ok(Event::Init) => {
                listing = Some(SliceTable::default());
                continue;
            }
            Ok(Event::InitApply(slice)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.apply(&slice);
                }
                continue;
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listing.take() {
                    slices = listed;
                }
            }
            Ok(Event::Apply(slice)) => slices.apply(&slice),
            Ok(Event::Delete(slice)) => slices.delete(&slice),
        }
        let endpoints = slices.union();
        published.send_if_modified(|current| {
            if *current == endpoints {
                return false;
            }
            info!(
                %service,
                slices = slices.0.len(),
                udp = endpoints.udp.len(),
                tcp = endpoints.tcp.len(),
                "fallback endpoints changed"
            );
            *current = endpoints;
            true
        });
    }
    warn!(%service, "endpointslice watch ended");
}

/// What one slice contributes: its ready endpoints' addresses with its DNS ports. Addresses that
/// do not parse as the slice's `addressType` are skipped: they come from the API server.
fn slice_endpoints(slice: &EndpointSlice) -> ServiceEndpoints {
    let family_matches: fn(&IpAddr) -> bool = match slice.address_type.as_str() {
        "IPv4" => IpAddr::is_ipv4,
        "IPv6" => IpAddr::is_ipv6,
        other => {
            debug!(slice = ?slice.metadata.name, address_type = other, "endpointslice skipped");
            return ServiceEndpoints::default();
        }
    };
    let ports = slice.ports.as_deref().unwrap_or_default();
    let udp_port = dns_port(ports, "UDP", "dns");
    let tcp_port = dns_port(ports, "TCP", "dns-tcp");
    let addresses: Vec<IpAddr> = slice
        .endpoints
        .iter()
        .filter(|endpoint| {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            ready && !terminating
        })
        .flat_map(|endpoint| &endpoint.addresses)
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .filter(family_matches)
        .collect();
    let with_port = |port| -> Vec<SocketAddr> {
        addresses
            .iter()
            .map(|&ip| SocketAddr::new(ip, port))
            .collect()
    };
    union([&ServiceEndpoints {
        udp: with_port(udp_port),
        tcp: with_port(tcp_port),
    }])
}

/// The slice's port for `protocol`: the one named `preferred`, else the first, else 53. A port
/// entry without a usable number (absent means "any" in the API) is not a choice.
fn dns_port(ports: &[EndpointPort], protocol: &str, preferred: &str) -> u16 {
    let mut first = None;
    for port in ports {
        if port.protocol.as_deref().unwrap_or("UDP") != protocol {
            continue;
        }
        let Some(number) = port
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
        else {
            continue;
        };
        if port.name.as_deref() == Some(preferred) {
            return number;
        }
        first.get_or_insert(number);
    }
    first.unwrap_or(DEFAULT_DNS_PORT)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn endpoint(address: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            ..Endpoint::default()
        }
    }

    fn port(name: Option<&str>, protocol: Option<&str>, number: i32) -> EndpointPort {
        EndpointPort {
            name: name.map(str::to_string),
            protocol: protocol.map(str::to_string),
            port: Some(number),
            app_protocol: None,
        }
    }

    fn kube_dns_ports() -> Vec<EndpointPort> {
        vec![
            port(Some("dns"), Some("UDP"), 53),
            port(Some("dns-tcp"), Some("TCP"), 53),
            port(Some("metrics"), Some("TCP"), 9153),
        ]
    }

    fn slice(
        address_type: &str,
        endpoints: Vec<Endpoint>,
        ports: Vec<EndpointPort>,
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.to_string(),
            endpoints,
            metadata: ObjectMeta {
                name: Some("kube-dns-upstream-abcde".into()),
                ..ObjectMeta::default()
            },
            ports: Some(ports),
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().expect("a valid test address"))
            .collect()
    }

    #[test]
    fn ready_endpoints_get_the_dns_ports() {
        let slice = slice(
            "IPv4",
            vec![
                endpoint("10.0.0.2", Some(true), Some(false)),
                endpoint("10.0.0.1", Some(true), None),
            ],
            kube_dns_ports(),
        );
        let endpoints = slice_endpoints(&slice);
        assert_eq!(endpoints.udp, addrs(&["10.0.0.1:53", "10.0.0.2:53"]));
        assert_eq!(endpoints.tcp, addrs(&["10.0.0.1:53", "10.0.0.2:53"]));
    }

    #[test]
    fn absent_ready_counts_as_ready() {
        let mut no_conditions = endpoint("10.0.0.3", None, None);
        no_conditions.conditions = None;
        let slice = slice(
            "IPv4",
            vec![endpoint("10.0.0.1", None, None), no_conditions],
            kube_dns_ports(),
        );
        assert_eq!(
            slice_endpoints(&slice).udp,
            addrs(&["10.0.0.1:53", "10.0.0.3:53"])
        );
    }

    #[test]
    fn not_ready_and_terminating_endpoints_are_left_out() {
        let slice = slice(
            "IPv4",
            vec![
                endpoint("10.0.0.1", Some(false), None),
                endpoint("10.0.0.2", Some(true), Some(true)),
                endpoint("10.0.0.3", None, Some(true)),
                endpoint("10.0.0.4", Some(true), None),
            ],
            kube_dns_ports(),
        );
        let endpoints = slice_endpoints(&slice);
        assert_eq!(endpoints.udp, addrs(&["10.0.0.4:53"]));
        assert_eq!(endpoints.tcp, addrs(&["10.0.0.4:53"]));
    }

    #[test]
    fn ipv6_slices_count_and_fqdn_slices_do_not() {
        let v6 = slice(
            "IPv6",
            vec![endpoint("fd00::a", Some(true), None)],
            kube_dns_ports(),
        );
        assert_eq!(slice_endpoints(&v6).udp, addrs(&["[fd00::a]:53"]));
        let fqdn = slice(
            "FQDN",
            vec![endpoint("dns.example.com", Some(true), None)],
            kube_dns_ports(),
        );
        assert!(slice_endpoints(&fqdn).is_empty());
    }

    #[test]
    fn addresses_not_of_the_slice_family_are_skipped() {
        let slice = slice(
            "IPv4",
            vec![
                endpoint("fd00::a", Some(true), None),
                endpoint("not-an-ip", Some(true), None),
                endpoint("10.0.0.1", Some(true), None),
            ],
            kube_dns_ports(),
        );
        assert_eq!(slice_endpoints(&slice).udp, addrs(&["10.0.0.1:53"]));
    }

    /// The (UDP, TCP) ports that a slice with `ports` gives its endpoints.
    fn chosen_ports(ports: Vec<EndpointPort>) -> (u16, u16) {
        let slice = slice("IPv4", vec![endpoint("10.0.0.1", None, None)], ports);
        let endpoints = slice_endpoints(&slice);
        assert_eq!((endpoints.udp.len(), endpoints.tcp.len()), (1, 1));
        (endpoints.udp[0].port(), endpoints.tcp[0].port())
    }

    #[test]
    fn named_dns_ports_win_over_the_first_of_their_protocol() {
        let ports = vec![
            port(Some("metrics"), Some("TCP"), 9153),
            port(Some("other"), Some("UDP"), 5300),
            port(Some("dns-tcp"), Some("TCP"), 1053),
            port(Some("dns"), None, 1054),
        ];
        assert_eq!(chosen_ports(ports), (1054, 1053));
    }

    #[test]
    fn unnamed_ports_use_the_first_of_their_protocol_and_udp_is_the_default() {
        let ports = vec![
            port(None, Some("TCP"), 5353),
            port(None, Some("TCP"), 5354),
            port(None, None, 5355),
            port(None, Some("SCTP"), 5356),
        ];
        assert_eq!(chosen_ports(ports), (5355, 5353));
    }

    #[test]
    fn a_protocol_without_a_usable_port_gets_53() {
        let ports = vec![
            port(Some("dns"), Some("UDP"), 1054),
            port(Some("dns-tcp"), Some("TCP"), 0),
            EndpointPort {
                port: None,
                ..port(Some("dns-tcp"), Some("TCP"), 1)
            },
        ];
        assert_eq!(chosen_ports(ports), (1054, 53));
        assert_eq!(
            chosen_ports(vec![port(Some("dns"), Some("UDP"), 70_000)]),
            (53, 53)
        );
        assert_eq!(chosen_ports(vec![]), (53, 53));
    }

    #[test]
    fn slices_merge_sorted_and_deduplicated_and_delete_alone() {
        let mut table = SliceTable::default();
        let mut first = slice(
            "IPv4",
            vec![
                endpoint("10.0.0.2", None, None),
                endpoint("10.0.0.1", None, None),
            ],
            kube_dns_ports(),
        );
        first.metadata.name = Some("first".into());
        let mut second = slice(
            "IPv6",
            vec![endpoint("fd00::1", None, None)],
            kube_dns_ports(),
        );
        second.metadata.name = Some("second".into());
        let mut third = slice(
            "IPv4",
            vec![endpoint("10.0.0.1", None, None)],
            kube_dns_ports(),
        );
        third.metadata.name = Some("third".into());
        for slice in [&first, &second, &third] {
            table.apply(slice);
        }
        assert_eq!(
            table.union().udp,
            addrs(&["10.0.0.1:53", "10.0.0.2:53", "[fd00::1]:53"])
        );
        table.delete(&first);
        assert_eq!(table.union().tcp, addrs(&["10.0.0.1:53", "[fd00::1]:53"]));
        let mut unnamed = third.clone();
        unnamed.metadata.name = None;
        table.apply(&unnamed);
        table.delete(&unnamed);
        assert_eq!(table.0.len(), 2);
    }
}
