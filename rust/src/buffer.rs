//! Length-prefixed protobuf frames and zero-copy message views.
//!
//! A frame is a 4-byte big-endian length then one protobuf message. The
//! decoder here walks the AIMessage wire format itself and borrows every
//! string and the payload from the source buffer: nothing is allocated per
//! message, and Python sees the payload as a memoryview of the original
//! `bytes`. Encoding goes through the prost types generated from the schema.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PySlice};
use std::collections::BTreeMap;

use crate::errors::{ErrorKind, NativeError};
use crate::proto;
use crate::validate::{self, MAX_PAYLOAD_BYTES};

/// Largest frame body accepted by default: the payload limit plus room for
/// the other fields.
pub const DEFAULT_MAX_FRAME_BYTES: usize = MAX_PAYLOAD_BYTES + 64 * 1024;

fn frame_error(code: &'static str, message: impl Into<String>) -> NativeError {
    NativeError::new(ErrorKind::Frame, code, message)
}

fn bad_protobuf(what: &str) -> NativeError {
    frame_error(
        "invalid_protobuf",
        format!("invalid AIMessage protobuf: {what}"),
    )
}

/// (body offset, body length) of every frame in `data`.
pub fn scan_frames(data: &[u8], max_frame: usize) -> Result<Vec<(usize, usize)>, NativeError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let header = data.get(pos..pos + 4).ok_or_else(|| {
            frame_error(
                "truncated_frame",
                format!("frame header at byte {pos} is cut short"),
            )
        })?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > max_frame {
            // Refuse on the header alone: the body is never read.
            return Err(frame_error(
                "frame_too_large",
                format!("frame at byte {pos} announces {len} bytes, the limit is {max_frame}"),
            ));
        }
        let start = pos + 4;
        if data.len() - start < len {
            return Err(frame_error(
                "truncated_frame",
                format!(
                    "frame at byte {pos} announces {len} bytes but only {} remain",
                    data.len() - start
                ),
            ));
        }
        out.push((start, len));
        pos = start + len;
    }
    Ok(out)
}

/// (body offset, body length) of every AIMessage inside a `MessageBatch`
/// body (its repeated field 1); other fields are skipped.
pub fn scan_batch(data: &[u8], max_frame: usize) -> Result<Vec<(usize, usize)>, NativeError> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while !r.done() {
        let (field, wire) = r.key()?;
        if field != 1 {
            r.skip(wire)?;
            continue;
        }
        expect(wire, LEN, "messages")?;
        let body = r.bytes()?;
        if body.len() > max_frame {
            return Err(frame_error(
                "frame_too_large",
                format!(
                    "batch entry {} holds {} bytes, the limit is {max_frame}",
                    out.len(),
                    body.len()
                ),
            ));
        }
        out.push((r.pos - body.len(), body.len()));
    }
    Ok(out)
}

// -- protobuf wire reading -----------------------------------------------------

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, NativeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad_protobuf("truncated varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(bad_protobuf("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(bad_protobuf("varint longer than 10 bytes"))
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], NativeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| bad_protobuf("length overflow"))?;
        if self.buf.len() - self.pos < len {
            return Err(bad_protobuf("length-delimited field runs past the end"));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    #[inline]
    fn str(&mut self) -> Result<&'a str, NativeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| bad_protobuf("string is not UTF-8"))
    }

    #[inline]
    fn key(&mut self) -> Result<(u32, u8), NativeError> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(bad_protobuf("invalid field number"));
        }
        Ok((field as u32, (key & 7) as u8))
    }

    fn skip(&mut self, wire: u8) -> Result<(), NativeError> {
        let n = match wire {
            VARINT => {
                self.varint()?;
                return Ok(());
            }
            I64 => 8,
            LEN => {
                self.bytes()?;
                return Ok(());
            }
            I32 => 4,
            _ => return Err(bad_protobuf("unsupported wire type")),
        };
        if self.buf.len() - self.pos < n {
            return Err(bad_protobuf("fixed-size field runs past the end"));
        }
        self.pos += n;
        Ok(())
    }
}

fn expect(wire: u8, want: u8, field: &str) -> Result<(), NativeError> {
    if wire == want {
        Ok(())
    } else {
        Err(bad_protobuf(&format!(
            "field {field} has the wrong wire type"
        )))
    }
}

