//! The fallback endpoints end to end: the real kube client and kube-runtime watcher against a fake
//! API server speaking list/watch for EndpointSlices, and `EndpointWatch`'s receiver seeing the
//! upstream Service's ready endpoints follow the slices.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use common::fake_apiserver::{FakeApiServer, FakeEndpointSlice};
use nodelocal_dns::kube::{EndpointWatch, ServiceEndpoints};

const NAMESPACE: &str = "kube-system";
const SERVICE: &str = "kube-dns-upstream";

/// The endpoints with the same addresses on both protocols, as kube-dns's Service has them.
fn both(addresses: &[&str]) -> ServiceEndpoints {
    ServiceEndpoints {
        udp: addrs(addresses),
        tcp: addrs(addresses),
    }
}

fn addrs(addresses: &[&str]) -> Vec<SocketAddr> {
    addresses
        .iter()
        .map(|a| a.parse().expect("a valid test address"))
        .collect()
}

/// Waits, up to `limit`, until the published endpoints are `expected`.
async fn until(
    receiver: &mut watch::Receiver<ServiceEndpoints>,
    expected: &ServiceEndpoints,
    limit: Duration,
) {
    let seen = tokio::time::timeout(limit, receiver.wait_for(|e| e == expected))
        .await
        .map(|published| published.is_ok());
    match seen {
        Ok(true) => {}
        Ok(false) => panic!("the watch ended before publishing {expected:?}"),
        Err(_) => panic!(
            "not published within {limit:?}: {expected:?}; last {:?}",
            *receiver.borrow()
        ),
    }
}

const WAIT: Duration = Duration::from_secs(5);

fn slice(name: &str, addresses: &[&str]) -> FakeEndpointSlice {
    FakeEndpointSlice::ready(NAMESPACE, name, SERVICE, addresses)
}

#[tokio::test]
async fn ready_endpoints_of_the_service_are_published_with_its_ports() {
    let api = FakeApiServer::start().await;
    // Slices of another Service, and of the same name in another namespace, are not ours.
    api.apply_slice(FakeEndpointSlice::ready(
        NAMESPACE,
        "kube-dns-abc",
        "kube-dns",
        &["10.9.0.1"],
    ));
    api.apply_slice(FakeEndpointSlice::ready(
        "default",
        "kube-dns-upstream-abc",
        SERVICE,
        &["10.9.0.2"],
    ));
    let (watch, mut endpoints) = EndpointWatch::start(api.client(), NAMESPACE, SERVICE);
    assert!(endpoints.borrow().is_empty(), "empty before the first list");

    api.apply_slice(
        slice("kube-dns-upstream-abc", &["10.0.0.2", "10.0.0.1"])
            .not_ready("10.0.0.3")
            .ports(1053, 1054),
    );
    let expected = ServiceEndpoints {
        udp: addrs(&["10.0.0.1:1053", "10.0.0.2:1053"]),
        tcp: addrs(&["10.0.0.1:1054", "10.0.0.2:1054"]),
    };
    until(&mut endpoints, &expected, WAIT).await;
    watch.stop();
}

#[tokio::test]
async fn an_endpoint_that_turns_not_ready_is_left_out() {
    let api = FakeApiServer::start().await;
    api.apply_slice(slice("upstream-a", &["10.0.0.1", "10.0.0.2"]));
    let (watch, mut endpoints) = EndpointWatch::start(api.client(), NAMESPACE, SERVICE);
    until(&mut endpoints, &both(&["10.0.0.1:53", "10.0.0.2:53"]), WAIT).await;

    api.apply_slice(slice("upstream-a", &["10.0.0.1"]).not_ready("10.0.0.2"));
    until(&mut endpoints, &both(&["10.0.0.1:53"]), WAIT).await;
    watch.stop();
}

#[tokio::test]
async fn slices_merge_and_a_deleted_slice_takes_only_its_endpoints() {
    let api = FakeApiServer::start().await;
    let (watch, mut endpoints) = EndpointWatch::start(api.client(), NAMESPACE, SERVICE);
    api.apply_slice(slice("upstream-v4", &["10.0.0.1", "10.0.0.2"]));
    until(&mut endpoints, &both(&["10.0.0.1:53", "10.0.0.2:53"]), WAIT).await;

    // A second slice (the IPv6 half of a dual-stack Service), overlapping nothing.
    api.apply_slice(slice("upstream-v6", &["fd00::1"]));
    let merged = both(&["10.0.0.1:53", "10.0.0.2:53", "[fd00::1]:53"]);
    until(&mut endpoints, &merged, WAIT).await;

    // A third slice naming an address already published adds nothing twice.
    api.apply_slice(slice("upstream-v4-more", &["10.0.0.2", "10.0.0.3"]));
    let three = both(&["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53", "[fd00::1]:53"]);
    until(&mut endpoints, &three, WAIT).await;

    api.delete_slice(NAMESPACE, "upstream-v4");
    until(
        &mut endpoints,
        &both(&["10.0.0.2:53", "10.0.0.3:53", "[fd00::1]:53"]),
        WAIT,
    )
    .await;
    api.delete_slice(NAMESPACE, "upstream-v4-more");
    api.delete_slice(NAMESPACE, "upstream-v6");
    until(&mut endpoints, &ServiceEndpoints::default(), WAIT).await;
    watch.stop();
}

#[tokio::test]
async fn the_watch_resumes_after_its_streams_end() {
    let api = FakeApiServer::start().await;
    api.apply_slice(slice("upstream-a", &["10.0.0.1"]));
    let (watch, mut endpoints) = EndpointWatch::start(api.client(), NAMESPACE, SERVICE);
    until(&mut endpoints, &both(&["10.0.0.1:53"]), WAIT).await;

    for round in 2..5 {
        api.end_watches();
        let address = format!("10.0.0.{round}");
        api.apply_slice(slice("upstream-a", &[&address]));
        until(&mut endpoints, &both(&[&format!("{address}:53")]), WAIT).await;
    }
    watch.stop();
}

#[tokio::test]
async fn a_relist_after_the_api_server_restarts_replaces_every_slice() {
    let mut api = FakeApiServer::start().await;
    api.apply_slice(slice("upstream-a", &["10.0.0.1"]));
    api.apply_slice(slice("upstream-b", &["10.0.0.2"]));
    let (watch, mut endpoints) = EndpointWatch::start(api.client(), NAMESPACE, SERVICE);
    until(&mut endpoints, &both(&["10.0.0.1:53", "10.0.0.2:53"]), WAIT).await;
    let (lists, _) = api.requests();

    // While the API server is down a slice goes and another comes, and their events are lost
    // (410 Gone on resume): only the re-list can tell the watch.
    api.stop();
    // Lets the aborted server tasks drop the listener before it is bound again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.delete_slice(NAMESPACE, "upstream-a");
    api.apply_slice(slice("upstream-c", &["10.0.0.3"]));
    api.compact();
    api.start_on().await;

    // Bounded by the watcher's reconnect backoff.
    until(
        &mut endpoints,
        &both(&["10.0.0.2:53", "10.0.0.3:53"]),
        Duration::from_secs(15),
    )
    .await;
    assert!(api.requests().0 > lists, "re-listed");
    watch.stop();
}

#[tokio::test]
async fn stop_ends_the_watch() {
    let api = FakeApiServer::start().await;
    let (watch, mut endpoints) = EndpointWatch::start(api.client(), NAMESPACE, SERVICE);
    watch.stop();
    let ended = tokio::time::timeout(WAIT, endpoints.changed()).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the sender is dropped with the task: {ended:?}"
    );
}
