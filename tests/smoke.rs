//! The shortest end-to-end path: a client asks our forwarder, which asks a real authority.

mod common;

use common::{
    Authority, CLIENT_TIMEOUT, EXAMPLE_ZONE, Forwarder, mixed_case, query, tcp_query, udp_query,
    udp_raw,
};
use hickory_proto::op::Message;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn forwards_over_udp_and_tcp() {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::for_example(authority.addr).await;
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

/// Each record shape of the authority's zone comes through intact, over UDP and TCP: A,
/// AAAA, a CNAME with its target, NXDOMAIN and NODATA with the SOA; the question comes back
/// in the client's letter case.
#[tokio::test]
async fn record_shapes_pass_through_over_udp_and_tcp() {
    let authority = Authority::start(&[("example.", EXAMPLE_ZONE)]).await;
    let forwarder = Forwarder::for_example(authority.addr).await;
    // Mixed case (0x20 randomisation): the answer, fresh and then cached, echoes it byte
    // for byte.
    let mixed = mixed_case(&query("www.example.", RecordType::A, None));
    for _ in 0..2 {
        let answer = udp_raw(forwarder.addr, &mixed, CLIENT_TIMEOUT)
            .await
            .expect("an answer");
        assert_eq!(&answer[12..29], &mixed[12..29], "the question as sent");
        let answer = Message::from_vec(&answer).expect("answer decodes");
        assert_eq!(answer.answers.len(), 1);
    }

    // (name, type, rcode, answer types, authority records)
    let cases = [
        (
            "www.example.",
            RecordType::A,
            ResponseCode::NoError,
            vec![RecordType::A],
            0,
        ),
        (
            "www.example.",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![RecordType::AAAA],
            0,
        ),
        (
            "alias.example.",
            RecordType::A,
            ResponseCode::NoError,
            vec![RecordType::CNAME, RecordType::A],
            0,
        ),
        (
            "nope.example.",
            RecordType::A,
            ResponseCode::NXDomain,
            vec![],
            1,
        ),
        (
            "v4only.example.",
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![],
            1,
        ),
    ];
    for (qname, rtype, rcode, types, authorities) in cases {
        let msg = query(qname, rtype, Some(1232));
        for answer in [
            udp_query(forwarder.addr, &msg).await,
            tcp_query(forwarder.addr, &msg).await,
        ] {
            assert_eq!(answer.metadata.response_code, rcode, "{qname} {rtype}");
            let got: Vec<RecordType> = answer.answers.iter().map(|r| r.record_type()).collect();
            assert_eq!(got, types, "{qname} {rtype}");
            assert_eq!(
                answer.authorities.len(),
                authorities,
                "{qname} {rtype}: SOA"
            );
            if authorities > 0 {
                assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
            }
            assert_eq!(answer.queries[0].name().to_ascii(), qname);
            assert_eq!(answer.metadata.id, msg.metadata.id);
        }
    }

    forwarder.stop().await;
}
