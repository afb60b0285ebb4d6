//! Cost-aware scoring router.
//!
//! score = w_cost*cost + w_load*load + w_latency*latency, lowest wins, with
//! load = current_load / capacity * 100. With `normalize` each factor is
//! divided by its maximum over the eligible candidates, so the weights are
//! the shares they say. Unhealthy and saturated endpoints are never chosen.
//!
//! Live figures: load is counted by `record_start`/`record_finish`; the P99
//! latency is recomputed from a ring of the last `LATENCY_WINDOW` samples
//! (old samples fall out, so the estimate follows the endpoint); the error
//! rate is an exponentially weighted moving average.

use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::HashMap;
use std::sync::Arc;

use crate::buffer::{as_pybytes, scan_frames, MessageBuffer, MessageRef, DEFAULT_MAX_FRAME_BYTES};
use crate::errors::{ErrorKind, NativeError};
use crate::validate::{self, Rejection, MAX_PAYLOAD_BYTES, REJECTION_CODES};

/// Latency samples kept per endpoint for the live P99.
const LATENCY_WINDOW: usize = 512;
/// The P99 is recomputed after this many new samples.
const RECOMPUTE_EVERY: u32 = 16;
/// Weight of one delivery in the error-rate average.
const ERROR_ALPHA: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    pub fn parse(s: &str) -> Result<Self, NativeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "healthy" => Ok(Health::Healthy),
            "degraded" => Ok(Health::Degraded),
            "unhealthy" => Ok(Health::Unhealthy),
            _ => Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_health_status",
                format!("health must be healthy, degraded or unhealthy, got {s:?}"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Configuration of an endpoint as registered.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub id: String,
    pub group: String,
    pub capacity: u32,
    pub cost: f64,
    pub latency_prior: f64,
    pub error_prior: f64,
    pub health: Health,
}

#[derive(Debug, Clone)]
struct Live {
    load: u32,
    health: Health,
    ring: Vec<f64>,
    ring_pos: usize,
    fresh: u32,
    p99: f64,
    error_rate: f64,
    requests: u64,
    failures: u64,
}

impl Live {
    fn new(cfg: &EndpointConfig, load: u32) -> Self {
        Live {
            load,
            health: cfg.health,
            ring: Vec::new(),
            ring_pos: 0,
            fresh: 0,
            p99: cfg.latency_prior,
            error_rate: cfg.error_prior,
            requests: 0,
            failures: 0,
        }
    }

    fn record_latency(&mut self, ms: f64) {
        if self.ring.len() < LATENCY_WINDOW {
            self.ring.push(ms);
        } else {
            self.ring[self.ring_pos] = ms;
            self.ring_pos = (self.ring_pos + 1) % LATENCY_WINDOW;
        }
        self.fresh += 1;
        // Recompute often while the window fills, then every few samples.
        if self.ring.len() < 64 || self.fresh >= RECOMPUTE_EVERY {
            self.fresh = 0;
            let mut v = self.ring.clone();
            let rank = ((v.len() as f64) * 0.99).ceil() as usize;
            let k = rank.clamp(1, v.len()) - 1;
            let (_, p, _) = v.select_nth_unstable_by(k, f64::total_cmp);
            self.p99 = *p;
        }
    }
}

pub struct Slot {
    cfg: EndpointConfig,
    live: Mutex<Live>,
}

/// A point-in-time copy of one endpoint.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub group: String,
    pub capacity: u32,
    pub load: u32,
    pub cost: f64,
    pub latency: f64,
    pub error_rate: f64,
    pub health: Health,
    pub requests: u64,
    pub failures: u64,
}

