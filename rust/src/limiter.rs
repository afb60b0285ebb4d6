//! Keyed rate limiters: token bucket and exact sliding window, each with an
//! optional global limit beside the per-key ones.
//!
//! A request is admitted only if its key's limiter *and* the global one
//! admit it; otherwise nothing is consumed. The key map is bounded: idle
//! keys (a full bucket, an empty window) are dropped, which cannot change
//! any later answer. If every tracked key is busy, a new key is refused
//! (with the time until the first key goes idle) rather than evicting a busy
//! key, because forgetting a busy key would let it start over and exceed
//! its limit.

use parking_lot::Mutex;
use pyo3::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::errors::{ErrorKind, NativeError};

fn invalid(msg: impl Into<String>) -> NativeError {
    NativeError::new(ErrorKind::Validation, "invalid_argument", msg)
}

fn positive(name: &str, v: f64) -> Result<f64, NativeError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(invalid(format!("{name} must be a finite number > 0")))
    }
}

/// One limiter state (a bucket or a window) for one key.
pub trait Limit: Sized {
    type Config: Copy;
    fn fresh(cfg: &Self::Config, now: f64) -> Self;
    /// Seconds until `n` would be admitted (0 = now).
    fn wait(&mut self, cfg: &Self::Config, n: f64, now: f64) -> f64;
    fn take(&mut self, cfg: &Self::Config, n: f64, now: f64);
    /// True when forgetting this state changes nothing.
    fn idle(&mut self, cfg: &Self::Config, now: f64) -> bool;
    /// Seconds until `idle` becomes true.
    fn until_idle(&mut self, cfg: &Self::Config, now: f64) -> f64;
    fn max_request(cfg: &Self::Config) -> f64;
}

#[derive(Debug, Clone, Copy)]
pub struct BucketConfig {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: f64,
}

impl Bucket {
    fn refill(&mut self, cfg: &BucketConfig, now: f64) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * cfg.rate).min(cfg.burst);
            self.last = now;
        }
    }
}

impl Limit for Bucket {
    type Config = BucketConfig;
    fn fresh(cfg: &BucketConfig, now: f64) -> Self {
        Bucket {
            tokens: cfg.burst,
            last: now,
        }
    }
    fn wait(&mut self, cfg: &BucketConfig, n: f64, now: f64) -> f64 {
        self.refill(cfg, now);
        if self.tokens >= n {
            0.0
        } else {
            (n - self.tokens) / cfg.rate
        }
    }
    fn take(&mut self, _cfg: &BucketConfig, n: f64, _now: f64) {
        self.tokens -= n;
    }
    fn idle(&mut self, cfg: &BucketConfig, now: f64) -> bool {
        self.refill(cfg, now);
        self.tokens >= cfg.burst
    }
    fn until_idle(&mut self, cfg: &BucketConfig, now: f64) -> f64 {
        self.refill(cfg, now);
        (cfg.burst - self.tokens).max(0.0) / cfg.rate
    }
    fn max_request(cfg: &BucketConfig) -> f64 {
        cfg.burst
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub limit: f64,
    pub window: f64,
}

/// Exact sliding window: the admitted (time, n) of the last window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    log: VecDeque<(f64, f64)>,
    sum: f64,
}

impl Window {
    fn prune(&mut self, cfg: &WindowConfig, now: f64) {
        while let Some(&(t, n)) = self.log.front() {
            if t + cfg.window <= now {
                self.log.pop_front();
                self.sum -= n;
            } else {
                break;
            }
        }
        if self.log.is_empty() {
            self.sum = 0.0; // no float drift on an empty window
        }
    }
}

impl Limit for Window {
    type Config = WindowConfig;
    fn fresh(_cfg: &WindowConfig, _now: f64) -> Self {
        Window::default()
    }
    fn wait(&mut self, cfg: &WindowConfig, n: f64, now: f64) -> f64 {
        self.prune(cfg, now);
        if self.sum + n <= cfg.limit {
            return 0.0;
        }
        // Wait until enough of the oldest entries leave the window.
        let mut freed = 0.0;
        for &(t, m) in &self.log {
            freed += m;
            if self.sum - freed + n <= cfg.limit {
                return (t + cfg.window - now).max(0.0);
            }
        }
        cfg.window
    }
    fn take(&mut self, _cfg: &WindowConfig, n: f64, now: f64) {
        self.log.push_back((now, n));
        self.sum += n;
    }
    fn idle(&mut self, cfg: &WindowConfig, now: f64) -> bool {
        self.prune(cfg, now);
        self.log.is_empty()
    }
    fn until_idle(&mut self, cfg: &WindowConfig, now: f64) -> f64 {
        self.prune(cfg, now);
        self.log
            .back()
            .map_or(0.0, |&(t, _)| (t + cfg.window - now).max(0.0))
    }
    fn max_request(cfg: &WindowConfig) -> f64 {
        cfg.limit
    }
}

