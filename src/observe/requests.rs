//! CoreDNS's request metrics (plugin/metrics), counted once per answered query at the cost of
//! a few uncontended atomic adds, so the kube-prometheus CoreDNS dashboard works unchanged:
//!
//! | metric | labels |
//! |---|---|
//! | `coredns_dns_requests_total` | `server`, `zone`, `proto`, `family`, `type` |
//! | `coredns_dns_do_requests_total` | `server`, `zone` |
//! | `coredns_dns_responses_total` | `server`, `zone`, `rcode`, `plugin` |
//! | `coredns_dns_request_duration_seconds` | `server`, `zone`, `type` (0.25 ms .. 8.192 s, doubling) |
//! | `coredns_dns_request_size_bytes` | `server`, `zone`, `proto` (0 .. 64000 bytes, CoreDNS's buckets) |
//! | `coredns_dns_response_size_bytes` | `server`, `zone`, `proto` |
//!
//! `server` is `dns://LISTEN_ADDRESS` of the listener the query came in on; `zone` is the
//! routed zone (`cluster.local.`, `.`), or `dropped` for queries answered before routing
//! (malformed, not served, no zone: CoreDNS's label for the same); `type` is one of CoreDNS's
//! monitored qtypes or `other`; `family` is `1` (IPv4) or `2` (IPv6); `plugin` is `cache` for
//! answers from the cache (fresh or stale), `forward` for answers that came from upstream now,
//! `hosts` and `template` for a zone's hosts entries and templates, and empty for errors we wrote ourselves (REFUSED, FORMERR, SERVFAIL after upstreams failed).
//! Every label is from a closed set: no qname, no client address.
//!
//! Why not `IntCounterVec::with_label_values` per query: it hashes the label values and takes
//! a lock, on every query. Here every series is a slot in fixed arrays indexed by small
//! integers computed once per query ([`Tally`]). Each recording thread owns a shard of the
//! arrays and adds with plain loads and stores (no locked instructions, no cache line bouncing
//! between cores); threads beyond `OWNED_SHARDS` share one shard with atomic adds. A scrape
//! sums the shards. Series that never counted anything are not exported (as with CoreDNS,
//! which creates them on use).
//!
//! Duration: a query answered synchronously in the receive loop (a cache hit, an error) is
//! recorded as taking 0 s without reading the clock again: it takes well under a microsecond,
//! far below the first bucket (0.25 ms), and a clock read would cost more than all the
//! counting. Forwarded queries are timed from their arrival to their answer.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::Proto;
use crate::wire::{RType, Rcode, rtype};

/// CoreDNS's monitored query types (plugin/metrics/vars), then `other`.
const QTYPES: [(RType, &str); 18] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::CNAME, "CNAME"),
    (rtype::DNSKEY, "DNSKEY"),
    (rtype::DS, "DS"),
    (rtype::MX, "MX"),
    (rtype::NSEC3, "NSEC3"),
    (rtype::NSEC, "NSEC"),
    (rtype::NS, "NS"),
    (rtype::PTR, "PTR"),
    (rtype::RRSIG, "RRSIG"),
    (rtype::SOA, "SOA"),
    (rtype::SRV, "SRV"),
    (rtype::TXT, "TXT"),
    (rtype::HTTPS, "HTTPS"),
    (rtype::IXFR, "IXFR"),
    (rtype::AXFR, "AXFR"),
    (rtype::ANY, "ANY"),
];
const QTYPE_SLOTS: usize = QTYPES.len() + 1;

/// Rcodes 0..=16 by number (16 is BADVERS), then `other`; names as CoreDNS prints them.
///
/// This is the second rcode name table, on purpose: [`Rcode::NAMES`] (7 names and `OTHER`)
/// labels `coredns_forward_*` and logs, and sizes the per-upstream table of lazily created
/// series in [`super::upstream`], so it names only the codes upstreams commonly send; this one
/// labels `coredns_dns_responses_total` in every code up to BADVERS and lower-case `other`.
/// Both outputs are what dashboards already match, so neither is rewritten from the other;
/// `the_two_rcode_tables_agree_where_they_overlap` keeps the shared names equal.
const RCODES: [&str; 18] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "RCODE12",
    "RCODE13",
    "RCODE14",
    "RCODE15",
    "BADVERS",
    "other",
];
const PROTOS: [&str; 2] = ["udp", "tcp"];
const FAMILIES: [&str; 2] = ["1", "2"];

