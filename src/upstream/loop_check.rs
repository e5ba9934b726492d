//! Forwarding-loop detection, as CoreDNS's `loop` plugin does it: at start, each zone gets a
//! query for a random name under it, sent to our own listener. We forward it like any query;
//! if it arrives at our listener a second time, the zone's upstreams send our queries back to
//! us (a node resolv.conf that names this server, an upstream that forwards here). Such a zone
//! is then answered REFUSED, which also ends the loop, instead of multiplying every query
//! until timeouts; the error says what to fix. CoreDNS exits in that case, which on a node
//! cache takes down the zones that work too.
//!
//! The hot path pays one relaxed atomic load per query while no probe is out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::IntGaugeVec;
use tokio::net::UdpSocket;
use tracing::error;

use super::router::Route;
use crate::wire::query::{Question, UpstreamFlags, build_upstream};
use crate::wire::{CLASS_IN, Name, RType};

/// HINFO, as CoreDNS's probe asks: no real name has it under our zones.
const PROBE_TYPE: RType = RType(13);

/// The probes out at the moment and the zones found looping.
pub struct LoopCheck {
    probing: AtomicBool,
    probes: Mutex<Vec<Probe>>,
    detected: IntGaugeVec,
}

struct Probe {
    name: Name,
    arrivals: u32,
}

impl LoopCheck {
    pub fn new(detected: IntGaugeVec) -> LoopCheck {
        LoopCheck {
            probing: AtomicBool::new(false),
            probes: Mutex::new(Vec::new()),
            detected,
        }
    }

    /// Called for every routed query: counts arrivals of a probe name while probes are out,
    /// and marks `route` as looping at the second.
    pub fn arrived(&self, name: &Name, route: &Route) {
        if !self.probing.load(Ordering::Relaxed) {
            return;
        }
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(probe) = probes.iter_mut().find(|p| p.name == *name) else {
            return;
        };
        probe.arrivals += 1;
        // The first arrival is the probe we sent; any further one came back through upstream.
        if probe.arrivals == 2 && !route.looped.swap(true, Ordering::Relaxed) {
            self.detected
                .with_label_values(&[route.label.as_str()])
                .set(1);
            error!(
                zone = %route.label,
                upstreams = %route.upstreams.describe(),
                probe = %name.to_dotted(),
                "forwarding loop: this zone's upstreams send our queries back to us; answering \
                 REFUSED for the zone until restart. Point the zone at upstreams that do not \
                 forward to this server (a node resolv.conf must not name it)"
            );
        }
    }

    /// Sends one probe per route to `listener` (one of our own addresses) and waits up to
    /// `wait` for the answers; returns the labels of the zones found looping.
    pub async fn probe(
        &self,
        routes: &[&Route],
        listener: SocketAddr,
        wait: Duration,
    ) -> Vec<String> {
        let target = reachable(listener);
        let names: Vec<Name> = routes
            .iter()
            .filter_map(|route| {
                let label = format!("{:016x}", rand::random::<u64>());
                Name::concat(&label_wire(&label), &route.name).ok()
            })
            .collect();
        {
            let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            probes.extend(names.iter().map(|name| Probe {
                name: *name,
                arrivals: 0,
            }));
        }
        self.probing.store(true, Ordering::Relaxed);
        let local: SocketAddr = match target.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        if let Ok(socket) = UdpSocket::bind(local).await {
            for name in &names {
                let question = Question {
                    name: *name,
                    qtype: PROBE_TYPE,
                    qclass: CLASS_IN,
                };
                let message =
                    build_upstream(rand::random(), &question, UpstreamFlags::default(), 1232);
                let _ = socket.send_to(&message, target).await;
            }
            // Every zone answers (anything) or the wait ends; a looping zone answers REFUSED
            // as soon as it is detected.
            let mut buf = vec![0u8; 1232];
            let mut answered = 0;
            let until = tokio::time::Instant::now() + wait;
            while answered < names.len() {
                match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
                    Ok(Ok(_)) => answered += 1,
                    _ => break,
                }
            }
        }
        self.probing.store(false, Ordering::Relaxed);
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| !names.contains(&p.name));
        routes
            .iter()
            .filter(|route| route.looped.load(Ordering::Relaxed))
            .map(|route| route.label.clone())
            .collect()
    }
}

/// One label in wire form.
fn label_wire(label: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(label.len() + 1);
    wire.push(label.len() as u8);
    wire.extend_from_slice(label.as_bytes());
    wire
}

/// Where to send a probe for a listener: its own address, or loopback for a wildcard one.
fn reachable(listener: SocketAddr) -> SocketAddr {
    let ip = match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listener.port())
}
