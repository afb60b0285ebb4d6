//! Bounded priority queue: higher priority first, then earlier deadline (no
//! deadline last), then arrival order.

use parking_lot::Mutex;
use pyo3::prelude::*;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use crate::errors::{ErrorKind, NativeError};
use crate::validate::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    priority: u8,
    deadline: u64, // u64::MAX = none
    seq: u64,
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the greatest key pops first.
        (self.priority, Reverse(self.deadline), Reverse(self.seq)).cmp(&(
            other.priority,
            Reverse(other.deadline),
            Reverse(other.seq),
        ))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The queue core: items live in a map by sequence number; the heap holds
/// keys and may keep keys of removed items (lazy deletion), skipped on pop
/// and compacted when they pile up. `len` counts live items only.
pub struct PQueueCore<V> {
    capacity: usize,
    heap: BinaryHeap<Key>,
    items: HashMap<u64, (Key, V)>,
    next_seq: u64,
}

impl<V> PQueueCore<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            heap: BinaryHeap::new(),
            items: HashMap::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(
        &mut self,
        item: V,
        priority: u8,
        deadline_ms: Option<u64>,
    ) -> Result<u64, NativeError> {
        if priority > 100 {
            return Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_priority",
                "priority must be between 0 and 100",
            ));
        }
        if self.items.len() >= self.capacity {
            return Err(NativeError::new(
                ErrorKind::QueueFull,
                "queue_full",
                format!("the queue is at its capacity of {}", self.capacity),
            ));
        }
        self.next_seq += 1;
        let key = Key {
            priority,
            deadline: deadline_ms.unwrap_or(u64::MAX),
            seq: self.next_seq,
        };
        self.heap.push(key);
        self.items.insert(key.seq, (key, item));
        Ok(key.seq)
    }

    /// The best unexpired item, plus the expired ones skipped on the way.
    pub fn pop(&mut self, now_ms: u64, expired: &mut Vec<V>) -> Option<V> {
        while let Some(key) = self.heap.pop() {
            let Some((_, item)) = self.items.remove(&key.seq) else {
                continue; // removed earlier
            };
            if key.deadline != u64::MAX && key.deadline <= now_ms {
                expired.push(item);
                continue;
            }
            return Some(item);
        }
        None
    }

    pub fn remove(&mut self, seq: u64) -> Option<V> {
        let out = self.items.remove(&seq).map(|(_, v)| v);
        if self.heap.len() > 2 * self.items.len() + 64 {
            self.heap = self.items.values().map(|(k, _)| *k).collect();
        }
        out
    }
}

/// Bounded priority queue of Python objects. Thread-safe.
#[pyclass(frozen, module = "aimesh._native")]
pub struct PriorityQueue {
    inner: Mutex<PQueueCore<Py<PyAny>>>,
    capacity: usize,
}

#[pymethods]
impl PriorityQueue {
    #[new]
    fn new(capacity: usize) -> PyResult<Self> {
        if capacity == 0 {
            return Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_argument",
                "capacity must be > 0",
            )
            .into());
        }
        Ok(Self {
            inner: Mutex::new(PQueueCore::new(capacity)),
            capacity,
        })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn __len__(&self) -> usize {
        self.inner.lock().len()
    }

    #[pyo3(signature = (item, priority=50, deadline_ms=None))]
    fn push(&self, item: Py<PyAny>, priority: i64, deadline_ms: Option<u64>) -> PyResult<u64> {
        let priority = u8::try_from(priority).unwrap_or(u8::MAX);
        Ok(self.inner.lock().push(item, priority, deadline_ms)?)
    }

    #[pyo3(signature = (now_ms=None))]
    fn pop(&self, now_ms: Option<u64>) -> (Option<Py<PyAny>>, Vec<Py<PyAny>>) {
        let now = now_ms.unwrap_or_else(self::now_ms);
        let mut expired = Vec::new();
        let item = self.inner.lock().pop(now, &mut expired);
        (item, expired)
    }

    #[pyo3(signature = (max_items, now_ms=None))]
    fn pop_many(&self, max_items: usize, now_ms: Option<u64>) -> (Vec<Py<PyAny>>, Vec<Py<PyAny>>) {
        let now = now_ms.unwrap_or_else(self::now_ms);
        let mut expired = Vec::new();
        let mut items = Vec::new();
        let mut inner = self.inner.lock();
        while items.len() < max_items {
            match inner.pop(now, &mut expired) {
                Some(item) => items.push(item),
                None => break,
            }
        }
        (items, expired)
    }

    fn remove(&self, seq: u64) -> bool {
        let removed = self.inner.lock().remove(seq);
        removed.is_some()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PriorityQueue>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut PQueueCore<u32>, now: u64) -> (Vec<u32>, Vec<u32>) {
        let mut expired = Vec::new();
        let mut out = Vec::new();
        while let Some(v) = q.pop(now, &mut expired) {
            out.push(v);
        }
        (out, expired)
    }

    #[test]
    fn priority_then_deadline_then_fifo() {
        let mut q = PQueueCore::new(10);
        q.push(1, 50, None).unwrap();
        q.push(2, 90, None).unwrap();
        q.push(3, 50, Some(2000)).unwrap();
        q.push(4, 50, Some(1500)).unwrap();
        q.push(5, 50, None).unwrap();
        q.push(6, 0, None).unwrap();
        assert_eq!(drain(&mut q, 0).0, vec![2, 4, 3, 1, 5, 6]);
    }

    #[test]
    fn expired_are_skipped_and_reported() {
        let mut q = PQueueCore::new(10);
        q.push(1, 90, Some(100)).unwrap();
        q.push(2, 10, None).unwrap();
        let (items, expired) = drain(&mut q, 100);
        assert_eq!(items, vec![2]);
        assert_eq!(expired, vec![1]);
    }

    #[test]
    fn bounded_and_remove() {
        let mut q = PQueueCore::new(2);
        let a = q.push(1, 50, None).unwrap();
        q.push(2, 50, None).unwrap();
        assert_eq!(q.push(3, 50, None).unwrap_err().code, "queue_full");
        assert_eq!(q.remove(a), Some(1));
        assert_eq!(q.len(), 1);
        q.push(3, 50, None).unwrap();
        assert_eq!(drain(&mut q, 0).0, vec![2, 3]);
        assert_eq!(q.push(1, 101, None).unwrap_err().code, "invalid_priority");
    }
}