/// Decode one map<string,string> entry.
fn map_entry(raw: &[u8]) -> Result<(&str, &str), NativeError> {
    let mut r = Reader::new(raw);
    let (mut k, mut v) = ("", "");
    while !r.done() {
        match r.key()? {
            (1, w) => {
                expect(w, LEN, "metadata.key")?;
                k = r.str()?;
            }
            (2, w) => {
                expect(w, LEN, "metadata.value")?;
                v = r.str()?;
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

/// A decoded AIMessage borrowing every string and the payload from its
/// source buffer. Repeated fields are read on demand from `raw`.
#[derive(Debug, Clone, Default)]
pub struct MessageRef<'a> {
    pub agent_id: &'a str,
    pub message_id: &'a str,
    pub payload: &'a [u8],
    pub estimated_cost_tokens: Option<u64>,
    pub budget_tokens: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub task_graph_id: &'a str,
    pub priority: Option<u32>,
    pub dedup_context: &'a str,
    pub trace_id: &'a str,
    pub timestamp: u64,
    raw: &'a [u8],
    has_repeated: bool,
    // metadata["model"] (the route group), kept at decode time because the
    // batch path reads it for every message.
    model: Option<&'a str>,
}

impl<'a> MessageRef<'a> {
    /// Decode and check the whole message (including map entries and
    /// UTF-8), so the on-demand iterators below cannot fail later.
    pub fn decode(raw: &'a [u8]) -> Result<Self, NativeError> {
        let mut m = MessageRef {
            raw,
            ..Default::default()
        };
        let mut r = Reader::new(raw);
        while !r.done() {
            let (field, wire) = r.key()?;
            match field {
                1 => {
                    expect(wire, LEN, "agent_id")?;
                    m.agent_id = r.str()?;
                }
                2 => {
                    expect(wire, LEN, "message_id")?;
                    m.message_id = r.str()?;
                }
                3 => {
                    expect(wire, LEN, "payload")?;
                    m.payload = r.bytes()?;
                }
                4 => {
                    expect(wire, VARINT, "estimated_cost_tokens")?;
                    m.estimated_cost_tokens = Some(r.varint()?);
                }
                5 => {
                    expect(wire, VARINT, "budget_tokens")?;
                    m.budget_tokens = Some(r.varint()?);
                }
                6 => {
                    expect(wire, VARINT, "deadline_ms")?;
                    m.deadline_ms = Some(r.varint()?);
                }
                7 => {
                    expect(wire, LEN, "task_graph_id")?;
                    m.task_graph_id = r.str()?;
                }
                8 => {
                    expect(wire, LEN, "dependencies")?;
                    r.str()?;
                    m.has_repeated = true;
                }
                9 => {
                    expect(wire, VARINT, "priority")?;
                    // uint32 semantics: protobuf truncates wider varints.
                    m.priority = Some(r.varint()? as u32);
                }
                10 => {
                    expect(wire, LEN, "dedup_context")?;
                    m.dedup_context = r.str()?;
                }
                11 => {
                    expect(wire, LEN, "trace_id")?;
                    m.trace_id = r.str()?;
                }
                12 => {
                    expect(wire, LEN, "metadata")?;
                    let (k, v) = map_entry(r.bytes()?)?;
                    if k == "model" {
                        m.model = Some(v);
                    }
                    m.has_repeated = true;
                }
                13 => {
                    expect(wire, VARINT, "timestamp")?;
                    m.timestamp = r.varint()?;
                }
                _ => r.skip(wire)?,
            }
        }
        Ok(m)
    }

    /// Walk the repeated fields (8 = dependencies, 12 = metadata entries).
    fn each_repeated(&self, mut f: impl FnMut(u32, &'a [u8])) {
        if !self.has_repeated {
            return;
        }
        let mut r = Reader::new(self.raw);
        // `decode` already checked the whole message, so errors cannot occur.
        while let Ok((field, wire)) = r.key() {
            if field == 8 || field == 12 {
                if let Ok(b) = r.bytes() {
                    f(field, b);
                }
            } else if r.skip(wire).is_err() {
                break;
            }
            if r.done() {
                break;
            }
        }
    }

    pub fn dependencies(&self) -> Vec<&'a str> {
        let mut out = Vec::new();
        self.each_repeated(|field, b| {
            if field == 8 {
                out.push(std::str::from_utf8(b).unwrap_or_default());
            }
        });
        out
    }

    /// Metadata in key order; a repeated key keeps its last value.
    pub fn metadata(&self) -> BTreeMap<&'a str, &'a str> {
        let mut out = BTreeMap::new();
        self.each_repeated(|field, b| {
            if field == 12 {
                if let Ok((k, v)) = map_entry(b) {
                    out.insert(k, v);
                }
            }
        });
        out
    }

    /// One metadata value (the last one for a repeated key), without
    /// building the map: the batch path reads `model` this way.
    #[inline]
    pub fn metadata_get(&self, key: &str) -> Option<&'a str> {
        if key == "model" {
            return self.model;
        }
        let mut found = None;
        self.each_repeated(|field, b| {
            if field == 12 {
                if let Ok((k, v)) = map_entry(b) {
                    if k == key {
                        found = Some(v);
                    }
                }
            }
        });
        found
    }

    /// Apply the protocol rules.
    pub fn validate(&self, now_ms: u64, max_payload: usize) -> Result<(), validate::Rejection> {
        validate::validate(
            self.agent_id,
            self.payload.len(),
            self.budget_tokens,
            self.deadline_ms,
            self.priority,
            now_ms,
            max_payload,
        )
    }

    /// The owned prost message (for encoding).
    pub fn to_owned_message(&self) -> proto::AiMessage {
        proto::AiMessage {
            agent_id: self.agent_id.to_owned(),
            message_id: self.message_id.to_owned(),
            payload: self.payload.to_vec(),
            estimated_cost_tokens: self.estimated_cost_tokens,
            budget_tokens: self.budget_tokens,
            deadline_ms: self.deadline_ms,
            task_graph_id: self.task_graph_id.to_owned(),
            dependencies: self.dependencies().into_iter().map(str::to_owned).collect(),
            priority: self.priority,
            dedup_context: self.dedup_context.to_owned(),
            trace_id: self.trace_id.to_owned(),
            metadata: self
                .metadata()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            timestamp: self.timestamp,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_len(out, field, s.as_bytes());
    }
}

fn put_opt(out: &mut Vec<u8>, field: u32, v: Option<u64>) {
    if let Some(v) = v {
        put_key(out, field, VARINT);
        put_varint(out, v);
    }
}

/// Canonical AIMessage encoding: fields in number order, proto3 defaults
/// omitted, present optionals written even when 0, map entries sorted by
/// key and always written with both key and value. This is what the
/// official deterministic serializers (C++/upb, Go) produce; prost alone
/// would drop empty map keys and values.
pub fn encode_canonical(m: &proto::AiMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.payload.len() + 64);
    put_str(&mut out, 1, &m.agent_id);
    put_str(&mut out, 2, &m.message_id);
    if !m.payload.is_empty() {
        put_len(&mut out, 3, &m.payload);
    }
    put_opt(&mut out, 4, m.estimated_cost_tokens);
    put_opt(&mut out, 5, m.budget_tokens);
    put_opt(&mut out, 6, m.deadline_ms);
    put_str(&mut out, 7, &m.task_graph_id);
    for d in &m.dependencies {
        put_len(&mut out, 8, d.as_bytes());
    }
    put_opt(&mut out, 9, m.priority.map(u64::from));
    put_str(&mut out, 10, &m.dedup_context);
    put_str(&mut out, 11, &m.trace_id);
    let mut entry = Vec::new();
    for (k, v) in &m.metadata {
        entry.clear();
        put_len(&mut entry, 1, k.as_bytes());
        put_len(&mut entry, 2, v.as_bytes());
        put_len(&mut out, 12, &entry);
    }
    if m.timestamp != 0 {
        put_key(&mut out, 13, VARINT);
        put_varint(&mut out, m.timestamp);
    }
    out
}

/// Encode a prost message with its 4-byte big-endian length prefix.
pub fn frame_bytes(body: &[u8]) -> Result<Vec<u8>, NativeError> {
    let len = u32::try_from(body.len())
        .map_err(|_| frame_error("frame_too_large", "a frame body must be under 4 GiB"))?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

// -- Python ------------------------------------------------------------------

/// A `bytes` object holding `obj`'s data: `bytes` itself without a copy,
/// bytearray/memoryview copied once (Python code could mutate them).
pub fn as_pybytes<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    if obj.is_instance_of::<PyByteArray>() || obj.is_instance_of::<PyMemoryView>() {
        let copied = obj.py().get_type::<PyBytes>().call1((obj,))?;
        return Ok(copied.cast_into::<PyBytes>()?);
    }
    Err(PyTypeError::new_err(format!(
        "expected bytes, bytearray or memoryview, got {}",
        obj.get_type().name()?
    )))
}

/// A zero-copy memoryview of `source[start..start+len]`.
fn slice_view<'py>(
    source: &Bound<'py, PyBytes>,
    start: usize,
    len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = source.py();
    let whole = PyMemoryView::from(source.as_any())?;
    let slice = PySlice::new(py, start as isize, (start + len) as isize, 1);
    whole.get_item(slice)
}

/// One decoded AIMessage; `payload` is a memoryview onto the source buffer.
#[pyclass(frozen, module = "aimesh._native")]
pub struct MessageView {
    source: Py<PyBytes>,
    start: usize,
    len: usize,
}

impl MessageView {
    fn with<R>(&self, py: Python<'_>, f: impl FnOnce(&MessageRef<'_>) -> R) -> R {
        let bytes = self.source.bind(py).as_bytes();
        let raw = &bytes[self.start..self.start + self.len];
        // Checked when the view was made; the source is immutable bytes.
        let m = MessageRef::decode(raw).unwrap_or_default();
        f(&m)
    }
}

