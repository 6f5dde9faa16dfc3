//! Latency samples and how they are printed.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latency samples in microseconds.
pub struct Samples {
    name: String,
    histogram: Histogram<u64>,
}

impl Samples {
    pub fn new(name: impl Into<String>) -> Samples {
        Samples {
            name: name.into(),
            // 1 µs to 10 min, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.histogram.record(micros.min(600_000_000));
    }

    pub fn merge(&mut self, other: &Samples) {
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.histogram.value_at_quantile(p / 100.0) as f64 / 1000.0
    }

    /// One line: name, count, p50, p90, p99, max in milliseconds.
    pub fn line(&self) -> String {
        format!(
            "{:<58} n={:<5} p50={:>9.2} ms  p90={:>9.2} ms  p99={:>9.2} ms  max={:>9.2} ms",
            self.name,
            self.histogram.len(),
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.histogram.max() as f64 / 1000.0,
        )
    }
}
