//! blake3 hashing, dedup keys and a TTL dedup table.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::as_pybytes;
use crate::errors::{ErrorKind, NativeError};

/// 32-byte key of (namespace, agent_id, dedup_context, payload). The first
/// three are length-prefixed and the payload comes last, so two different
/// tuples never hash the same bytes.
pub fn dedup_key_bytes(namespace: &str, agent_id: &str, context: &str, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for part in [
        namespace.as_bytes(),
        agent_id.as_bytes(),
        context.as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(payload);
    *h.finalize().as_bytes()
}

struct Entry<V> {
    value: V,
    expires: f64,
    seq: u64,
}

/// TTL map bounded by `max_entries`; the oldest insertion is evicted first.
pub struct DedupCore<V> {
    ttl: f64,
    max_entries: usize,
    map: HashMap<Vec<u8>, Entry<V>>,
    // Insertion order for eviction; stale (re-set or removed) rows are
    // skipped by comparing `seq`.
    order: VecDeque<(Vec<u8>, u64)>,
    seq: u64,
}

impl<V: Clone> DedupCore<V> {
    pub fn new(ttl: f64, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    fn live(&self, key: &[u8], now: f64) -> Option<&V> {
        self.map
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| &e.value)
    }

    fn store(&mut self, key: &[u8], value: V, now: f64) -> Option<V> {
        self.seq += 1;
        let seq = self.seq;
        let old = self.map.insert(
            key.to_vec(),
            Entry {
                value,
                expires: now + self.ttl,
                seq,
            },
        );
        self.order.push_back((key.to_vec(), seq));
        self.evict(now);
        old.map(|e| e.value)
    }

    fn evict(&mut self, now: f64) {
        while self.map.len() > self.max_entries || self.order.len() > 2 * self.max_entries + 16 {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            let current = self.map.get(&key).map(|e| (e.seq, e.expires));
            if let Some((s, expires)) = current {
                if s == seq && (self.map.len() > self.max_entries || expires <= now) {
                    self.map.remove(&key);
                }
            }
        }
    }

    /// `(true, value)` if new (stored), else `(false, existing)`.
    pub fn insert_if_absent(&mut self, key: &[u8], value: V, now: f64) -> (bool, V) {
        if let Some(v) = self.live(key, now) {
            return (false, v.clone());
        }
        self.store(key, value.clone(), now);
        (true, value)
    }

    pub fn get(&self, key: &[u8], now: f64) -> Option<V> {
        self.live(key, now).cloned()
    }

    /// Insert or replace, restarting the TTL; returns the value replaced.
    pub fn set(&mut self, key: &[u8], value: V, now: f64) -> Option<V> {
        self.store(key, value, now)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        self.map.remove(key).map(|e| e.value)
    }

    pub fn purge_expired(&mut self, now: f64) -> Vec<V> {
        let expired: Vec<Vec<u8>> = self
            .map
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let out = expired
            .iter()
            .filter_map(|k| self.map.remove(k).map(|e| e.value))
            .collect();
        let map = &self.map;
        self.order
            .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        out
    }

    pub fn len(&self, now: f64) -> usize {
        self.map.values().filter(|e| e.expires > now).count()
    }

    pub fn is_empty(&self, now: f64) -> bool {
        self.len(now) == 0
    }
}

#[pyfunction]
fn blake3_hex(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
    let data = as_pybytes(data)?;
    let bytes = data.as_bytes();
    Ok(py.detach(|| blake3::hash(bytes).to_hex().to_string()))
}

#[pyfunction]
#[pyo3(signature = (agent_id, payload, dedup_context="", namespace=""))]
fn dedup_key<'py>(
    py: Python<'py>,
    agent_id: &str,
    payload: &Bound<'py, PyAny>,
    dedup_context: &str,
    namespace: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let payload = as_pybytes(payload)?;
    let bytes = payload.as_bytes();
    let key = if bytes.len() > 64 * 1024 {
        py.detach(|| dedup_key_bytes(namespace, agent_id, dedup_context, bytes))
    } else {
        dedup_key_bytes(namespace, agent_id, dedup_context, bytes)
    };
    Ok(PyBytes::new(py, &key))
}

fn check_positive(name: &str, v: f64) -> Result<(), NativeError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(NativeError::new(
            ErrorKind::Validation,
            "invalid_argument",
            format!("{name} must be a finite number > 0"),
        ))
    }
}

