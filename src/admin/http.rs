//! The HTTP listener (`metrics.listen`): `/metrics` in Prometheus text format, `/health`
//! (liveness: 200 while the process serves HTTP at all), `/ready` (200 only while every
//! [`Readiness`] condition holds, else 503 naming the ones that fail) and, when
//! `metrics.debug` is on, the `/debug/*` endpoints of [`super::debug`]. `metrics.health_listen`
//! gets a second listener with `/health` and `/ready` only, for probes on another address.
//!
//! Port 0 binds an ephemeral port; [`HttpServer::local_addr`] reports what was bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::debug::{self, Inspector};
use super::readiness::Readiness;
use crate::config::MetricsConfig;
use crate::observe::Metrics;

/// How long shutdown waits for open HTTP connections (a scrape in progress) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// An HTTP listener could not be bound.
#[derive(Debug, Error)]
#[error("cannot listen for HTTP on {addr}: {error}")]
pub struct HttpBindError {
    addr: SocketAddr,
    error: std::io::Error,
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The state `/debug/*` inspects; the endpoints exist only with `metrics.debug` and this.
    pub inspector: Option<Arc<Inspector>>,
}

/// The running HTTP listeners.
pub struct HttpServer {
    local_addr: Option<SocketAddr>,
    health_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl HttpServer {
    /// Binds `config.listen` (when enabled) and `config.health_listen` (when set) and serves.
    pub async fn start(
        config: &MetricsConfig,
        endpoints: Endpoints,
    ) -> Result<HttpServer, HttpBindError> {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut local_addr = None;
        if config.enabled {
            let mut router = probes()
                .route("/metrics", get(metrics))
                .with_state(endpoints.clone());
            if config.debug {
                match &endpoints.inspector {
                    Some(inspector) => router = router.merge(debug::routes(inspector.clone())),
                    None => warn!("metrics.debug is on, but there is nothing to inspect"),
                }
            }
            let bound = serve(config.listen, router, &cancel, &mut tasks).await?;
            info!(%bound, debug = config.debug, "HTTP: /metrics /health /ready");
            local_addr = Some(bound);
        }
        let mut health_addr = None;
        if let Some(addr) = config.health_listen {
            let router = probes().with_state(endpoints);
            let bound = serve(addr, router, &cancel, &mut tasks).await?;
            info!(%bound, "HTTP: /health /ready");
            health_addr = Some(bound);
        }
        Ok(HttpServer {
            local_addr,
            health_addr,
            cancel,
            tasks,
        })
    }

    /// The bound address of `metrics.listen`, if it is served.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The bound address of `metrics.health_listen`, if set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// Stops accepting, lets requests in progress finish (briefly), and returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// `/health` and `/ready`, served on every listener.
fn probes() -> Router<Endpoints> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn serve(
    addr: SocketAddr,
    router: Router,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr, HttpBindError> {
    let bind_error = |error| HttpBindError { addr, error };
    // SO_REUSEPORT on a fixed port: during a rolling update the new pod binds the same
    // host-network address while the old one serves its lameduck.
    let listener = crate::server::bind_tcp_endpoint(addr, addr.port() != 0).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let stop = cancel.clone().cancelled_owned();
    tasks.spawn(async move {
        if let Err(err) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(%bound, %err, "HTTP listener failed");
        }
    });
    Ok(bound)
}

async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        endpoints.metrics.render(),
    )
        .into_response()
}

async fn health() -> &'static str {
    "OK"
}

async fn ready(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    match endpoints.readiness.check() {
        Ok(()) => (StatusCode::OK, "OK\n".into()),
        Err(failing) => {
            let mut body = String::from("not ready:\n");
            for reason in failing {
                body.push_str("- ");
                body.push_str(&reason);
                body.push('\n');
            }
            (StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }
}