/// Per-key limiters plus an optional global one, bounded by `max_keys`.
pub struct Keyed<L: Limit> {
    cfg: L::Config,
    global_cfg: Option<L::Config>,
    global: Option<L>,
    keys: HashMap<String, L>,
    max_keys: usize,
}

impl<L: Limit> Keyed<L> {
    pub fn new(cfg: L::Config, global_cfg: Option<L::Config>, max_keys: usize, now: f64) -> Self {
        Self {
            cfg,
            global_cfg,
            global: global_cfg.map(|g| L::fresh(&g, now)),
            keys: HashMap::new(),
            max_keys,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `Ok(None)` when admitted, `Ok(Some(retry_after_s))` when refused.
    pub fn try_acquire(&mut self, key: &str, n: f64, now: f64) -> Result<Option<f64>, NativeError> {
        if !(n.is_finite() && n > 0.0) {
            return Err(invalid("n must be > 0"));
        }
        let max = L::max_request(&self.cfg).min(
            self.global_cfg
                .as_ref()
                .map_or(f64::INFINITY, L::max_request),
        );
        if n > max {
            return Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_request",
                format!("a request of {n} can never be admitted (limit {max})"),
            ));
        }
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            let cfg = self.cfg;
            self.keys.retain(|_, l| !l.idle(&cfg, now));
            if self.keys.len() >= self.max_keys {
                let soonest = self
                    .keys
                    .values_mut()
                    .map(|l| l.until_idle(&cfg, now))
                    .fold(f64::INFINITY, f64::min);
                return Ok(Some(soonest.max(1e-3)));
            }
        }
        let cfg = self.cfg;
        let state = self
            .keys
            .entry(key.to_owned())
            .or_insert_with(|| L::fresh(&cfg, now));
        let mut wait = state.wait(&cfg, n, now);
        if let (Some(g), Some(gcfg)) = (self.global.as_mut(), self.global_cfg.as_ref()) {
            wait = wait.max(g.wait(gcfg, n, now));
        }
        if wait > 0.0 {
            return Ok(Some(wait));
        }
        state.take(&cfg, n, now);
        if let (Some(g), Some(gcfg)) = (self.global.as_mut(), self.global_cfg.as_ref()) {
            g.take(gcfg, n, now);
        }
        Ok(None)
    }
}

/// A locked [`Keyed`] with its own monotonic clock: what both Python
/// classes wrap.
struct Shared<L: Limit> {
    inner: Mutex<Keyed<L>>,
    epoch: Instant,
}

impl<L: Limit> Shared<L> {
    fn new(
        cfg: L::Config,
        global: Option<L::Config>,
        max_keys: usize,
    ) -> Result<Self, NativeError> {
        if max_keys == 0 {
            return Err(invalid("max_keys must be > 0"));
        }
        Ok(Self {
            inner: Mutex::new(Keyed::new(cfg, global, max_keys, 0.0)),
            epoch: Instant::now(),
        })
    }

    /// `(true, 0.0)` when admitted, else `(false, retry_after_s)`.
    fn acquire(&self, key: &str, n: i64, now: Option<f64>) -> Result<(bool, f64), NativeError> {
        let now = now.unwrap_or_else(|| self.epoch.elapsed().as_secs_f64());
        Ok(match self.inner.lock().try_acquire(key, n as f64, now)? {
            None => (true, 0.0),
            Some(wait) => (false, wait),
        })
    }

    fn len(&self) -> usize {
        self.inner.lock().len()
    }
}

/// Per-key token buckets with an optional global bucket. Thread-safe.
#[pyclass(frozen, module = "aimesh._native")]
pub struct TokenBucket {
    shared: Shared<Bucket>,
}

#[pymethods]
impl TokenBucket {
    #[new]
    #[pyo3(signature = (rate, burst, *, global_rate=None, global_burst=None, max_keys=100_000))]
    fn new(
        rate: f64,
        burst: f64,
        global_rate: Option<f64>,
        global_burst: Option<f64>,
        max_keys: usize,
    ) -> PyResult<Self> {
        let cfg = BucketConfig {
            rate: positive("rate", rate)?,
            burst: positive("burst", burst)?,
        };
        let global = match global_rate {
            None => None,
            Some(r) => {
                let r = positive("global_rate", r)?;
                Some(BucketConfig {
                    rate: r,
                    burst: positive("global_burst", global_burst.unwrap_or(r))?,
                })
            }
        };
        Ok(Self {
            shared: Shared::new(cfg, global, max_keys)?,
        })
    }

