//! HDR-style latency histogram: log-linear buckets over integer
//! microseconds, a fixed relative error set by the significant figures,
//! bounded memory, exact count/min/max/mean, mergeable.

use parking_lot::Mutex;
use pyo3::prelude::*;
use std::collections::BTreeMap;

use crate::errors::{ErrorKind, NativeError};

fn invalid(code: &'static str, msg: impl Into<String>) -> NativeError {
    NativeError::new(ErrorKind::Validation, code, msg)
}

/// The histogram core. Values are recorded in units of `lowest`.
#[derive(Clone, Debug)]
pub struct HistCore {
    lowest_ms: f64,
    highest_units: u64,
    sig: u32,
    half: u64, // sub-buckets per doubling
    bits: u32, // log2(2 * half)
    counts: Vec<u64>,
    count: u64,
    sum_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl HistCore {
    pub fn new(lowest_ms: f64, highest_ms: f64, sig: u32) -> Result<Self, NativeError> {
        if !(lowest_ms.is_finite() && lowest_ms > 0.0) {
            return Err(invalid("invalid_argument", "lowest_ms must be > 0"));
        }
        if !(highest_ms.is_finite() && highest_ms >= 2.0 * lowest_ms) {
            return Err(invalid(
                "invalid_argument",
                "highest_ms must be >= 2 * lowest_ms",
            ));
        }
        if !(1..=5).contains(&sig) {
            return Err(invalid(
                "invalid_argument",
                "significant_figures must be 1..=5",
            ));
        }
        // Enough sub-buckets that one bucket is narrower than 10^-sig of
        // its value: 2 * 10^sig rounded up to a power of two.
        let need = 2 * 10u64.pow(sig);
        let bits = 64 - (need - 1).leading_zeros();
        let half = 1u64 << (bits - 1);
        let highest_units = (highest_ms / lowest_ms).ceil() as u64;
        let mut h = Self {
            lowest_ms,
            highest_units,
            sig,
            half,
            bits,
            counts: Vec::new(),
            count: 0,
            sum_ms: 0.0,
            min_ms: f64::INFINITY,
            max_ms: 0.0,
        };
        h.counts = vec![0; h.index(highest_units) + 1];
        Ok(h)
    }

    #[inline]
    fn index(&self, v: u64) -> usize {
        if v < 2 * self.half {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb + 1 - self.bits;
        let sub = v >> shift; // in [half, 2*half)
        (u64::from(shift) * self.half + sub) as usize
    }

    /// Middle of the value range of bucket `i`, in ms.
    fn value_of(&self, i: usize) -> f64 {
        let i = i as u64;
        let (shift, sub) = if i < 2 * self.half {
            (0, i)
        } else {
            let shift = i / self.half - 1;
            (shift, i - shift * self.half)
        };
        let low = (sub << shift) as f64;
        let width = (1u64 << shift) as f64;
        (low + (width - 1.0) / 2.0) * self.lowest_ms
    }

    pub fn record(&mut self, value_ms: f64, n: u64) -> Result<(), NativeError> {
        if value_ms.is_nan() {
            return Err(invalid("invalid_value", "latency must be a number"));
        }
        if n == 0 {
            return Ok(());
        }
        let clamped = value_ms.clamp(0.0, self.highest_units as f64 * self.lowest_ms);
        let units = (clamped / self.lowest_ms).round() as u64;
        let i = self.index(units.min(self.highest_units));
        self.counts[i] += n;
        self.count += n;
        self.sum_ms += clamped * n as f64;
        self.min_ms = self.min_ms.min(clamped);
        self.max_ms = self.max_ms.max(clamped);
        Ok(())
    }

    pub fn percentile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let q = if q.is_nan() {
            100.0
        } else {
            q.clamp(0.0, 100.0)
        };
        let rank = ((q / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self.value_of(i).clamp(self.min_ms, self.max_ms);
            }
        }
        self.max_ms
    }

    pub fn merge(&mut self, other: &HistCore) -> Result<(), NativeError> {
        if other.lowest_ms != self.lowest_ms
            || other.highest_units != self.highest_units
            || other.sig != self.sig
        {
            return Err(invalid(
                "histogram_mismatch",
                "histograms must have the same range and precision to merge",
            ));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
        self.min_ms = self.min_ms.min(other.min_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
        Ok(())
    }

    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.count = 0;
        self.sum_ms = 0.0;
        self.min_ms = f64::INFINITY;
        self.max_ms = 0.0;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.min_ms
        }
    }

    pub fn max(&self) -> f64 {
        self.max_ms
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms / self.count as f64
        }
    }

    /// Bytes used by the bucket array.
    pub fn memory_bytes(&self) -> usize {
        self.counts.len() * std::mem::size_of::<u64>()
    }
}

