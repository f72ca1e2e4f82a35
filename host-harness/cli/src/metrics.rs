//! `serve`'s `GET /metrics`: counters, gauges and a histogram in the Prometheus
//! (OpenMetrics) text format, encoded by `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of an answer: its HTTP status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `202`, `401`, …
    pub status: u16,
}

/// Labels of a failed delivery: the WIT `push-error` case (`http-status`, `timeout`, …),
/// or `trap`/`invalid-config` for failures of the component itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The failure's kind.
    pub kind: String,
}

/// Everything `serve` counts.
pub struct Metrics {
    registry: Registry,
    /// Requests to `/started` or `/finished`.
    pub received: Counter,
    /// Answers by status.
    pub responses: Family<StatusLabel, Counter>,
    /// Events delivered (or deliberately skipped by the filters).
    pub delivered: Counter,
    /// Failed delivery calls, by kind.
    pub failed: Family<KindLabel, Counter>,
    /// HTTP attempts the component made.
    pub attempts: Counter,
    /// Events waiting in the outbox (set when scraped).
    pub pending: Gauge,
    /// Dead letters in the outbox (set when scraped).
    pub dead_letters: Gauge,
    /// Age in seconds of the oldest pending event (set when scraped; 0 with none).
    pub oldest_pending_seconds: Gauge,
    /// Destinations whose circuit is open (set when scraped).
    pub open_circuits: Gauge,
    /// Seconds from acceptance to delivery (`--outbox`), or of the whole relayed call.
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("status_push");
        let received = Counter::default();
        registry.register(
            "events_received",
            "Requests to /started or /finished",
            received.clone(),
        );
        let responses = Family::<StatusLabel, Counter>::default();
        registry.register(
            "responses",
            "Answers to requests, by HTTP status",
            responses.clone(),
        );
        let delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Events delivered (2xx) or skipped by the filters",
            delivered.clone(),
        );
        let failed = Family::<KindLabel, Counter>::default();
        registry.register(
            "events_failed",
            "Failed delivery calls, by push-error kind",
            failed.clone(),
        );
        let attempts = Counter::default();
        registry.register(
            "delivery_attempts",
            "HTTP attempts made to the receiver",
            attempts.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "events_pending",
            "Events waiting in the outbox",
            pending.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letters",
            "Dead letters in the outbox",
            dead_letters.clone(),
        );
        let oldest_pending_seconds = Gauge::default();
        registry.register(
            "oldest_pending_seconds",
            "Age of the oldest event waiting in the outbox (0 with none): alert on it",
            oldest_pending_seconds.clone(),
        );
        let open_circuits = Gauge::default();
        registry.register(
            "open_circuits",
            "Destinations that are failing: their events wait for a probe to succeed",
            open_circuits.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register(
            "delivery_latency_seconds",
            "Seconds from acceptance to delivery",
            latency.clone(),
        );
        Metrics {
            registry,
            received,
            responses,
            delivered,
            failed,
            attempts,
            pending,
            dead_letters,
            oldest_pending_seconds,
            open_circuits,
            latency,
        }
    }
}

impl Metrics {
    /// Counts an answer with `status`.
    pub fn answered(&self, status: u16) {
        self.responses.get_or_create(&StatusLabel { status }).inc();
    }

    /// Counts a failed delivery call of `kind`.
    pub fn failed(&self, kind: &str) {
        self.failed
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
