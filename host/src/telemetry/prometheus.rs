//! The Prometheus endpoint (the `prometheus` feature).

use std::net::SocketAddr;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Histogram buckets for every `*_seconds` metric: 10 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why the endpoint could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrometheusError {
    /// The address could not be bound (in use, or not local).
    #[error("metrics endpoint {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What binding it said.
        reason: String,
    },
    /// The process already has a metrics recorder (an embedder's, or an
    /// endpoint started before): metrics go there.
    #[error("a metrics recorder is already installed in this process: {0}")]
    AlreadyInstalled(String),
}

/// Serves every metric this process records (see the
/// [module docs](super)) at `http://ADDR/metrics`, in the Prometheus text
/// format, and installs the process-wide recorder that collects them. The
/// listener runs on the current tokio runtime (or a thread of its own
/// outside one) for the life of the process.
///
/// An embedder with its own exporter skips this and installs its own
/// recorder: the library records through the [`metrics`] facade either way.
pub fn serve_prometheus(addr: SocketAddr) -> Result<(), PrometheusError> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| PrometheusError::Bind {
            addr,
            reason: e.to_string(),
        })?;
    builder.install().map_err(|e| match e {
        BuildError::FailedToSetGlobalRecorder(e) => {
            PrometheusError::AlreadyInstalled(e.to_string())
        }
        other => PrometheusError::Bind {
            addr,
            reason: other.to_string(),
        },
    })
}