#[pymethods]
impl MessageView {
    #[getter]
    fn agent_id(&self, py: Python<'_>) -> String {
        self.with(py, |m| m.agent_id.to_owned())
    }
    #[getter]
    fn message_id(&self, py: Python<'_>) -> String {
        self.with(py, |m| m.message_id.to_owned())
    }
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bytes = self.source.bind(py);
        let (off, len) = self.with(py, |m| {
            // An absent payload is a static empty slice outside the buffer.
            if m.payload.is_empty() {
                return (0, 0);
            }
            let base = bytes.as_bytes().as_ptr() as usize;
            (m.payload.as_ptr() as usize - base, m.payload.len())
        });
        slice_view(bytes, off, len)
    }
    #[getter]
    fn payload_len(&self, py: Python<'_>) -> usize {
        self.with(py, |m| m.payload.len())
    }
    #[getter]
    fn estimated_cost_tokens(&self, py: Python<'_>) -> Option<u64> {
        self.with(py, |m| m.estimated_cost_tokens)
    }
    #[getter]
    fn budget_tokens(&self, py: Python<'_>) -> Option<u64> {
        self.with(py, |m| m.budget_tokens)
    }
    #[getter]
    fn deadline_ms(&self, py: Python<'_>) -> Option<u64> {
        self.with(py, |m| m.deadline_ms)
    }
    #[getter]
    fn task_graph_id(&self, py: Python<'_>) -> String {
        self.with(py, |m| m.task_graph_id.to_owned())
    }
    #[getter]
    fn dependencies(&self, py: Python<'_>) -> Vec<String> {
        self.with(py, |m| {
            m.dependencies()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
    }
    #[getter]
    fn priority(&self, py: Python<'_>) -> Option<u32> {
        self.with(py, |m| m.priority)
    }
    #[getter]
    fn dedup_context(&self, py: Python<'_>) -> String {
        self.with(py, |m| m.dedup_context.to_owned())
    }
    #[getter]
    fn trace_id(&self, py: Python<'_>) -> String {
        self.with(py, |m| m.trace_id.to_owned())
    }
    #[getter]
    fn metadata(&self, py: Python<'_>) -> BTreeMap<String, String> {
        self.with(py, |m| {
            m.metadata()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<BTreeMap<_, _>>()
        })
    }
    #[getter]
    fn timestamp(&self, py: Python<'_>) -> u64 {
        self.with(py, |m| m.timestamp)
    }

    #[pyo3(signature = (now_ms=None))]
    fn validate(&self, py: Python<'_>, now_ms: Option<u64>) -> PyResult<()> {
        let now = now_ms.unwrap_or_else(validate::now_ms);
        self.with(py, |m| m.validate(now, MAX_PAYLOAD_BYTES))
            .map_err(|r| r.into_error().into())
    }

    fn encode<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let encoded = self.with(py, |m| encode_canonical(&m.to_owned_message()));
        PyBytes::new(py, &encoded)
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        self.with(py, |m| -> PyResult<()> {
            d.set_item("agent_id", m.agent_id)?;
            d.set_item("message_id", m.message_id)?;
            d.set_item("payload", PyBytes::new(py, m.payload))?;
            d.set_item("estimated_cost_tokens", m.estimated_cost_tokens)?;
            d.set_item("budget_tokens", m.budget_tokens)?;
            d.set_item("deadline_ms", m.deadline_ms)?;
            d.set_item("task_graph_id", m.task_graph_id)?;
            d.set_item("dependencies", PyList::new(py, m.dependencies())?)?;
            d.set_item("priority", m.priority)?;
            d.set_item("dedup_context", m.dedup_context)?;
            d.set_item("trace_id", m.trace_id)?;
            d.set_item("metadata", m.metadata().into_py_dict_bound(py)?)?;
            d.set_item("timestamp", m.timestamp)?;
            Ok(())
        })?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |m| {
            format!(
                "MessageView(agent_id={:?}, message_id={:?}, payload_len={})",
                m.agent_id,
                m.message_id,
                m.payload.len()
            )
        })
    }
}