/// Who produced an answer: the `plugin` label of `coredns_dns_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An error answer we wrote (REFUSED, FORMERR, SERVFAIL after upstreams failed, ...).
    Server = 0,
    /// A cache entry, fresh or stale.
    Cache = 1,
    /// An upstream answer fetched for this query.
    Forward = 2,
    /// A zone's hosts entries (`zones[].hosts`).
    Hosts = 3,
    /// A zone's templates (`zones[].templates`).
    Template = 4,
}
const SOURCES: [&str; 5] = ["", "cache", "forward", "hosts", "template"];

/// `coredns_dns_request_duration_seconds` buckets: 0.25 ms doubling to 8.192 s
/// (CoreDNS `plugin.TimeBuckets`), in nanoseconds.
const DURATION_BOUNDS_NS: [u64; 16] = {
    let mut bounds = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        bounds[i] = 250_000 << i;
        i += 1;
    }
    bounds
};
/// CoreDNS's request and response size buckets, in bytes.
const SIZE_BOUNDS: [u64; 14] = [
    0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000,
];

/// Cells per histogram series: one per bound, `+Inf`, and the sum.
const fn histogram_cells(bounds: usize) -> usize {
    bounds + 2
}

/// Where each family lives in a shard's flat array of cells.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Zones per server (routes plus `dropped`).
    zones: usize,
    requests: usize,
    do_requests: usize,
    responses: usize,
    duration: usize,
    request_size: usize,
    response_size: usize,
    cells: usize,
}

impl Layout {
    fn new(servers: usize, zones: usize) -> Layout {
        let series = servers * zones;
        let requests = 0;
        let do_requests = requests + series * PROTOS.len() * FAMILIES.len() * QTYPE_SLOTS;
        let responses = do_requests + series;
        let duration = responses + series * RCODES.len() * SOURCES.len();
        let request_size =
            duration + series * QTYPE_SLOTS * histogram_cells(DURATION_BOUNDS_NS.len());
        let size_cells = series * PROTOS.len() * histogram_cells(SIZE_BOUNDS.len());
        let response_size = request_size + size_cells;
        Layout {
            zones,
            requests,
            do_requests,
            responses,
            duration,
            request_size,
            response_size,
            cells: response_size + size_cells,
        }
    }
}

/// Where a query came in: the listener (its index in `config.listen`, the `server` label),
/// the transport, the client (for `family`) and the request's size.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub listener: usize,
    pub proto: Proto,
    pub client: IpAddr,
    pub request_len: usize,
}

/// The answer a query got, as the response metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    pub rcode: Rcode,
    pub source: Source,
    pub len: usize,
    /// When a forwarded query arrived (its duration runs until now); `None` for one answered
    /// synchronously (see the module documentation).
    pub arrived: Option<Instant>,
}

/// What is known about a query when it arrives: which series it counts in. Built in
/// `Responder::begin`, carried with a forwarded query, and recorded with the answer.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    /// `server * zones + zone`.
    series: u32,
    proto: u8,
    family: u8,
    qtype: u8,
    dnssec_ok: bool,
    request_len: u32,
}

/// The request metrics of one server instance (see the module documentation).
pub struct RequestMetrics {
    servers: Vec<String>,
    /// Zone labels by zone index; the last is `dropped`.
    zones: Vec<String>,
    layout: Layout,
    /// Shard `i` is written only by the thread numbered `i` ([`thread_number`]); allocated
    /// when that thread first records.
    owned: Box<[OnceLock<Box<[AtomicU64]>>]>,
    /// Written by every other thread, with atomic adds.
    shared: Box<[AtomicU64]>,
    descs: Vec<Desc>,
}

/// Threads that get a shard of their own: more than any worker count we run with. Threads
/// are numbered process-wide in the order they first record (tests run many servers in one
/// process; their later threads use the shared shard).
const OWNED_SHARDS: usize = 64;

