//! The Prometheus metrics of one node (DESIGN.md §5): names prefixed `wsus_edge_`, base units,
//! `_total` on counters (added by the encoder). One registry per node, so several nodes can run
//! in one process (the demo, the tests). Calls nothing else in the crate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route class (`content`, `admin`, `other`), never the raw path: bounded cardinality.
    pub path: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

/// Every metric of a node. Cheap to update from any task (atomics).
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// Content requests answered without the upstream, by the slowest tier touched.
    pub cache_hits: Family<TierLabels, Counter>,
    /// Content requests that needed the upstream for at least one byte.
    pub cache_misses: Counter,
    pub upstream_requests: Family<TransportLabels, Counter>,
    pub upstream_bytes: Counter,
    pub served_bytes: Counter,
    /// Bytes held per tier (`memory`, `disk`); disk counts partial objects at their full size.
    pub cache_bytes: Family<TierLabels, Gauge>,
    pub fill_errors: Family<ReasonLabels, Counter>,
    /// Objects removed to make room.
    pub evictions: Counter,
    /// Client reports accepted and not yet acknowledged by the upstream. Zero until the node
    /// accepts reports (the reporting web service).
    pub reports_pending: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wsus_edge");
        let requests = Family::<RequestLabels, Counter>::default();
        let cache_hits = Family::<TierLabels, Counter>::default();
        let cache_misses = Counter::default();
        let upstream_requests = Family::<TransportLabels, Counter>::default();
        let upstream_bytes = Counter::default();
        let served_bytes = Counter::default();
        let cache_bytes = Family::<TierLabels, Gauge>::default();
        let fill_errors = Family::<ReasonLabels, Counter>::default();
        let evictions = Counter::default();
        let reports_pending = Gauge::default();
        registry.register("requests", "HTTP requests answered", requests.clone());
        registry.register(
            "cache_hits",
            "Content requests answered from the cache, by tier",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Content requests that needed bytes from the upstream",
            cache_misses.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to the upstream server",
            upstream_requests.clone(),
        );
        registry.register(
            "upstream_bytes",
            "Body bytes received from the upstream server",
            upstream_bytes.clone(),
        );
        registry.register(
            "served_bytes",
            "Content body bytes sent to clients",
            served_bytes.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the cache, by tier",
            cache_bytes.clone(),
        );
        registry.register(
            "fill_errors",
            "Failed fills from upstream, by reason",
            fill_errors.clone(),
        );
        registry.register(
            "cache_evictions",
            "Objects evicted from the disk cache",
            evictions.clone(),
        );
        registry.register(
            "reports_pending",
            "Client reports accepted and not yet acknowledged upstream",
            reports_pending.clone(),
        );
        Metrics {
            registry,
            requests,
            cache_hits,
            cache_misses,
            upstream_requests,
            upstream_bytes,
            reports_pending,
            served_bytes,
            cache_bytes,
            fill_errors,
            evictions,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn fill_error(&self, reason: &'static str) {
        self.fill_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn request(&self, path: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { path, status })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new();
        m.request("content", 206);
        m.fill_error("digest");
        m.cache_hits
            .get_or_create(&TierLabels { tier: "memory" })
            .inc();
        m.upstream_requests
            .get_or_create(&TransportLabels { transport: "http1" })
            .inc();
        let text = m.encode();
        for name in [
            "wsus_edge_requests_total{path=\"content\",status=\"206\"} 1",
            "wsus_edge_fill_errors_total{reason=\"digest\"} 1",
            "wsus_edge_cache_hits_total{tier=\"memory\"} 1",
            "wsus_edge_cache_misses_total 0",
            "wsus_edge_upstream_requests_total{transport=\"http1\"} 1",
            "wsus_edge_upstream_bytes_total 0",
            "wsus_edge_served_bytes_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