trait IntoPyDictBound {
    fn into_py_dict_bound<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>>;
}

impl IntoPyDictBound for BTreeMap<&str, &str> {
    fn into_py_dict_bound<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

/// A buffer of length-prefixed AIMessage frames, decoded without copying.
#[pyclass(frozen, sequence, module = "aimesh._native")]
pub struct MessageBuffer {
    pub(crate) source: Py<PyBytes>,
    pub(crate) frames: Vec<(usize, usize)>,
}

/// How the messages of a buffer are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// 4-byte big-endian length + AIMessage, repeated.
    Frames,
    /// One `MessageBatch` protobuf body.
    Batch,
}

impl MessageBuffer {
    fn build(data: &Bound<'_, PyAny>, max_frame_bytes: usize, layout: Layout) -> PyResult<Self> {
        let source = as_pybytes(data)?;
        let len = source.as_bytes().len();
        Self::build_span(&source, 0, len, max_frame_bytes, layout)
    }

    /// Decode the messages in `source[start..start+len]`; views borrow
    /// `source`.
    fn build_span(
        source: &Bound<'_, PyBytes>,
        start: usize,
        len: usize,
        max_frame_bytes: usize,
        layout: Layout,
    ) -> PyResult<Self> {
        let py = source.py();
        let bytes = &source.as_bytes()[start..start + len];
        let frames = py.detach(|| -> Result<_, NativeError> {
            let mut frames = match layout {
                Layout::Frames => scan_frames(bytes, max_frame_bytes)?,
                Layout::Batch => scan_batch(bytes, max_frame_bytes)?,
            };
            for (i, &(s, n)) in frames.iter().enumerate() {
                MessageRef::decode(&bytes[s..s + n]).map_err(|e| {
                    NativeError::new(e.kind, e.code, format!("message {i}: {}", e.message))
                })?;
            }
            for f in &mut frames {
                f.0 += start;
            }
            Ok(frames)
        })?;
        Ok(Self {
            source: source.clone().unbind(),
            frames,
        })
    }

