//! The shortest end-to-end path: a client asks our forwarder, which asks a real authority.

mod common;

use common::{Authority, EXAMPLE_ZONE, Forwarder, query, tcp_query, udp_query};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn forwards_over_udp_and_tcp() {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::start(&format!(
        "zones:\n  - name: example\n    upstreams: [\"{}\"]\n",
        authority.addr
    ))
    .await;
    let answer = udp_query(forwarder.addr, &query("www.example.", RecordType::A, None)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1);
    let answer = tcp_query(
        forwarder.addr,
        &query("www.example.", RecordType::AAAA, Some(1232)),
    )
    .await;
    assert_eq!(answer.answers.len(), 1);
    assert!(answer.edns.is_some());
    forwarder.stop().await;
}