impl RequestMetrics {
    /// Metrics for queries on `servers` (`dns://ADDRESS` labels, by listener index) routed to
    /// `zones` (labels, by zone index; [`RequestMetrics::dropped_zone`] is added after them).
    pub fn new(servers: Vec<String>, mut zones: Vec<String>) -> RequestMetrics {
        zones.push("dropped".to_string());
        let servers = if servers.is_empty() {
            vec!["dns://".to_string()]
        } else {
            servers
        };
        let layout = Layout::new(servers.len(), zones.len());
        let owned = (0..OWNED_SHARDS).map(|_| OnceLock::new()).collect();
        let shared = cells(layout.cells);
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                HashMap::new(),
            )
            .expect("metric names and labels are static and valid")
        };
        let descs = FAMILY_INFO
            .iter()
            .map(|(name, help, labels)| desc(name, help, labels))
            .collect();
        RequestMetrics {
            servers,
            zones,
            layout,
            owned,
            shared,
            descs,
        }
    }

    /// The zone index of queries answered before routing.
    pub fn dropped_zone(&self) -> usize {
        self.zones.len() - 1
    }

    /// The series of a query that came in as `arrival`, routed to zone index `zone`, asking
    /// `qtype`. Out-of-range indexes count under the last server or zone rather than panic.
    pub fn tally(&self, arrival: &Arrival, zone: usize, qtype: RType, dnssec_ok: bool) -> Tally {
        let Arrival {
            listener,
            proto,
            client,
            request_len,
        } = *arrival;
        let server = listener.min(self.servers.len() - 1);
        let zone = zone.min(self.zones.len() - 1);
        Tally {
            series: (server * self.layout.zones + zone) as u32,
            proto: proto as u8,
            family: u8::from(!client.to_canonical().is_ipv4()),
            qtype: qtype_slot(qtype),
            dnssec_ok,
            request_len: request_len as u32,
        }
    }

    /// Counts an answered query: the request, the response and their sizes, and its duration.
    pub fn record(&self, tally: &Tally, response: Response) {
        let number = thread_number();
        match self.owned.get(number) {
            Some(shard) => {
                let cells = shard.get_or_init(|| cells(self.layout.cells));
                // This thread is the only writer of its shard: a plain read and write.
                let add = |cell: &AtomicU64, n: u64| {
                    cell.store(cell.load(Ordering::Relaxed) + n, Ordering::Relaxed)
                };
                self.add_all(cells, add, tally, response);
            }
            None => {
                let add = |cell: &AtomicU64, n: u64| {
                    cell.fetch_add(n, Ordering::Relaxed);
                };
                let shared = &self.shared;
                self.add_all(shared, add, tally, response);
            }
        }
    }

    #[inline(always)]
    fn add_all(
        &self,
        cells: &[AtomicU64],
        add: impl Fn(&AtomicU64, u64),
        tally: &Tally,
        response: Response,
    ) {
        let Response {
            rcode,
            source,
            len: response_len,
            arrived,
        } = response;
        let layout = &self.layout;
        let series = tally.series as usize;
        let (proto, family, qtype) = (
            tally.proto as usize,
            tally.family as usize,
            tally.qtype as usize,
        );
        let observe =
            |at: usize, bounds: &[u64], value: u64| observe(cells, &add, at, bounds, value);
        let add = |index: usize, n: u64| add(&cells[index], n);
        add(
            layout.requests
                + ((series * PROTOS.len() + proto) * FAMILIES.len() + family) * QTYPE_SLOTS
                + qtype,
            1,
        );
        if tally.dnssec_ok {
            add(layout.do_requests + series, 1);
        }
        let rcode = usize::from(rcode.0).min(RCODES.len() - 1);
        add(
            layout.responses + (series * RCODES.len() + rcode) * SOURCES.len() + source as usize,
            1,
        );
        let nanos = arrived.map_or(0, |arrived| {
            u64::try_from(arrived.elapsed().as_nanos()).unwrap_or(u64::MAX)
        });
        let width = histogram_cells(DURATION_BOUNDS_NS.len());
        observe(
            layout.duration + (series * QTYPE_SLOTS + qtype) * width,
            &DURATION_BOUNDS_NS,
            nanos,
        );
        let width = histogram_cells(SIZE_BOUNDS.len());
        let size_series = (series * PROTOS.len() + proto) * width;
        observe(
            layout.request_size + size_series,
            &SIZE_BOUNDS,
            u64::from(tally.request_len),
        );
        observe(
            layout.response_size + size_series,
            &SIZE_BOUNDS,
            response_len as u64,
        );
    }

    /// Every cell summed over the shards.
    fn totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.layout.cells];
        let owned = self.owned.iter().filter_map(|shard| shard.get());
        for shard in owned.chain(std::iter::once(&self.shared)) {
            for (total, cell) in totals.iter_mut().zip(shard.iter()) {
                *total += cell.load(Ordering::Relaxed);
            }
        }
        totals
    }

    /// `(server label, zone label)` of a series index.
    fn series_labels(&self, series: usize) -> [(&'static str, &str); 2] {
        [
            ("server", &self.servers[series / self.layout.zones]),
            ("zone", &self.zones[series % self.layout.zones]),
        ]
    }

    fn series_count(&self) -> usize {
        self.servers.len() * self.layout.zones
    }
}