    fn view(&self, py: Python<'_>, index: usize) -> MessageView {
        let (start, len) = self.frames[index];
        MessageView {
            source: self.source.clone_ref(py),
            start,
            len,
        }
    }
}

#[pymethods]
impl MessageBuffer {
    #[new]
    #[pyo3(signature = (data, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
    fn new(data: &Bound<'_, PyAny>, max_frame_bytes: usize) -> PyResult<Self> {
        Self::build(data, max_frame_bytes, Layout::Frames)
    }

    fn __len__(&self) -> usize {
        self.frames.len()
    }

    fn __getitem__(&self, py: Python<'_>, index: isize) -> PyResult<MessageView> {
        let n = self.frames.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "MessageBuffer index out of range",
            ));
        }
        Ok(self.view(py, i as usize))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let views: Vec<MessageView> = (0..slf.frames.len()).map(|i| slf.view(py, i)).collect();
        let list = PyList::new(py, views)?;
        Ok(list.try_iter()?.into_any().unbind())
    }

    #[getter]
    fn nbytes(&self, py: Python<'_>) -> usize {
        self.source.bind(py).as_bytes().len()
    }
}

/// One complete frame body cut from a stream, still inside the bytes it
/// arrived in (no copy unless the frame spanned two reads).
#[pyclass(frozen, module = "aimesh._native")]
pub struct RawFrame {
    source: Py<PyBytes>,
    start: usize,
    len: usize,
}

#[pymethods]
impl RawFrame {
    fn __len__(&self) -> usize {
        self.len
    }

    /// The body as a zero-copy memoryview.
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        slice_view(self.source.bind(py), self.start, self.len)
    }

    /// The body as a new ``bytes``.
    fn tobytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let b = self.source.bind(py).as_bytes();
        PyBytes::new(py, &b[self.start..self.start + self.len])
    }

    /// Decode the body as one AIMessage (payload not copied).
    fn message(&self, py: Python<'_>) -> PyResult<MessageView> {
        let b = self.source.bind(py).as_bytes();
        MessageRef::decode(&b[self.start..self.start + self.len])?;
        Ok(MessageView {
            source: self.source.clone_ref(py),
            start: self.start,
            len: self.len,
        })
    }

    /// Decode the body as one MessageBatch (payloads not copied).
    #[pyo3(signature = (max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
    fn batch(&self, py: Python<'_>, max_frame_bytes: usize) -> PyResult<MessageBuffer> {
        MessageBuffer::build_span(
            self.source.bind(py),
            self.start,
            self.len,
            max_frame_bytes,
            Layout::Batch,
        )
    }
}

/// Incremental frame reader for a byte stream that arrives in pieces (a
/// QUIC or TCP stream). Frames wholly inside one piece are handed out as
/// views of that piece; only a frame split across pieces is copied. A
/// frame whose header announces more than ``max_frame_bytes`` is refused
/// on the header alone.
#[pyclass(module = "aimesh._native")]
pub struct FrameDecoder {
    max_frame: usize,
    pending: Vec<u8>,
    poisoned: bool,
}

impl FrameDecoder {
    fn too_large(&mut self, len: usize) -> NativeError {
        self.poisoned = true;
        self.pending = Vec::new();
        frame_error(
            "frame_too_large",
            format!(
                "a frame announces {len} bytes, the limit is {}",
                self.max_frame
            ),
        )
    }
}