/// TTL table of dedup keys -> Python objects. Thread-safe.
#[pyclass(frozen, module = "aimesh._native")]
pub struct DedupTable {
    // Arc so values can be handed out while the table keeps its own ref.
    inner: Mutex<DedupCore<Arc<Py<PyAny>>>>,
    epoch: Instant,
}

impl DedupTable {
    fn now(&self, now: Option<f64>) -> f64 {
        now.unwrap_or_else(|| self.epoch.elapsed().as_secs_f64())
    }
}

#[pymethods]
impl DedupTable {
    #[new]
    #[pyo3(signature = (ttl_s, max_entries=1_000_000))]
    fn new(ttl_s: f64, max_entries: usize) -> PyResult<Self> {
        check_positive("ttl_s", ttl_s)?;
        if max_entries == 0 {
            return Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_argument",
                "max_entries must be > 0",
            )
            .into());
        }
        Ok(Self {
            inner: Mutex::new(DedupCore::new(ttl_s, max_entries)),
            epoch: Instant::now(),
        })
    }

    #[pyo3(signature = (key, value, now=None))]
    fn insert_if_absent(
        &self,
        py: Python<'_>,
        key: &[u8],
        value: Py<PyAny>,
        now: Option<f64>,
    ) -> (bool, Py<PyAny>) {
        let now = self.now(now);
        let (new, v) = self
            .inner
            .lock()
            .insert_if_absent(key, Arc::new(value), now);
        (new, v.clone_ref(py))
    }

    #[pyo3(signature = (key, now=None))]
    fn get(&self, py: Python<'_>, key: &[u8], now: Option<f64>) -> Option<Py<PyAny>> {
        let now = self.now(now);
        let v = self.inner.lock().get(key, now);
        v.map(|v| v.clone_ref(py))
    }

    #[pyo3(signature = (key, value, now=None))]
    fn set(&self, key: &[u8], value: Py<PyAny>, now: Option<f64>) {
        let now = self.now(now);
        let old = self.inner.lock().set(key, Arc::new(value), now);
        drop(old); // released after the lock, with the GIL held
    }

    fn remove(&self, key: &[u8]) -> bool {
        let old = self.inner.lock().remove(key);
        old.is_some()
    }

    #[pyo3(signature = (now=None))]
    fn purge_expired(&self, now: Option<f64>) -> usize {
        let now = self.now(now);
        let gone = self.inner.lock().purge_expired(now);
        gone.len()
    }

    fn __len__(&self) -> usize {
        let now = self.now(None);
        self.inner.lock().len(now)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(blake3_hex, m)?)?;
    m.add_function(wrap_pyfunction!(dedup_key, m)?)?;
    m.add_class::<DedupTable>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part_and_never_by_concatenation() {
        let k = dedup_key_bytes("", "ab", "", b"c");
        assert_ne!(k, dedup_key_bytes("", "a", "", b"bc"));
        assert_ne!(k, dedup_key_bytes("", "ab", "c", b""));
        assert_ne!(k, dedup_key_bytes("x", "ab", "", b"c"));
        assert_eq!(k, dedup_key_bytes("", "ab", "", b"c"));
    }

    #[test]
    fn ttl_and_insert_if_absent() {
        let mut t = DedupCore::new(10.0, 100);
        assert_eq!(t.insert_if_absent(b"k", 1, 0.0), (true, 1));
        assert_eq!(t.insert_if_absent(b"k", 2, 5.0), (false, 1));
        assert_eq!(t.get(b"k", 9.9), Some(1));
        assert_eq!(t.get(b"k", 10.0), None);
        assert_eq!(t.insert_if_absent(b"k", 3, 10.0), (true, 3));
        assert_eq!(t.purge_expired(100.0), vec![3]);
        assert!(t.is_empty(100.0));
    }

    #[test]
    fn bounded_oldest_first() {
        let mut t = DedupCore::new(1000.0, 3);
        for i in 0..5u8 {
            t.insert_if_absent(&[i], i, 0.0);
        }
        assert_eq!(t.len(0.0), 3);
        assert_eq!(t.get(&[0], 0.0), None);
        assert_eq!(t.get(&[4], 0.0), Some(4));
        // Re-setting a key makes it the newest.
        t.set(&[2], 20, 0.0);
        t.insert_if_absent(&[9], 9, 0.0);
        assert_eq!(t.get(&[2], 0.0), Some(20));
        assert_eq!(t.get(&[3], 0.0), None);
    }
}