/// Name, help and labels of each family, in the order of `descs` and `collect`.
const FAMILY_INFO: [(&str, &str, &[&str]); 6] = [
    (
        "coredns_dns_requests_total",
        "Counter of DNS requests made per zone, protocol and family.",
        &["server", "zone", "proto", "family", "type"],
    ),
    (
        "coredns_dns_do_requests_total",
        "Counter of DNS requests with DO bit set per zone.",
        &["server", "zone"],
    ),
    (
        "coredns_dns_responses_total",
        "Counter of response status codes.",
        &["server", "zone", "rcode", "plugin"],
    ),
    (
        "coredns_dns_request_duration_seconds",
        "Histogram of the time (in seconds) each request took per zone.",
        &["server", "zone", "type"],
    ),
    (
        "coredns_dns_request_size_bytes",
        "Size of the request in bytes.",
        &["server", "zone", "proto"],
    ),
    (
        "coredns_dns_response_size_bytes",
        "Size of the returned response in bytes.",
        &["server", "zone", "proto"],
    ),
];

/// The slot of a qtype in [`QTYPES`], or the `other` slot.
fn qtype_slot(qtype: RType) -> u8 {
    QTYPES
        .iter()
        .position(|(t, _)| *t == qtype)
        .unwrap_or(QTYPES.len()) as u8
}

fn qtype_label(slot: usize) -> &'static str {
    QTYPES.get(slot).map_or("other", |(_, name)| name)
}

/// Adds `value` to the histogram whose cells start at `at`: its bucket (the first bound it
/// does not exceed, else `+Inf`) and the sum (skipped for 0). The count is the buckets' total.
#[inline(always)]
fn observe(
    cells: &[AtomicU64],
    add: impl Fn(&AtomicU64, u64),
    at: usize,
    bounds: &[u64],
    value: u64,
) {
    let bucket = bounds
        .iter()
        .position(|&bound| value <= bound)
        .unwrap_or(bounds.len());
    add(&cells[at + bucket], 1);
    if value > 0 {
        add(&cells[at + bounds.len() + 1], value);
    }
}

fn cells(count: usize) -> Box<[AtomicU64]> {
    (0..count).map(|_| AtomicU64::new(0)).collect()
}

thread_local! {
    /// This thread's number, assigned when it first records.
    static THREAD_NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_THREAD_NUMBER: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's number: unique in the process, dense among threads that record.
fn thread_number() -> usize {
    THREAD_NUMBER.with(|number| {
        if number.get() == usize::MAX {
            number.set(NEXT_THREAD_NUMBER.fetch_add(1, Ordering::Relaxed));
        }
        number.get()
    })
}

fn metric(labels: &[(&str, &str)]) -> proto::Metric {
    let mut metric = proto::Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect(),
    );
    metric
}

fn counter(labels: &[(&str, &str)], value: u64) -> proto::Metric {
    let mut metric = metric(labels);
    let mut counter = proto::Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    metric
}