#[pymethods]
impl FrameDecoder {
    #[new]
    #[pyo3(signature = (max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
    fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame: max_frame_bytes,
            pending: Vec::new(),
            poisoned: false,
        }
    }

    /// Add the next piece of the stream; answer the frames it completes.
    fn feed(&mut self, data: &Bound<'_, PyAny>) -> PyResult<Vec<RawFrame>> {
        if self.poisoned {
            return Err(frame_error("frame_too_large", "the stream was refused").into());
        }
        let py = data.py();
        let source = as_pybytes(data)?;
        let input = source.as_bytes();
        let mut out = Vec::new();
        let mut pos = 0usize;
        if !self.pending.is_empty() {
            // Finish the frame begun by an earlier piece.
            let head_missing = 4usize.saturating_sub(self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..head_missing]);
            pos = head_missing;
            if self.pending.len() < 4 {
                return Ok(out);
            }
            let p = &self.pending;
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            if len > self.max_frame {
                return Err(self.too_large(len).into());
            }
            let take = (4 + len - self.pending.len()).min(input.len() - pos);
            self.pending.extend_from_slice(&input[pos..pos + take]);
            pos += take;
            if self.pending.len() < 4 + len {
                return Ok(out);
            }
            let joined = PyBytes::new(py, &self.pending[4..]);
            self.pending.clear();
            out.push(RawFrame {
                source: joined.unbind(),
                start: 0,
                len,
            });
        }
        while input.len() - pos >= 4 {
            let h = &input[pos..pos + 4];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > self.max_frame {
                return Err(self.too_large(len).into());
            }
            if input.len() - pos - 4 < len {
                break;
            }
            out.push(RawFrame {
                source: source.clone().unbind(),
                start: pos + 4,
                len,
            });
            pos += 4 + len;
        }
        self.pending.extend_from_slice(&input[pos..]);
        Ok(out)
    }

    /// The largest frame body accepted from now on.
    #[getter]
    fn get_max_frame_bytes(&self) -> usize {
        self.max_frame
    }

    /// Lower or raise the limit (a stream's first frame may decide it); a
    /// frame already begun is checked against the new limit at once.
    #[setter]
    fn set_max_frame_bytes(&mut self, value: usize) -> PyResult<()> {
        self.max_frame = value;
        if let [a, b, c, d, ..] = self.pending[..] {
            let len = u32::from_be_bytes([a, b, c, d]) as usize;
            if len > value {
                return Err(self.too_large(len).into());
            }
        }
        Ok(())
    }

    /// Bytes held for a frame that is not complete yet.
    #[getter]
    fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// The stream ended: raise ``FrameError("truncated_frame")`` if it
    /// stopped inside a frame.
    fn finish(&self) -> PyResult<()> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(frame_error(
                "truncated_frame",
                format!("the stream ended {} bytes into a frame", self.pending.len()),
            )
            .into())
        }
    }
}

#[pyfunction]
#[pyo3(signature = (data, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
fn decode_frames(data: &Bound<'_, PyAny>, max_frame_bytes: usize) -> PyResult<MessageBuffer> {
    MessageBuffer::build(data, max_frame_bytes, Layout::Frames)
}

/// A `MessageBatch` protobuf body holding already encoded AIMessages.
#[pyfunction]
fn encode_batch<'py>(
    py: Python<'py>,
    bodies: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    join_bodies(py, &bodies, |out, body| {
        put_len(out, 1, body);
        Ok(())
    })
}

/// Concatenate `bodies`, each written by `put`.
fn join_bodies<'py>(
    py: Python<'py>,
    bodies: &[Bound<'py, PyAny>],
    put: impl Fn(&mut Vec<u8>, &[u8]) -> Result<(), NativeError>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    for b in bodies {
        put(&mut out, as_pybytes(b)?.as_bytes())?;
    }
    Ok(PyBytes::new(py, &out))
}

/// Decode the AIMessages of one `MessageBatch` protobuf body without copying
/// payloads; the same views as [`decode_frames`].
#[pyfunction]
#[pyo3(signature = (data, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
fn decode_batch(data: &Bound<'_, PyAny>, max_frame_bytes: usize) -> PyResult<MessageBuffer> {
    MessageBuffer::build(data, max_frame_bytes, Layout::Batch)
}

#[pyfunction]
fn decode_message(data: &Bound<'_, PyAny>) -> PyResult<MessageView> {
    let source = as_pybytes(data)?;
    let len = source.as_bytes().len();
    MessageRef::decode(source.as_bytes())?;
    Ok(MessageView {
        source: source.unbind(),
        start: 0,
        len,
    })
}

#[pyfunction]
#[pyo3(signature = (*, agent_id, payload, message_id="".to_owned(), estimated_cost_tokens=None,
    budget_tokens=None, deadline_ms=None, task_graph_id="".to_owned(), dependencies=Vec::new(),
    priority=None, dedup_context="".to_owned(), trace_id="".to_owned(), metadata=None, timestamp=0))]
