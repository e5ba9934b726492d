//! Binding the listeners' sockets: a UDP socket per worker with SO_REUSEPORT and one TCP
//! listener on the same port, and the TCP listener the HTTP endpoints use too.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::TcpListener;

use nix::sys::socket::{setsockopt, sockopt};

use super::batch::{AnswerSource, Family, ListenSocket};

/// Receive buffer of each UDP socket: room for bursts while workers are busy.
const UDP_RECV_BUFFER: usize = 4 << 20;
/// Attempts to find a port free for both UDP and TCP when the config asks for port 0.
const EPHEMERAL_BIND_ATTEMPTS: usize = 16;

/// A listener could not be set up.
#[derive(Debug, Error)]
#[error("cannot listen on {addr} ({proto}): {error}")]
pub struct BindError {
    pub(super) addr: SocketAddr,
    pub(super) proto: &'static str,
    pub(super) error: io::Error,
}

impl BindError {
    /// Whether this is `[::]` on a node whose kernel has IPv6 turned off (`ipv6.disable=1`).
    pub(super) fn is_ipv6_wildcard_without_ipv6(&self) -> bool {
        self.addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            && self.error.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32)
    }
}

/// Binds `workers` UDP sockets and one TCP listener on the same port. With port 0 (tests) the
/// first UDP socket picks the port and TCP must get the same one; SO_REUSEPORT is not set on
/// TCP then, so we can never join another process's listener that happens to hold that port.
pub(super) fn bind_pair(
    addr: SocketAddr,
    workers: usize,
) -> Result<(Vec<ListenSocket>, TcpListener), BindError> {
    let udp_error = |addr, error| BindError {
        addr,
        proto: "udp",
        error,
    };
    let tcp_error = |addr, error| BindError {
        addr,
        proto: "tcp",
        error,
    };
    let attempts = if addr.port() == 0 {
        EPHEMERAL_BIND_ATTEMPTS
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..attempts {
        let first = bind_udp(addr).map_err(|e| udp_error(addr, e))?;
        let bound = first
            .get_ref()
            .local_addr()
            .map_err(|e| udp_error(addr, e))?;
        let tcp = match bind_tcp(bound, addr.port() != 0) {
            Ok(tcp) => tcp,
            Err(error) if addr.port() == 0 && error.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(tcp_error(bound, error));
                continue;
            }
            Err(error) => return Err(tcp_error(bound, error)),
        };
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind_udp(bound).map_err(|e| udp_error(bound, e))?);
        }
        return Ok((sockets, tcp));
    }
    Err(last_error.unwrap_or_else(|| tcp_error(addr, io::ErrorKind::AddrInUse.into())))
}

fn bind_udp(addr: SocketAddr) -> io::Result<ListenSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    // A wildcard socket learns each query's destination, to answer from it (`batch::Peer`).
    match AnswerSource::of(addr) {
        AnswerSource::Bound => {}
        AnswerSource::Asked(Family::V4) => setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?,
        AnswerSource::Asked(Family::V6) => {
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        }
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    super::batch::register(socket.into())
}

/// A TCP listener; with `reuse_port` a second instance (a rolling update's new pod) can bind
/// the same address while this one still serves.
pub fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    bind_tcp_families(addr, reuse_port, false)
}

/// A TCP listener for the HTTP endpoints: as [`bind_tcp`], except that `[::]` takes both
/// families, as Go's `:PORT` does (so CoreDNS's `prometheus :9253` is scrapeable on an
/// IPv6-only cluster and an IPv4 one alike), and falls back to `0.0.0.0` on a node with IPv6
/// turned off.
pub fn bind_tcp_endpoint(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    if addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return bind_tcp(addr, reuse_port);
    }
    match bind_tcp_families(addr, reuse_port, true) {
        Err(err) if err.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32) => {
            bind_tcp(SocketAddr::from(([0, 0, 0, 0], addr.port())), reuse_port)
        }
        bound => bound,
    }
}

fn bind_tcp_families(addr: SocketAddr, reuse_port: bool, both: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!both)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
