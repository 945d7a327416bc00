//! [`Metrics`]: request counters, latency histograms and micro-batch sizes in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the batch-size histogram buckets.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batch: Histogram,
    reloads: u64,
}

/// Prometheus metrics of the server (thread-safe).
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                latency: BTreeMap::new(),
                batch: Histogram::new(BATCH_BUCKETS),
                reloads: 0,
            }),
        }
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request to `endpoint` (the route pattern) answered with `status` after `took`.
    pub fn observe_request(&self, endpoint: &str, status: u16, took: Duration) {
        let mut m = self.lock();
        *m.requests.entry((endpoint.to_owned(), status)).or_insert(0) += 1;
        m.latency
            .entry(endpoint.to_owned())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Records the number of queries answered by one scoring call.
    pub fn observe_batch(&self, size: usize) {
        self.lock().batch.observe(size as f64);
    }

    /// Counts a successful model reload.
    pub fn reloaded(&self) {
        self.lock().reloads += 1;
    }

    /// The Prometheus text exposition, with `model_id` as an info gauge.
    pub fn render(&self, model: &str, model_id: &str) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP seqrec_http_requests_total HTTP requests by endpoint and status.\n");
        out.push_str("# TYPE seqrec_http_requests_total counter\n");
        for ((e, s), n) in &m.requests {
            let _ = writeln!(
                out,
                "seqrec_http_requests_total{{endpoint=\"{}\",status=\"{s}\"}} {n}",
                escape(e)
            );
        }
        out.push_str(
            "# HELP seqrec_http_request_duration_seconds Time from request to response, by endpoint.\n",
        );
        out.push_str("# TYPE seqrec_http_request_duration_seconds histogram\n");
        for (e, h) in &m.latency {
            h.render(
                &mut out,
                "seqrec_http_request_duration_seconds",
                &format!("endpoint=\"{}\"", escape(e)),
            );
        }
        out.push_str("# HELP seqrec_batch_size Queries answered by one model scoring call.\n");
        out.push_str("# TYPE seqrec_batch_size histogram\n");
        m.batch.render(&mut out, "seqrec_batch_size", "");
        out.push_str("# HELP seqrec_model_reloads_total Successful model reloads.\n");
        out.push_str("# TYPE seqrec_model_reloads_total counter\n");
        let _ = writeln!(out, "seqrec_model_reloads_total {}", m.reloads);
        out.push_str("# HELP seqrec_model_info The loaded model (value 1).\n");
        out.push_str("# TYPE seqrec_model_info gauge\n");
        let _ = writeln!(
            out,
            "seqrec_model_info{{model=\"{}\",model_id=\"{}\"}} 1",
            escape(model),
            escape(model_id)
        );
        out
    }
}