impl Slot {
    fn snapshot(&self) -> Snapshot {
        let l = self.live.lock();
        Snapshot {
            id: self.cfg.id.clone(),
            group: self.cfg.group.clone(),
            capacity: self.cfg.capacity,
            load: l.load,
            cost: self.cfg.cost,
            latency: l.p99,
            error_rate: l.error_rate,
            health: l.health,
            requests: l.requests,
            failures: l.failures,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub cost: f64,
    pub load: f64,
    pub latency: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Weights {
    pub cost: f64,
    pub load: f64,
    pub latency: f64,
    pub normalize: bool,
}

/// One candidate's raw factors.
#[derive(Debug, Clone, Copy)]
struct Factors {
    cost: f64,
    load_pct: f64,
    latency: f64,
}

fn load_pct(load: u32, capacity: u32) -> f64 {
    if capacity == 0 {
        100.0
    } else {
        f64::from(load) / f64::from(capacity) * 100.0
    }
}

#[inline]
fn part(w: f64, x: f64, max: f64, normalize: bool) -> f64 {
    if !normalize {
        w * x
    } else if max > 0.0 {
        w * (x / max)
    } else {
        0.0
    }
}

#[inline]
fn score(w: &Weights, f: Factors, max: Factors) -> Score {
    let cost = part(w.cost, f.cost, max.cost, w.normalize);
    let load = part(w.load, f.load_pct, max.load_pct, w.normalize);
    let latency = part(w.latency, f.latency, max.latency, w.normalize);
    Score {
        cost,
        load,
        latency,
        total: cost + load + latency,
    }
}

fn maxima(fs: impl Iterator<Item = Factors>) -> Factors {
    fs.fold(
        Factors {
            cost: 0.0,
            load_pct: 0.0,
            latency: 0.0,
        },
        |m, f| Factors {
            cost: m.cost.max(f.cost),
            load_pct: m.load_pct.max(f.load_pct),
            latency: m.latency.max(f.latency),
        },
    )
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub target: String,
    pub score: Score,
    pub fallbacks: Vec<(String, Score)>,
    pub reason: String,
    pub group: Option<String>,
    pub candidates: usize,
}

#[derive(Default)]
struct Table {
    slots: Vec<Arc<Slot>>,
    by_id: HashMap<String, usize>,
}

impl Table {
    fn group_members<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Arc<Slot>> + 'a {
        self.slots.iter().filter(move |s| s.cfg.group == group)
    }
}

/// The router core (no Python types).
pub struct RouterCore {
    weights: Weights,
    table: RwLock<Table>,
}

/// The result of a batch: one endpoint index (or -1) and one reason per
/// message, the endpoint table, and the rejection counts.
pub struct BatchOutcome {
    pub indices: Vec<i32>,
    pub reasons: Vec<u8>,
    pub endpoint_ids: Vec<String>,
    pub routed: usize,
}

impl RouterCore {
    pub fn new(weights: Weights) -> Result<Self, NativeError> {
        for (name, w) in [
            ("w_cost", weights.cost),
            ("w_load", weights.load),
            ("w_latency", weights.latency),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(NativeError::new(
                    ErrorKind::Validation,
                    "invalid_weight",
                    format!("{name} must be a finite number >= 0"),
                ));
            }
        }
        Ok(Self {
            weights,
            table: RwLock::new(Table::default()),
        })
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// Add or replace. A replaced endpoint keeps its live load (deliveries
    /// in flight still finish against it); its measurements restart from
    /// the new priors.
    pub fn upsert(&self, cfg: EndpointConfig, current_load: u32) -> Result<(), NativeError> {
        for (name, v) in [
            ("cost_per_1k_tokens", cfg.cost),
            ("latency_p99_ms", cfg.latency_prior),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(NativeError::new(
                    ErrorKind::Validation,
                    "invalid_endpoint",
                    format!("{name} must be a finite number >= 0"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&cfg.error_prior) {
            return Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_endpoint",
                "error_rate must be between 0 and 1",
            ));
        }
        let mut t = self.table.write();
        let load = match t.by_id.get(&cfg.id) {
            Some(&i) => t.slots[i].live.lock().load.max(current_load),
            None => current_load,
        };
        let slot = Arc::new(Slot {
            live: Mutex::new(Live::new(&cfg, load)),
            cfg,
        });
        match t.by_id.get(&slot.cfg.id) {
            Some(&i) => t.slots[i] = slot,
            None => {
                let at = t.slots.len();
                t.by_id.insert(slot.cfg.id.clone(), at);
                t.slots.push(slot);
            }
        }
        Ok(())
    }

    pub fn remove(&self, id: &str) -> bool {
        let mut t = self.table.write();
        let Some(i) = t.by_id.remove(id) else {
            return false;
        };
        t.slots.remove(i);
        let Table { slots, by_id } = &mut *t;
        for (j, s) in slots.iter().enumerate().skip(i) {
            by_id.insert(s.cfg.id.clone(), j);
        }
        true
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        let t = self.table.read();
        t.by_id.get(id).map(|&i| t.slots[i].clone())
    }

    pub fn set_health(&self, id: &str, health: Health) -> Result<(), NativeError> {
        let slot = self.slot(id).ok_or_else(|| unknown_endpoint(id))?;
        slot.live.lock().health = health;
        Ok(())
    }

    pub fn snapshot(&self, id: &str) -> Option<Snapshot> {
        self.slot(id).map(|s| s.snapshot())
    }

    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.table
            .read()
            .slots
            .iter()
            .map(|s| s.snapshot())
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let t = self.table.read();
        let mut g: Vec<String> = t
            .slots
            .iter()
            .filter(|s| !s.cfg.group.is_empty())
            .map(|s| s.cfg.group.clone())
            .collect();
        g.sort();
        g.dedup();
        g
    }

    pub fn record_start(&self, id: &str) -> Result<(), NativeError> {
        let slot = self.slot(id).ok_or_else(|| unknown_endpoint(id))?;
        slot.live.lock().load += 1;
        Ok(())
    }

    pub fn record_finish(
        &self,
        id: &str,
        latency_ms: f64,
        success: bool,
    ) -> Result<(), NativeError> {
        // An endpoint removed mid-delivery is fine: nothing to update.
        let Some(slot) = self.slot(id) else {
            return Ok(());
        };
        let mut l = slot.live.lock();
        l.load = l.load.saturating_sub(1);
        l.requests += 1;
        if !success {
            l.failures += 1;
        }
        let x = if success { 0.0 } else { 1.0 };
        l.error_rate += ERROR_ALPHA * (x - l.error_rate);
        if latency_ms.is_finite() && latency_ms >= 0.0 {
            l.record_latency(latency_ms);
        }
        Ok(())
    }

    /// Route one message within `group` (or across all endpoints).
    pub fn route(&self, group: Option<&str>, exclude: &[String]) -> Result<Decision, NativeError> {
        let t = self.table.read();
        let members: Vec<Snapshot> = match group {
            Some(g) => t.group_members(g).map(|s| s.snapshot()).collect(),
            None => t.slots.iter().map(|s| s.snapshot()).collect(),
        };
        drop(t);
        if members.is_empty() {
            return Err(match group {
                Some(g) => NativeError::new(
                    ErrorKind::NotFound,
                    "unknown_group",
                    format!("no endpoints serve route group {g:?}"),
                ),
                None => NativeError::new(
                    ErrorKind::Routing,
                    "no_endpoint_available",
                    "no endpoints are registered",
                ),
            });
        }
        let (mut unhealthy, mut saturated, mut excluded) = (0, 0, 0);
        let eligible: Vec<&Snapshot> = members
            .iter()
            .filter(|s| {
                if exclude.contains(&s.id) {
                    excluded += 1;
                    false
                } else if s.health == Health::Unhealthy {
                    unhealthy += 1;
                    false
                } else if s.load >= s.capacity {
                    saturated += 1;
                    false
                } else {
                    true
                }
            })
            .collect();
        if eligible.is_empty() {
            return Err(NativeError::new(
                ErrorKind::Routing,
                "no_endpoint_available",
                format!(
                    "no eligible endpoint among {}: {unhealthy} unhealthy, {saturated} saturated, {excluded} with an open circuit",
                    members.len()
                ),
            ));
        }
        let factors: Vec<Factors> = eligible
            .iter()
            .map(|s| Factors {
                cost: s.cost,
                load_pct: load_pct(s.load, s.capacity),
                latency: s.latency,
            })
            .collect();
        let max = maxima(factors.iter().copied());
        let mut scored: Vec<(&Snapshot, Score)> = eligible
            .iter()
            .zip(&factors)
            .map(|(s, f)| (*s, score(&self.weights, *f, max)))
            .collect();
        scored.sort_by(|a, b| {
            a.1.total
                .total_cmp(&b.1.total)
                .then(a.0.cost.total_cmp(&b.0.cost))
                .then_with(|| a.0.id.cmp(&b.0.id))
        });
        let (best, s) = scored[0];
        let scope = match group {
            Some(g) => format!(" in group {g:?}"),
            None => String::new(),
        };
        let reason = format!(
            "lowest score {:.4} of {} eligible{} (cost {:.4}, load {:.4}, latency {:.4}; {} unhealthy, {} saturated skipped)",
            s.total,
            scored.len(),
            scope,
            s.cost,
            s.load,
            s.latency,
            unhealthy,
            saturated
        );
        Ok(Decision {
            target: best.id.clone(),
            score: s,
            fallbacks: scored[1..]
                .iter()
                .map(|(e, sc)| (e.id.clone(), *sc))
                .collect(),
            reason,
            group: group.map(str::to_owned),
            candidates: scored.len(),
        })
    }

    /// Decode, validate and route every frame of `data` (see the module
    /// docs of `route_batch` in `_native.pyi`).
    pub fn route_batch(
        &self,
        data: &[u8],
        now_ms: u64,
        commit_load: bool,
        max_frame: usize,
    ) -> Result<BatchOutcome, NativeError> {
        let frames = scan_frames(data, max_frame)?;
        Ok(self.route_spans(data, &frames, now_ms, commit_load))
    }

    /// [`Self::route_batch`] over messages already located in `data`.
    pub fn route_spans(
        &self,
        data: &[u8],
        frames: &[(usize, usize)],
        now_ms: u64,
        commit_load: bool,
    ) -> BatchOutcome {
        let t = self.table.read();
        let snaps: Vec<Snapshot> = t.slots.iter().map(|s| s.snapshot()).collect();
        let slots: Vec<Arc<Slot>> = t.slots.clone();
        drop(t);

        // Per-group candidate lists, built once per batch. A handful of
        // groups: a linear scan beats hashing every message's group.
        let mut group_of: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, s) in snaps.iter().enumerate() {
            match group_of.iter_mut().find(|(g, _)| *g == s.group.as_str()) {
                Some((_, members)) => members.push(i),
                None => group_of.push((s.group.as_str(), vec![i])),
            }
        }
        let all: Vec<usize> = (0..snaps.len()).collect();
        let mut load: Vec<u32> = snaps.iter().map(|s| s.load).collect();
        let added_start = load.clone();
        let healthy: Vec<bool> = snaps
            .iter()
            .map(|s| s.health != Health::Unhealthy)
            .collect();

        let mut indices = Vec::with_capacity(frames.len());
        let mut reasons = Vec::with_capacity(frames.len());
        let mut routed = 0usize;
        for &(start, len) in frames {
            let outcome = (|| -> Result<usize, Rejection> {
                let m = MessageRef::decode(&data[start..start + len])
                    .map_err(|_| Rejection::InvalidProtobuf)?;
                m.validate(now_ms, MAX_PAYLOAD_BYTES)?;
                let cands: &[usize] = match m.metadata_get("model") {
                    Some(g) if !g.is_empty() => group_of
                        .iter()
                        .find(|(name, _)| *name == g)
                        .map(|(_, members)| members.as_slice())
                        .ok_or(Rejection::UnknownGroup)?,
                    _ => &all,
                };
                self.pick(cands, &snaps, &load, &healthy)
                    .ok_or(Rejection::NoEndpointAvailable)
            })();
            match outcome {
                Ok(i) => {
                    load[i] += 1;
                    indices.push(i as i32);
                    reasons.push(0);
                    routed += 1;
                }
                Err(r) => {
                    indices.push(-1);
                    reasons.push(r as u8);
                }
            }
        }
        if commit_load {
            for (i, slot) in slots.iter().enumerate() {
                let added = load[i] - added_start[i];
                if added > 0 {
                    slot.live.lock().load += added;
                }
            }
        }
        BatchOutcome {
            indices,
            reasons,
            endpoint_ids: snaps.into_iter().map(|s| s.id).collect(),
            routed,
        }
    }

    /// The best eligible candidate given the batch's virtual loads.
    #[inline]
    fn pick(
        &self,
        cands: &[usize],
        snaps: &[Snapshot],
        load: &[u32],
        healthy: &[bool],
    ) -> Option<usize> {
        let w = &self.weights;
        let eligible = |i: usize| healthy[i] && load[i] < snaps[i].capacity;
        let factors = |i: usize| Factors {
            cost: snaps[i].cost,
            load_pct: load_pct(load[i], snaps[i].capacity),
            latency: snaps[i].latency,
        };
        let max = if w.normalize {
            maxima(cands.iter().copied().filter(|&i| eligible(i)).map(factors))
        } else {
            maxima(std::iter::empty())
        };
        let mut best: Option<(usize, f64)> = None;
        for &i in cands {
            if !eligible(i) {
                continue;
            }
            let total = score(w, factors(i), max).total;
            let better = match best {
                None => true,
                Some((b, bt)) => {
                    total < bt
                        || (total == bt
                            && (snaps[i].cost, &snaps[i].id) < (snaps[b].cost, &snaps[b].id))
                }
            };
            if better {
                best = Some((i, total));
            }
        }
        best.map(|(i, _)| i)
    }
}

fn unknown_endpoint(id: &str) -> NativeError {
    NativeError::new(
        ErrorKind::NotFound,
        "endpoint_not_found",
        format!("no endpoint {id:?}"),
    )
}

// -- Python ------------------------------------------------------------------

/// Score breakdown: each part already multiplied by its weight.
#[pyclass(frozen, get_all, module = "aimesh._native")]
#[derive(Clone)]
pub struct RoutingScore {
    cost_score: f64,
    load_score: f64,
    latency_score: f64,
    total_score: f64,
}

impl From<Score> for RoutingScore {
    fn from(s: Score) -> Self {
        Self {
            cost_score: s.cost,
            load_score: s.load,
            latency_score: s.latency,
            total_score: s.total,
        }
    }
}

#[pymethods]
impl RoutingScore {
    fn __repr__(&self) -> String {
        format!(
            "RoutingScore(cost_score={:.4}, load_score={:.4}, latency_score={:.4}, total_score={:.4})",
            self.cost_score, self.load_score, self.latency_score, self.total_score
        )
    }
}

/// The chosen endpoint, why, and the fallback chain (best first).
#[pyclass(frozen, get_all, module = "aimesh._native")]
pub struct RoutingDecision {
    target_endpoint: String,
    score_breakdown: RoutingScore,
    fallback_endpoints: Vec<String>,
    fallback_scores: Vec<RoutingScore>,
    reason: String,
    group: Option<String>,
    candidates: usize,
}

#[pymethods]
impl RoutingDecision {
    fn __repr__(&self) -> String {
        format!(
            "RoutingDecision(target_endpoint={:?}, total_score={:.4}, fallback_endpoints={:?})",
            self.target_endpoint, self.score_breakdown.total_score, self.fallback_endpoints
        )
    }
}

/// Snapshot of one endpoint as the router sees it.
#[pyclass(frozen, get_all, module = "aimesh._native")]
pub struct EndpointState {
    endpoint_id: String,
    group: String,
    capacity: u32,
    current_load: u32,
    cost_per_1k_tokens: f64,
    latency_p99_ms: f64,
    error_rate: f64,
    health: &'static str,
    requests: u64,
    failures: u64,
}

impl From<Snapshot> for EndpointState {
    fn from(s: Snapshot) -> Self {
        Self {
            endpoint_id: s.id,
            group: s.group,
            capacity: s.capacity,
            current_load: s.load,
            cost_per_1k_tokens: s.cost,
            latency_p99_ms: s.latency,
            error_rate: s.error_rate,
            health: s.health.as_str(),
            requests: s.requests,
            failures: s.failures,
        }
    }
}

#[pymethods]
impl EndpointState {
    fn __repr__(&self) -> String {
        format!(
            "EndpointState(endpoint_id={:?}, health={:?}, load={}/{}, p99={:.2}ms)",
            self.endpoint_id, self.health, self.current_load, self.capacity, self.latency_p99_ms
        )
    }
}

/// Compact result of a batch.
#[pyclass(frozen, module = "aimesh._native")]
pub struct BatchRouteResult {
    #[pyo3(get)]
    count: usize,
    #[pyo3(get)]
    routed: usize,
    #[pyo3(get)]
    endpoint_ids: Vec<String>,
    indices: Py<PyBytes>,
    reasons: Py<PyBytes>,
    rejections: Vec<(String, usize)>,
}

#[pymethods]
impl BatchRouteResult {
    #[getter]
    fn indices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mv = pyo3::types::PyMemoryView::from(self.indices.bind(py).as_any())?;
        mv.call_method1("cast", ("i",))
    }

