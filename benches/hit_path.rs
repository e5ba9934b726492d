//! Micro-benchmark of the cache-hit path: `Responder::begin` on a query whose answer is cached
//! (parse and validate, route, cache lookup, copy and patch ID/case/TTLs, count). This is the
//! work every cache hit costs before the socket calls; the target (docs/design.md) is 4 µs of CPU per
//! query for all of it, syscalls included.
//!
//! Run: `cargo bench --bench hit_path`

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server as AuthServer;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use nodelocal_dns::Proto;
use nodelocal_dns::config::Config;
use nodelocal_dns::observe::Metrics;
use nodelocal_dns::responder::{Responder, Step};

/// The client address `begin` sees (no pod index here, so it only has to be some address).
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

const ZONE: &str = "$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 5\n@ IN NS ns\nns IN A 127.0.0.1\nwww IN A 192.0.2.1\nwww IN AAAA 2001:db8::1\n";

async fn authority() -> (SocketAddr, AuthServer<Catalog>) {
    let origin = Name::from_str("example.").expect("valid origin");
    let (origin, records) = Parser::new(ZONE, None, Some(origin))
        .parse()
        .expect("zone parses");
    let handler = InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::new(
        origin.clone(),
        records,
        ZoneType::Primary,
        AxfrPolicy::Deny,
    )
    .expect("zone loads");
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::new(handler)]);
    let mut server = AuthServer::new(catalog);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("bound");
    server.register_socket(socket);
    (addr, server)
}

fn query_packet(qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.add_query(Query::query(
        Name::from_str("WwW.example.").expect("name"),
        qtype,
    ));
    msg.metadata.recursion_desired = true;
    msg.set_edns(Edns::new());
    msg.to_vec().expect("encodes")
}

fn hit_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (upstream, _server) = runtime.block_on(authority());
    let yaml = format!(
        "listen: [\"127.0.0.1:0\"]\nzones:\n  - name: example\n    upstreams: [\"{upstream}\"]\n    cache:\n      success_ttl: 1h\n      prefetch:\n        min_hits: 0\n"
    );
    let config = Config::from_yaml(&yaml, "bench").expect("config");
    let responder = Arc::new(Responder::new(&config, Arc::new(Metrics::new())));
    let packet = query_packet(RecordType::A);
    let mut out = Vec::with_capacity(1232);
    runtime.block_on(async {
        match responder.begin(0, &packet, Proto::Udp, CLIENT, &mut out) {
            Step::Forward(pending) => responder.finish(&pending, &mut out).await,
            other => panic!("first query must miss, got {other:?}"),
        }
    });
    let _guard = runtime.enter();
    for (label, qtype) in [("A", RecordType::A), ("AAAA", RecordType::AAAA)] {
        let packet = query_packet(qtype);
        c.bench_function(&format!("begin: cache hit ({label})"), |b| {
            b.iter(
                || match responder.begin(0, &packet, Proto::Udp, CLIENT, &mut out) {
                    Step::Answered => out.len(),
                    other => panic!("expected a cache hit, got {other:?}"),
                },
            )
        });
    }
    let refused = {
        let mut msg = Message::query();
        msg.add_query(Query::query(
            Name::from_str("other.test.").expect("name"),
            RecordType::A,
        ));
        msg.to_vec().expect("encodes")
    };
    c.bench_function("begin: REFUSED (no zone)", |b| {
        b.iter(|| responder.begin(0, &refused, Proto::Udp, CLIENT, &mut out))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = hit_path
}
criterion_main!(benches);
