//! `aimesh._native`: the Rust core of AiMesh. This file only wires the
//! module; each part lives in its own file.

use pyo3::prelude::*;

pub mod buffer;
pub mod errors;
pub mod hashing;
pub mod histogram;
pub mod limiter;
pub mod pqueue;
pub mod proto;
pub mod router;
pub mod validate;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    buffer::register(m)?;
    validate::register(m)?;
    router::register(m)?;
    limiter::register(m)?;
    pqueue::register(m)?;
    hashing::register(m)?;
    histogram::register(m)?;
    Ok(())
}