    #[getter]
    fn reasons<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mv = pyo3::types::PyMemoryView::from(self.reasons.bind(py).as_any())?;
        Ok(mv.into_any())
    }

    #[getter]
    fn rejections(&self) -> HashMap<String, usize> {
        self.rejections.iter().cloned().collect()
    }
}

/// Python face of [`RouterCore`].
#[pyclass(frozen, module = "aimesh._native")]
pub struct Router {
    core: RouterCore,
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (w_cost=0.4, w_load=0.3, w_latency=0.3, normalize=true))]
    fn new(w_cost: f64, w_load: f64, w_latency: f64, normalize: bool) -> PyResult<Self> {
        Ok(Self {
            core: RouterCore::new(Weights {
                cost: w_cost,
                load: w_load,
                latency: w_latency,
                normalize,
            })?,
        })
    }

    #[getter]
    fn weights(&self) -> (f64, f64, f64) {
        let w = self.core.weights();
        (w.cost, w.load, w.latency)
    }

    #[getter]
    fn normalize(&self) -> bool {
        self.core.weights().normalize
    }

    #[pyo3(signature = (endpoint_id, *, group="".to_owned(), capacity=100, current_load=0,
        cost_per_1k_tokens=0.0, latency_p99_ms=0.0, error_rate=0.0, health="healthy"))]
    #[allow(clippy::too_many_arguments)]
    fn upsert_endpoint(
        &self,
        endpoint_id: String,
        group: String,
        capacity: u32,
        current_load: u32,
        cost_per_1k_tokens: f64,
        latency_p99_ms: f64,
        error_rate: f64,
        health: &str,
    ) -> PyResult<()> {
        if endpoint_id.is_empty() {
            return Err(NativeError::new(
                ErrorKind::Validation,
                "invalid_endpoint_id",
                "endpoint_id must not be empty",
            )
            .into());
        }
        let cfg = EndpointConfig {
            id: endpoint_id,
            group,
            capacity,
            cost: cost_per_1k_tokens,
            latency_prior: latency_p99_ms,
            error_prior: error_rate,
            health: Health::parse(health)?,
        };
        Ok(self.core.upsert(cfg, current_load)?)
    }

    fn remove_endpoint(&self, endpoint_id: &str) -> bool {
        self.core.remove(endpoint_id)
    }

    fn set_health(&self, endpoint_id: &str, health: &str) -> PyResult<()> {
        Ok(self.core.set_health(endpoint_id, Health::parse(health)?)?)
    }

    fn endpoint(&self, endpoint_id: &str) -> Option<EndpointState> {
        self.core.snapshot(endpoint_id).map(EndpointState::from)
    }

    fn endpoints(&self) -> Vec<EndpointState> {
        self.core
            .snapshots()
            .into_iter()
            .map(EndpointState::from)
            .collect()
    }

    fn groups(&self) -> Vec<String> {
        self.core.groups()
    }

    #[pyo3(signature = (group=None, exclude=Vec::new()))]
    fn route(&self, group: Option<String>, exclude: Vec<String>) -> PyResult<RoutingDecision> {
        let group = group.filter(|g| !g.is_empty());
        let d = self.core.route(group.as_deref(), &exclude)?;
        Ok(RoutingDecision {
            target_endpoint: d.target,
            score_breakdown: d.score.into(),
            fallback_endpoints: d.fallbacks.iter().map(|(id, _)| id.clone()).collect(),
            fallback_scores: d.fallbacks.into_iter().map(|(_, s)| s.into()).collect(),
            reason: d.reason,
            group: d.group,
            candidates: d.candidates,
        })
    }

    #[pyo3(signature = (frames, now_ms=None, commit_load=false, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
    fn route_batch(
        &self,
        py: Python<'_>,
        frames: &Bound<'_, PyAny>,
        now_ms: Option<u64>,
        commit_load: bool,
        max_frame_bytes: usize,
    ) -> PyResult<BatchRouteResult> {
        let now = now_ms.unwrap_or_else(validate::now_ms);
        let out = if let Ok(buf) = frames.cast::<MessageBuffer>() {
            // Already decoded: route the located messages, no second scan.
            let buf = buf.get();
            let data = buf.source.bind(py).as_bytes();
            py.detach(|| self.core.route_spans(data, &buf.frames, now, commit_load))
        } else {
            let source = as_pybytes(frames)?;
            let data = source.as_bytes();
            py.detach(|| {
                self.core
                    .route_batch(data, now, commit_load, max_frame_bytes)
            })?
        };
        let mut counts = [0usize; REJECTION_CODES.len()];
        for &r in &out.reasons {
            counts[r as usize] += 1;
        }
        let rejections = counts
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (REJECTION_CODES[i].to_owned(), c))
            .collect();
        let index_bytes: Vec<u8> = out.indices.iter().flat_map(|i| i.to_ne_bytes()).collect();
        Ok(BatchRouteResult {
            count: out.indices.len(),
            routed: out.routed,
            endpoint_ids: out.endpoint_ids,
            indices: PyBytes::new(py, &index_bytes).unbind(),
            reasons: PyBytes::new(py, &out.reasons).unbind(),
            rejections,
        })
    }

    fn record_start(&self, endpoint_id: &str) -> PyResult<()> {
        Ok(self.core.record_start(endpoint_id)?)
    }

    fn record_finish(&self, endpoint_id: &str, latency_ms: f64, success: bool) -> PyResult<()> {
        Ok(self.core.record_finish(endpoint_id, latency_ms, success)?)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RoutingScore>()?;
    m.add_class::<RoutingDecision>()?;
    m.add_class::<EndpointState>()?;
    m.add_class::<BatchRouteResult>()?;
    m.add_class::<Router>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::frame_bytes;
    use crate::proto;
    use prost::Message;

    fn ep(id: &str, group: &str, capacity: u32, cost: f64, latency: f64) -> EndpointConfig {
        EndpointConfig {
            id: id.into(),
            group: group.into(),
            capacity,
            cost,
            latency_prior: latency,
            error_prior: 0.0,
            health: Health::Healthy,
        }
    }

    fn router(normalize: bool) -> RouterCore {
        RouterCore::new(Weights {
            cost: 0.4,
            load: 0.3,
            latency: 0.3,
            normalize,
        })
        .unwrap()
    }

    #[test]
    fn literal_formula_by_hand() {
        let r = router(false);
        r.upsert(ep("a", "", 100, 30.0, 500.0), 50).unwrap();
        r.upsert(ep("b", "", 100, 10.0, 800.0), 0).unwrap();
        let d = r.route(None, &[]).unwrap();
        // a: 0.4*30 + 0.3*50 + 0.3*500 = 12 + 15 + 150 = 177
        // b: 0.4*10 + 0.3*0 + 0.3*800 = 4 + 0 + 240 = 244
        assert_eq!(d.target, "a");
        assert!((d.score.total - 177.0).abs() < 1e-9);
        assert_eq!(d.fallbacks.len(), 1);
        assert!((d.fallbacks[0].1.total - 244.0).abs() < 1e-9);
    }

    #[test]
    fn normalized_parts_are_weight_shares() {
        let r = router(true);
        r.upsert(ep("a", "", 100, 30.0, 500.0), 50).unwrap();
        r.upsert(ep("b", "", 100, 10.0, 800.0), 0).unwrap();
        let d = r.route(None, &[]).unwrap();
        // a: 0.4*1 + 0.3*1 + 0.3*(500/800) = 0.8875 ; b: 0.4/3 + 0 + 0.3 = 0.4333
        assert_eq!(d.target, "b");
        assert!((d.score.total - (0.4 / 3.0 + 0.3)).abs() < 1e-9);
        assert!((d.fallbacks[0].1.total - 0.8875).abs() < 1e-9);
    }

    #[test]
    fn filters_groups_and_errors() {
        let r = router(true);
        r.upsert(ep("a", "g1", 10, 1.0, 1.0), 10).unwrap(); // saturated
        r.upsert(ep("b", "g1", 10, 2.0, 1.0), 0).unwrap();
        r.upsert(ep("c", "g2", 10, 0.1, 1.0), 0).unwrap();
        assert_eq!(r.route(Some("g1"), &[]).unwrap().target, "b");
        assert_eq!(r.route(None, &[]).unwrap().target, "c");
        r.set_health("b", Health::Unhealthy).unwrap();
        let e = r.route(Some("g1"), &[]).unwrap_err();
        assert_eq!(e.code, "no_endpoint_available");
        assert_eq!(
            r.route(Some("nope"), &[]).unwrap_err().code,
            "unknown_group"
        );
        assert_eq!(
            r.route(Some("g2"), &["c".into()]).unwrap_err().code,
            "no_endpoint_available"
        );
        assert!(r.remove("c"));
        assert!(!r.remove("c"));
        assert_eq!(r.groups(), vec!["g1"]);
    }

    #[test]
    fn live_load_latency_and_errors() {
        let r = router(true);
        r.upsert(ep("a", "", 2, 1.0, 100.0), 0).unwrap();
        r.record_start("a").unwrap();
        r.record_start("a").unwrap();
        assert!(r.route(None, &[]).is_err()); // saturated
        r.record_finish("a", 10.0, true).unwrap();
        r.record_finish("a", 20.0, false).unwrap();
        let s = r.snapshot("a").unwrap();
        assert_eq!(s.load, 0);
        assert_eq!(s.latency, 20.0);
        assert!((s.error_rate - ERROR_ALPHA).abs() < 1e-12);
        assert_eq!((s.requests, s.failures), (2, 1));
        // The P99 follows the recent window.
        for _ in 0..LATENCY_WINDOW {
            r.record_finish("a", 5.0, true).unwrap();
        }
        assert_eq!(r.snapshot("a").unwrap().latency, 5.0);
        r.record_finish("a", 1.0, true).unwrap(); // never below zero load
        assert_eq!(r.snapshot("a").unwrap().load, 0);
    }

    #[test]
    fn concurrent_start_finish_leaves_zero_load() {
        let r = Arc::new(router(true));
        r.upsert(ep("a", "", 1_000_000, 1.0, 1.0), 0).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        r.record_start("a").unwrap();
                        r.record_finish("a", 1.0, true).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = r.snapshot("a").unwrap();
        assert_eq!(s.load, 0);
        assert_eq!(s.requests, 80_000);
    }

    fn frames(msgs: &[proto::AiMessage]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| frame_bytes(&m.encode_to_vec()).unwrap())
            .collect()
    }

    fn msg(agent: &str, model: Option<&str>) -> proto::AiMessage {
        proto::AiMessage {
            agent_id: agent.into(),
            payload: b"hi".to_vec(),
            metadata: model
                .map(|m| [("model".to_string(), m.to_string())].into_iter().collect())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn batch_spreads_and_rejects() {
        let r = router(true);
        r.upsert(ep("a", "g", 2, 1.0, 1.0), 0).unwrap();
        r.upsert(ep("b", "g", 2, 2.0, 1.0), 0).unwrap();
        let mut batch = vec![msg("x", Some("g")); 5];
        batch.push(msg("BAD", None));
        batch.push(msg("x", Some("nope")));
        let out = r.route_batch(&frames(&batch), 0, false, 1 << 20).unwrap();
        let ids: Vec<i32> = out.indices.clone();
        assert_eq!(out.routed, 4);
        assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 2);
        assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
        assert_eq!(out.reasons[4], Rejection::NoEndpointAvailable as u8);
        assert_eq!(out.reasons[5], Rejection::InvalidAgentId as u8);
        assert_eq!(out.reasons[6], Rejection::UnknownGroup as u8);
        assert_eq!(r.snapshot("a").unwrap().load, 0); // not committed
        r.route_batch(&frames(&batch[..1]), 0, true, 1 << 20)
            .unwrap();
        assert_eq!(r.snapshot("a").unwrap().load, 1);
    }

    #[test]
    fn batch_of_one_agrees_with_route() {
        let r = router(true);
        r.upsert(ep("a", "", 10, 3.0, 50.0), 3).unwrap();
        r.upsert(ep("b", "", 10, 1.0, 90.0), 5).unwrap();
        r.upsert(ep("c", "", 10, 2.0, 10.0), 0).unwrap();
        let d = r.route(None, &[]).unwrap();
        let out = r
            .route_batch(&frames(&[msg("x", None)]), 0, false, 1 << 20)
            .unwrap();
        assert_eq!(out.endpoint_ids[out.indices[0] as usize], d.target);
    }
}