#[allow(clippy::too_many_arguments)]
fn encode_message<'py>(
    py: Python<'py>,
    agent_id: String,
    payload: &Bound<'py, PyAny>,
    message_id: String,
    estimated_cost_tokens: Option<u64>,
    budget_tokens: Option<u64>,
    deadline_ms: Option<u64>,
    task_graph_id: String,
    dependencies: Vec<String>,
    priority: Option<u32>,
    dedup_context: String,
    trace_id: String,
    metadata: Option<BTreeMap<String, String>>,
    timestamp: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let payload = as_pybytes(payload)?;
    let msg = proto::AiMessage {
        agent_id,
        message_id,
        payload: payload.as_bytes().to_vec(),
        estimated_cost_tokens,
        budget_tokens,
        deadline_ms,
        task_graph_id,
        dependencies,
        priority,
        dedup_context,
        trace_id,
        metadata: metadata.unwrap_or_default(),
        timestamp,
    };
    Ok(PyBytes::new(py, &encode_canonical(&msg)))
}

#[pyfunction]
fn frame<'py>(body: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let body = as_pybytes(body)?;
    Ok(PyBytes::new(body.py(), &frame_bytes(body.as_bytes())?))
}

#[pyfunction]
fn encode_frames<'py>(
    py: Python<'py>,
    bodies: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    join_bodies(py, &bodies, |out, body| {
        out.extend_from_slice(&frame_bytes(body)?);
        Ok(())
    })
}