/// Latency histogram in milliseconds. Thread-safe.
#[pyclass(frozen, module = "aimesh._native")]
pub struct LatencyHistogram {
    inner: Mutex<HistCore>,
}

#[pymethods]
impl LatencyHistogram {
    #[new]
    #[pyo3(signature = (lowest_ms=0.001, highest_ms=3_600_000.0, significant_figures=3))]
    fn new(lowest_ms: f64, highest_ms: f64, significant_figures: u32) -> PyResult<Self> {
        Ok(Self {
            inner: Mutex::new(HistCore::new(lowest_ms, highest_ms, significant_figures)?),
        })
    }

    #[pyo3(signature = (value_ms, count=1))]
    fn record(&self, value_ms: f64, count: u64) -> PyResult<()> {
        Ok(self.inner.lock().record(value_ms, count)?)
    }

    fn record_many(&self, values: Vec<f64>) -> PyResult<()> {
        let mut h = self.inner.lock();
        for v in values {
            h.record(v, 1)?;
        }
        Ok(())
    }

    fn percentile(&self, q: f64) -> f64 {
        self.inner.lock().percentile(q)
    }

    #[getter]
    fn count(&self) -> u64 {
        self.inner.lock().count()
    }
    #[getter]
    fn min(&self) -> f64 {
        self.inner.lock().min()
    }
    #[getter]
    fn max(&self) -> f64 {
        self.inner.lock().max()
    }
    #[getter]
    fn mean(&self) -> f64 {
        self.inner.lock().mean()
    }
    #[getter]
    fn p50(&self) -> f64 {
        self.percentile(50.0)
    }
    #[getter]
    fn p99(&self) -> f64 {
        self.percentile(99.0)
    }
    #[getter]
    fn p999(&self) -> f64 {
        self.percentile(99.9)
    }

    fn merge(&self, other: &LatencyHistogram) -> PyResult<()> {
        if std::ptr::eq(self, other) {
            let copy = self.inner.lock().clone();
            return Ok(self.inner.lock().merge(&copy)?);
        }
        let theirs = other.inner.lock().clone();
        Ok(self.inner.lock().merge(&theirs)?)
    }

    fn reset(&self) {
        self.inner.lock().reset()
    }

    fn snapshot(&self) -> BTreeMap<&'static str, f64> {
        let h = self.inner.lock();
        BTreeMap::from([
            ("count", h.count() as f64),
            ("min", h.min()),
            ("max", h.max()),
            ("mean", h.mean()),
            ("p50", h.percentile(50.0)),
            ("p99", h.percentile(99.0)),
            ("p999", h.percentile(99.9)),
        ])
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LatencyHistogram>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_within_relative_error() {
        let mut h = HistCore::new(0.001, 3_600_000.0, 3).unwrap();
        let mut values: Vec<f64> = (1..=20_000).map(|i| (i as f64).powf(1.7) / 100.0).collect();
        for v in &values {
            h.record(*v, 1).unwrap();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        for q in [1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            let want = exact(&values, q);
            let got = h.percentile(q);
            assert!(
                ((got - want) / want).abs() <= 1e-3 + 1e-9 || (got - want).abs() <= 0.001,
                "q{q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.count(), 20_000);
        assert_eq!(h.max(), values[values.len() - 1]);
        assert_eq!(h.min(), values[0]);
    }

    #[test]
    fn bounded_memory_and_merge() {
        let a = HistCore::new(0.001, 3_600_000.0, 3).unwrap();
        assert!(a.memory_bytes() < 256 * 1024, "{}", a.memory_bytes());
        let mut x = a.clone();
        let mut y = a.clone();
        let mut both = a.clone();
        for i in 0..1000 {
            x.record(i as f64, 1).unwrap();
            both.record(i as f64, 1).unwrap();
            y.record((i * 7) as f64, 1).unwrap();
            both.record((i * 7) as f64, 1).unwrap();
        }
        x.merge(&y).unwrap();
        assert_eq!(x.counts, both.counts);
        assert_eq!(x.count(), 2000);
        let other = HistCore::new(0.01, 1000.0, 2).unwrap();
        assert_eq!(x.merge(&other).unwrap_err().code, "histogram_mismatch");
    }

    #[test]
    fn clamps_and_rejects_nan() {
        let mut h = HistCore::new(0.001, 1000.0, 2).unwrap();
        h.record(-5.0, 1).unwrap();
        h.record(1e12, 1).unwrap();
        assert_eq!(h.min(), 0.0);
        assert_eq!(h.max(), 1000.0);
        assert!(h.record(f64::NAN, 1).is_err());
    }
}