/// A histogram sample from its cells, or `None` when nothing was observed. `scale` converts
/// bounds and sum to the exported unit.
fn histogram(
    labels: &[(&str, &str)],
    cells: &[u64],
    bounds: &[u64],
    scale: f64,
) -> Option<proto::Metric> {
    let counts = &cells[..=bounds.len()];
    let count: u64 = counts.iter().sum();
    if count == 0 {
        return None;
    }
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(&bound, &n)| {
            cumulative += n;
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(bound as f64 * scale);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(count);
    histogram.set_sample_sum(cells[bounds.len() + 1] as f64 * scale);
    let mut metric = metric(labels);
    metric.set_histogram(histogram);
    Some(metric)
}

fn family(index: usize, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let (name, help, _) = FAMILY_INFO[index];
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

impl Collector for RequestMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let totals = self.totals();
        let layout = &self.layout;
        let (mut requests, mut do_requests, mut responses) = (Vec::new(), Vec::new(), Vec::new());
        let (mut duration, mut request_size, mut response_size) =
            (Vec::new(), Vec::new(), Vec::new());
        for series in 0..self.series_count() {
            let [server, zone] = self.series_labels(series);
            for (p, proto) in PROTOS.iter().enumerate() {
                for (f, family) in FAMILIES.iter().enumerate() {
                    for t in 0..QTYPE_SLOTS {
                        let index = layout.requests
                            + ((series * PROTOS.len() + p) * FAMILIES.len() + f) * QTYPE_SLOTS
                            + t;
                        if totals[index] > 0 {
                            let labels = [
                                server,
                                zone,
                                ("proto", proto),
                                ("family", family),
                                ("type", qtype_label(t)),
                            ];
                            requests.push(counter(&labels, totals[index]));
                        }
                    }
                }
                let width = histogram_cells(SIZE_BOUNDS.len());
                let at = (series * PROTOS.len() + p) * width;
                let labels = [server, zone, ("proto", proto)];
                let cells = &totals[layout.request_size + at..][..width];
                request_size.extend(histogram(&labels, cells, &SIZE_BOUNDS, 1.0));
                let cells = &totals[layout.response_size + at..][..width];
                response_size.extend(histogram(&labels, cells, &SIZE_BOUNDS, 1.0));
            }
            if totals[layout.do_requests + series] > 0 {
                do_requests.push(counter(
                    &[server, zone],
                    totals[layout.do_requests + series],
                ));
            }
            for (r, rcode) in RCODES.iter().enumerate() {
                for (s, source) in SOURCES.iter().enumerate() {
                    let index = layout.responses + (series * RCODES.len() + r) * SOURCES.len() + s;
                    if totals[index] > 0 {
                        let labels = [server, zone, ("rcode", rcode), ("plugin", source)];
                        responses.push(counter(&labels, totals[index]));
                    }
                }
            }
            let width = histogram_cells(DURATION_BOUNDS_NS.len());
            for t in 0..QTYPE_SLOTS {
                let at = layout.duration + (series * QTYPE_SLOTS + t) * width;
                let labels = [server, zone, ("type", qtype_label(t))];
                duration.extend(histogram(
                    &labels,
                    &totals[at..][..width],
                    &DURATION_BOUNDS_NS,
                    1e-9,
                ));
            }
        }
        vec![
            family(0, MetricType::COUNTER, requests),
            family(1, MetricType::COUNTER, do_requests),
            family(2, MetricType::COUNTER, responses),
            family(3, MetricType::HISTOGRAM, duration),
            family(4, MetricType::HISTOGRAM, request_size),
            family(5, MetricType::HISTOGRAM, response_size),
        ]
    }
}

/// Registers a shared [`RequestMetrics`] (the registry owns a box, the responder an `Arc`).
pub struct SharedCollector(pub std::sync::Arc<RequestMetrics>);