#[pyfunction]
#[pyo3(signature = (data, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES))]
fn split_frames<'py>(
    data: &Bound<'py, PyAny>,
    max_frame_bytes: usize,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let source = as_pybytes(data)?;
    let frames = scan_frames(source.as_bytes(), max_frame_bytes)?;
    frames
        .into_iter()
        .map(|(start, len)| slice_view(&source, start, len))
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DEFAULT_MAX_FRAME_BYTES", DEFAULT_MAX_FRAME_BYTES)?;
    m.add_class::<MessageView>()?;
    m.add_class::<MessageBuffer>()?;
    m.add_function(wrap_pyfunction!(decode_frames, m)?)?;
    m.add_function(wrap_pyfunction!(decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(encode_batch, m)?)?;
    m.add_class::<RawFrame>()?;
    m.add_class::<FrameDecoder>()?;
    m.add_function(wrap_pyfunction!(decode_message, m)?)?;
    m.add_function(wrap_pyfunction!(encode_message, m)?)?;
    m.add_function(wrap_pyfunction!(frame, m)?)?;
    m.add_function(wrap_pyfunction!(encode_frames, m)?)?;
    m.add_function(wrap_pyfunction!(split_frames, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> proto::AiMessage {
        proto::AiMessage {
            agent_id: "agent-1".into(),
            message_id: "0190f0f0-0000-7000-8000-000000000001".into(),
            payload: b"hello world".to_vec(),
            estimated_cost_tokens: Some(100),
            budget_tokens: Some(500),
            deadline_ms: Some(1_900_000_000_000),
            task_graph_id: "graph".into(),
            dependencies: vec!["a".into(), "b".into()],
            priority: Some(0),
            dedup_context: "ctx".into(),
            trace_id: "trace".into(),
            metadata: [
                ("model".to_string(), "gpt-4o".to_string()),
                ("z".into(), "1".into()),
            ]
            .into_iter()
            .collect(),
            timestamp: 42,
        }
    }

    #[test]
    fn decodes_every_field_and_reencodes_identically() {
        let bytes = sample().encode_to_vec();
        let m = MessageRef::decode(&bytes).unwrap();
        assert_eq!(m.agent_id, "agent-1");
        assert_eq!(m.payload, b"hello world");
        assert_eq!(m.priority, Some(0));
        assert_eq!(m.dependencies(), vec!["a", "b"]);
        assert_eq!(m.metadata_get("model"), Some("gpt-4o"));
        assert_eq!(m.metadata_get("nope"), None);
        assert_eq!(m.to_owned_message(), sample());
        assert_eq!(m.to_owned_message().encode_to_vec(), bytes);
        assert_eq!(encode_canonical(&m.to_owned_message()), bytes);
    }

    #[test]
    fn empty_map_key_and_value_are_written() {
        let mut msg = sample();
        msg.metadata = [(String::new(), String::new())].into_iter().collect();
        let bytes = encode_canonical(&msg);
        assert!(bytes
            .windows(6)
            .any(|w| w == [0x62, 0x04, 0x0a, 0x00, 0x12, 0x00]));
        assert_eq!(MessageRef::decode(&bytes).unwrap().to_owned_message(), msg);
    }

    #[test]
    fn absent_optionals_stay_absent() {
        let msg = proto::AiMessage {
            agent_id: "a".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        };
        let bytes = msg.encode_to_vec();
        let m = MessageRef::decode(&bytes).unwrap();
        assert_eq!(m.priority, None);
        assert_eq!(m.budget_tokens, None);
        assert_eq!(m.deadline_ms, None);
    }

    #[test]
    fn payload_is_borrowed() {
        let bytes = sample().encode_to_vec();
        let m = MessageRef::decode(&bytes).unwrap();
        let base = bytes.as_ptr() as usize;
        let p = m.payload.as_ptr() as usize;
        assert!(p > base && p < base + bytes.len());
    }

    #[test]
    fn truncation_at_every_offset_errors_without_panic() {
        let body = sample().encode_to_vec();
        let framed = frame_bytes(&body).unwrap();
        for cut in 0..framed.len() {
            let part = &framed[..cut];
            match scan_frames(part, DEFAULT_MAX_FRAME_BYTES) {
                Ok(frames) => assert!(frames.is_empty() && cut == 0),
                Err(e) => assert_eq!(e.code, "truncated_frame"),
            }
        }
        for cut in 0..body.len() {
            // A cut body is either an error or (at a field boundary) a
            // shorter valid message; it never panics.
            let _ = MessageRef::decode(&body[..cut]);
        }
    }

    #[test]
    fn oversized_frame_is_refused_on_the_header() {
        let header = 5000u32.to_be_bytes();
        let e = scan_frames(&header, 4096).unwrap_err();
        assert_eq!(e.code, "frame_too_large");
    }

    #[test]
    fn bad_wire_data_is_an_error() {
        for bad in [
            &[0x0a, 0x05, b'a'][..],       // length past the end
            &[0x08, 0x01][..],             // agent_id with varint wire type
            &[0xff; 11][..],               // overlong varint
            &[0x0a, 0x02, 0xff, 0xfe][..], // invalid UTF-8
            &[0x0b][..],                   // start-group wire type
            &[0x00, 0x01][..],             // field number 0
        ] {
            let e = MessageRef::decode(bad).unwrap_err();
            assert_eq!(e.code, "invalid_protobuf", "{bad:?}");
        }
    }

    #[test]
    fn batch_entries_are_located_without_copy() {
        let body = encode_canonical(&sample());
        let mut batch = Vec::new();
        put_len(&mut batch, 1, &body);
        put_str(&mut batch, 7, "ignored");
        put_len(&mut batch, 1, &body);
        let spans = scan_batch(&batch, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(spans.len(), 2);
        for (start, len) in spans {
            assert_eq!(&batch[start..start + len], body.as_slice());
        }
        assert_eq!(scan_batch(&batch, 8).unwrap_err().code, "frame_too_large");
        assert!(scan_batch(&batch[..batch.len() - 1], DEFAULT_MAX_FRAME_BYTES).is_err());
        assert!(scan_batch(&[0x09], DEFAULT_MAX_FRAME_BYTES).is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = sample().encode_to_vec();
        bytes.extend_from_slice(&[0xa0, 0x06, 0x01]); // field 100 varint
        bytes.extend_from_slice(&[0xa9, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]); // field 101 fixed64
        bytes.extend_from_slice(&[0xb5, 0x06, 1, 2, 3, 4]); // field 102 fixed32
        let m = MessageRef::decode(&bytes).unwrap();
        assert_eq!(m.to_owned_message(), sample());
    }

    #[test]
    fn golden_frames_roundtrip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/testdata");
        let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        let mut checked = 0;
        for entry in manifest.split("\"file\": \"").skip(1) {
            let name = &entry[..entry.find('"').unwrap()];
            let kind_at = entry.find("\"type\": \"").unwrap() + 9;
            let kind = &entry[kind_at..kind_at + entry[kind_at..].find('"').unwrap()];
            let data = std::fs::read(dir.join(name)).unwrap();
            let frames = scan_frames(&data, DEFAULT_MAX_FRAME_BYTES).unwrap();
            let mut again = Vec::new();
            for (start, len) in frames {
                let body = &data[start..start + len];
                let encoded = match kind {
                    "AIMessage" => MessageRef::decode(body)
                        .unwrap()
                        .to_owned_message()
                        .encode_to_vec(),
                    "Acknowledgment" => {
                        proto::Acknowledgment::decode(body).unwrap().encode_to_vec()
                    }
                    "EndpointMetrics" => proto::EndpointMetrics::decode(body)
                        .unwrap()
                        .encode_to_vec(),
                    "RoutingDecision" => proto::RoutingDecision::decode(body)
                        .unwrap()
                        .encode_to_vec(),
                    "MessageBatch" => proto::MessageBatch::decode(body).unwrap().encode_to_vec(),
                    other => panic!("unknown golden type {other}"),
                };
                again.extend_from_slice(&frame_bytes(&encoded).unwrap());
            }
            assert_eq!(again, data, "golden {name} re-encodes byte-identically");
            checked += 1;
        }
        assert!(checked >= 5, "expected golden frames, found {checked}");
    }
}
