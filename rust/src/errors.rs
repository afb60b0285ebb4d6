//! Mapping of native errors onto the exception classes of `aimesh.errors`.
//!
//! Pure-Rust code returns [`NativeError`]; the PyO3 wrappers turn it into the
//! matching Python exception (with its machine-readable `code`) here, in one
//! place, so every part raises the same hierarchy.

use pyo3::prelude::*;
use std::fmt;

/// Which `aimesh.errors` class an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Frame,
    Validation,
    NotFound,
    Routing,
    QueueFull,
}

impl ErrorKind {
    fn class_name(self) -> &'static str {
        match self {
            ErrorKind::Frame => "FrameError",
            ErrorKind::Validation => "ValidationError",
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::Routing => "RoutingError",
            ErrorKind::QueueFull => "QueueFullError",
        }
    }
}

/// A native error: its kind, a stable snake_case code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl NativeError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for NativeError {}

impl From<NativeError> for PyErr {
    fn from(err: NativeError) -> PyErr {
        Python::attach(|py| match to_py_exception(py, &err) {
            Ok(e) => e,
            Err(e) => e,
        })
    }
}

fn to_py_exception(py: Python<'_>, err: &NativeError) -> PyResult<PyErr> {
    let module = py.import("aimesh.errors")?;
    let class = module.getattr(err.kind.class_name())?;
    let instance = class.call1((err.code, err.message.as_str()))?;
    Ok(PyErr::from_value(instance))
}