impl Collector for SharedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_rcode_tables_agree_where_they_overlap() {
        let mut shared = 0;
        for (code, name) in RCODES.iter().enumerate().take(RCODES.len() - 1) {
            let wire_name = Rcode(code as u16).name();
            if wire_name != "OTHER" {
                assert_eq!(wire_name, *name, "rcode {code}");
                shared += 1;
            }
        }
        assert_eq!(
            shared,
            Rcode::NAMES.len() - 1,
            "every named wire rcode is below BADVERS+1"
        );
    }

    fn sample_value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn counts_land_in_their_series_and_render_as_coredns_does() {
        let metrics = RequestMetrics::new(
            vec!["dns://127.0.0.1:53".into()],
            vec!["cluster.local.".into(), ".".into()],
        );
        let registry = prometheus::Registry::new();
        let collector = std::sync::Arc::new(metrics);
        registry
            .register(Box::new(SharedCollector(collector.clone())))
            .unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let tally = |listener, zone, proto, client, qtype, dnssec_ok, request_len| {
            let arrival = Arrival {
                listener,
                proto,
                client,
                request_len,
            };
            collector.tally(&arrival, zone, RType(qtype), dnssec_ok)
        };
        let response = |rcode, source, len, arrived| Response {
            rcode: Rcode(rcode),
            source,
            len,
            arrived,
        };
        let a = tally(0, 0, Proto::Udp, v4, 1, false, 40);
        collector.record(&a, response(0, Source::Cache, 120, None));
        collector.record(&a, response(0, Source::Cache, 120, None));
        let srv = tally(0, 1, Proto::Tcp, v6, 33, true, 700);
        let arrived = Instant::now() - std::time::Duration::from_millis(3);
        collector.record(&srv, response(3, Source::Forward, 90, Some(arrived)));
        let dropped = tally(7, 99, Proto::Udp, v4, 4242, false, 12);
        // Another thread: its own shard, summed in at scrape time.
        let answered = response(5, Source::Server, 12, None);
        std::thread::scope(|scope| {
            scope.spawn(|| collector.record(&dropped, answered));
        });

        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let s = r#"server="dns://127.0.0.1:53""#;
        let get = |series: &str| sample_value(&text, series);
        assert_eq!(
            get(&format!(
                r#"coredns_dns_requests_total{{{s},zone="cluster.local.",proto="udp",family="1",type="A"}}"#
            ))
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            get(&format!(
                r#"coredns_dns_requests_total{{{s},zone=".",proto="tcp",family="2",type="SRV"}}"#
            ))
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            get(&format!(
                r#"coredns_dns_requests_total{{{s},zone="dropped",proto="udp",family="1",type="other"}}"#
            ))
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            get(&format!(r#"coredns_dns_do_requests_total{{{s},zone="."}}"#)).as_deref(),
            Some("1")
        );
        assert_eq!(
            get(&format!(
                r#"coredns_dns_responses_total{{{s},zone="cluster.local.",rcode="NOERROR",plugin="cache"}}"#
            ))
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            get(&format!(
                r#"coredns_dns_responses_total{{{s},zone=".",rcode="NXDOMAIN",plugin="forward"}}"#
            ))
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            get(&format!(
                r#"coredns_dns_responses_total{{{s},zone="dropped",rcode="REFUSED",plugin=""}}"#
            ))
            .as_deref(),
            Some("1")
        );
        // 700 bytes falls in the 1023 bucket: not in 511, and in every bucket from 1023 on.
        let size = |le: &str| {
            get(&format!(
                r#"coredns_dns_request_size_bytes_bucket{{{s},zone=".",proto="tcp",le="{le}"}}"#
            ))
        };
        assert_eq!(size("511").as_deref(), Some("0"));
        assert_eq!(size("1023").as_deref(), Some("1"));
        assert_eq!(size("+Inf").as_deref(), Some("1"));
        assert_eq!(
            get(&format!(
                r#"coredns_dns_response_size_bytes_sum{{{s},zone="cluster.local.",proto="udp"}}"#
            ))
            .as_deref(),
            Some("240")
        );
        assert_eq!(
            get(&format!(
                r#"coredns_dns_request_duration_seconds_count{{{s},zone="cluster.local.",type="A"}}"#
            ))
            .as_deref(),
            Some("2")
        );
        // Synchronous answers take 0 s; the forwarded one at least the 3 ms it was given.
        let duration = |zone: &str, le: &str, t: &str| {
            get(&format!(
                r#"coredns_dns_request_duration_seconds_bucket{{{s},zone="{zone}",type="{t}",le="{le}"}}"#
            ))
        };
        assert_eq!(
            duration("cluster.local.", "0.00025", "A").as_deref(),
            Some("2")
        );
        assert_eq!(duration(".", "0.002", "SRV").as_deref(), Some("0"));
        assert_eq!(duration(".", "0.004", "SRV").as_deref(), Some("1"));
        assert!(text.contains(r#"le="0.00025""#), "{text}");
        assert!(text.contains(r#"le="8.192""#), "{text}");
        // Series that never counted are not exported.
        assert!(!text.contains(r#"type="MX""#), "{text}");
    }

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        let cells: Vec<AtomicU64> = (0..histogram_cells(SIZE_BOUNDS.len()))
            .map(|_| AtomicU64::new(0))
            .collect();
        let add = |cell: &AtomicU64, n: u64| {
            cell.fetch_add(n, Ordering::Relaxed);
        };
        for value in [0, 100, 101, 64000, 64001] {
            observe(&cells, add, 0, &SIZE_BOUNDS, value);
        }
        let counts: Vec<u64> = cells.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 1, "0 <= 0");
        assert_eq!(counts[1], 1, "100 <= 100");
        assert_eq!(counts[2], 1, "101 <= 200");
        assert_eq!(counts[13], 1, "64000 <= 64000");
        assert_eq!(counts[14], 1, "64001 is +Inf");
        assert_eq!(counts[15], 100 + 101 + 64000 + 64001, "the sum");
    }
}
