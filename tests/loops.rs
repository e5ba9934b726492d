//! Forwarding-loop detection: a zone whose upstream sends our queries back to us
//! is found by the start-up probe and answered REFUSED, while the other zones keep working.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{Authority, EXAMPLE_ZONE, Forwarder, query, udp_query};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

/// A resolver that forwards everything to `target` (once set) and relays the answers back:
/// the node resolver of a misconfigured node whose resolv.conf names the node cache.
struct Relay {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    relayed: Arc<AtomicUsize>,
}

impl Relay {
    async fn start() -> Relay {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let addr = socket.local_addr().expect("bound");
        let target = Arc::new(OnceLock::<SocketAddr>::new());
        let relayed = Arc::new(AtomicUsize::new(0));
        let (task_target, task_relayed) = (target.clone(), relayed.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let Some(target) = task_target.get().copied() else {
                    continue;
                };
                task_relayed.fetch_add(1, Ordering::SeqCst);
                let (packet, socket) = (buf[..len].to_vec(), socket.clone());
                tokio::spawn(async move {
                    let Some(answer) =
                        common::udp_raw(target, &packet, Duration::from_secs(3)).await
                    else {
                        return;
                    };
                    let _ = socket.send_to(&answer, from).await;
                });
            }
        });
        Relay {
            addr,
            target,
            relayed,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_whose_upstream_loops_back_is_refused_and_the_rest_keeps_working() {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let relay = Relay::start().await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n  - name: loop.test\n    upstreams: [\"{}\"]\n    timeout: 1s\n    deadline: 2s\n",
        authority.addr, relay.addr
    ))
    .await;
    relay.target.set(forwarder.addr).expect("target set once");

    let looped = forwarder
        .responder
        .check_loops(forwarder.addr, Duration::from_secs(5))
        .await;

    assert_eq!(looped, vec!["loop.test.".to_string()]);
    assert_eq!(
        forwarder
            .scrape()
            .value("nodelocaldns_loop_detected", &[("zone", "loop.test.")]),
        1.0
    );
    let answer = udp_query(
        forwarder.addr,
        &query("www.loop.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    // The probe went round once; the query after detection was refused before forwarding.
    assert_eq!(relay.relayed.load(Ordering::SeqCst), 1);
    forwarder.stop().await;
}

#[tokio::test]
async fn zones_without_a_loop_are_left_alone() {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n  - name: other.test\n    upstreams: [\"{}\"]\n",
        authority.addr, authority.addr
    ))
    .await;

    let looped = forwarder
        .responder
        .check_loops(forwarder.addr, Duration::from_secs(5))
        .await;

    assert!(looped.is_empty(), "{looped:?}");
    assert_eq!(
        forwarder.scrape().sum("nodelocaldns_loop_detected", &[]),
        0.0
    );
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    forwarder.stop().await;
}