    #[pyo3(signature = (key, n=1, now=None))]
    fn try_acquire(&self, key: &str, n: i64, now: Option<f64>) -> PyResult<(bool, f64)> {
        Ok(self.shared.acquire(key, n, now)?)
    }

    fn __len__(&self) -> usize {
        self.shared.len()
    }
}

/// Per-key exact sliding windows with an optional global one. Thread-safe.
#[pyclass(frozen, module = "aimesh._native")]
pub struct SlidingWindow {
    shared: Shared<Window>,
}

#[pymethods]
impl SlidingWindow {
    #[new]
    #[pyo3(signature = (limit, window_s, *, global_limit=None, max_keys=100_000))]
    fn new(
        limit: i64,
        window_s: f64,
        global_limit: Option<i64>,
        max_keys: usize,
    ) -> PyResult<Self> {
        let window = positive("window_s", window_s)?;
        let cfg = WindowConfig {
            limit: positive("limit", limit as f64)?,
            window,
        };
        let global = match global_limit {
            None => None,
            Some(g) => Some(WindowConfig {
                limit: positive("global_limit", g as f64)?,
                window,
            }),
        };
        Ok(Self {
            shared: Shared::new(cfg, global, max_keys)?,
        })
    }

    #[pyo3(signature = (key, n=1, now=None))]
    fn try_acquire(&self, key: &str, n: i64, now: Option<f64>) -> PyResult<(bool, f64)> {
        Ok(self.shared.acquire(key, n, now)?)
    }

    fn __len__(&self) -> usize {
        self.shared.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TokenBucket>()?;
    m.add_class::<SlidingWindow>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: f64, burst: f64, max_keys: usize) -> Keyed<Bucket> {
        Keyed::new(BucketConfig { rate, burst }, None, max_keys, 0.0)
    }

    #[test]
    fn bucket_burst_then_rate() {
        let mut b = bucket(10.0, 5.0, 10);
        let admitted = (0..20)
            .filter(|_| b.try_acquire("k", 1.0, 0.0).unwrap().is_none())
            .count();
        assert_eq!(admitted, 5);
        let wait = b.try_acquire("k", 1.0, 0.0).unwrap().unwrap();
        assert!((wait - 0.1).abs() < 1e-9);
        assert!(b.try_acquire("k", 1.0, 0.1).unwrap().is_none());
        assert!(b.try_acquire("other", 1.0, 0.1).unwrap().is_none());
    }

    #[test]
    fn global_limit_consumes_all_or_nothing() {
        let mut b: Keyed<Bucket> = Keyed::new(
            BucketConfig {
                rate: 1.0,
                burst: 10.0,
            },
            Some(BucketConfig {
                rate: 1.0,
                burst: 3.0,
            }),
            10,
            0.0,
        );
        let admitted = (0..10)
            .filter(|i| b.try_acquire(&format!("k{i}"), 1.0, 0.0).unwrap().is_none())
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn never_more_than_rate_t_plus_burst_even_with_eviction() {
        let mut b = bucket(5.0, 3.0, 2);
        let mut admitted = 0;
        let mut t = 0.0;
        while t < 10.0 {
            for k in ["a", "b", "c"] {
                if b.try_acquire(k, 1.0, t).unwrap().is_none() && k == "a" {
                    admitted += 1;
                }
            }
            t += 0.01;
        }
        assert!(admitted as f64 <= 5.0 * 10.0 + 3.0);
        assert!(b.len() <= 2);
    }

    #[test]
    fn window_is_exact() {
        let mut w: Keyed<Window> = Keyed::new(
            WindowConfig {
                limit: 3.0,
                window: 1.0,
            },
            None,
            10,
            0.0,
        );
        for t in [0.0, 0.2, 0.4] {
            assert!(w.try_acquire("k", 1.0, t).unwrap().is_none());
        }
        let wait = w.try_acquire("k", 1.0, 0.5).unwrap().unwrap();
        assert!((wait - 0.5).abs() < 1e-9);
        assert!(w.try_acquire("k", 1.0, 0.999).unwrap().is_some());
        assert!(w.try_acquire("k", 1.0, 1.0).unwrap().is_none());
    }

    #[test]
    fn impossible_requests_are_errors() {
        let mut b = bucket(1.0, 2.0, 10);
        assert_eq!(
            b.try_acquire("k", 3.0, 0.0).unwrap_err().code,
            "invalid_request"
        );
        assert!(b.try_acquire("k", 0.0, 0.0).is_err());
    }
}
