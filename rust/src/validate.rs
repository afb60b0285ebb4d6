//! Protocol rules for a message, shared by every entry point (the Python
//! pipeline calls `validate_fields`, the batch path calls [`validate`]).

use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::errors::{ErrorKind, NativeError};

/// Largest payload a message may carry.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Why a message was refused. `as u8` indexes [`REJECTION_CODES`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    InvalidAgentId = 1,
    PayloadRequired = 2,
    PayloadTooLarge = 3,
    InvalidBudgetTokens = 4,
    DeadlineInPast = 5,
    InvalidPriority = 6,
    InvalidProtobuf = 7,
    UnknownGroup = 8,
    NoEndpointAvailable = 9,
}

/// Codes of the batch path; index 0 means "routed".
pub const REJECTION_CODES: [&str; 10] = [
    "routed",
    "invalid_agent_id",
    "payload_required",
    "payload_too_large",
    "invalid_budget_tokens",
    "deadline_in_past",
    "invalid_priority",
    "invalid_protobuf",
    "unknown_group",
    "no_endpoint_available",
];

impl Rejection {
    pub fn code(self) -> &'static str {
        REJECTION_CODES[self as usize]
    }

    fn message(self) -> &'static str {
        match self {
            Rejection::InvalidAgentId => "agent_id must be non-empty and match ^[a-z0-9_-]+$",
            Rejection::PayloadRequired => "payload is required and must not be empty",
            Rejection::PayloadTooLarge => "payload exceeds the size limit",
            Rejection::InvalidBudgetTokens => "budget_tokens must be > 0",
            Rejection::DeadlineInPast => "deadline_ms must be in the future",
            Rejection::InvalidPriority => "priority must be between 0 and 100",
            Rejection::InvalidProtobuf => "the frame is not a valid AIMessage",
            Rejection::UnknownGroup => "no endpoints serve this route group",
            Rejection::NoEndpointAvailable => "no healthy endpoint with free capacity",
        }
    }

    pub fn into_error(self) -> NativeError {
        NativeError::new(ErrorKind::Validation, self.code(), self.message())
    }
}

/// True when `id` is non-empty and only `[a-z0-9_-]`.
#[inline]
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Apply the protocol rules to a message's fields.
#[inline]
pub fn validate(
    agent_id: &str,
    payload_len: usize,
    budget_tokens: Option<u64>,
    deadline_ms: Option<u64>,
    priority: Option<u32>,
    now_ms: u64,
    max_payload: usize,
) -> Result<(), Rejection> {
    if !valid_agent_id(agent_id) {
        return Err(Rejection::InvalidAgentId);
    }
    if payload_len == 0 {
        return Err(Rejection::PayloadRequired);
    }
    if payload_len > max_payload {
        return Err(Rejection::PayloadTooLarge);
    }
    if budget_tokens == Some(0) {
        return Err(Rejection::InvalidBudgetTokens);
    }
    if let Some(d) = deadline_ms {
        if d <= now_ms {
            return Err(Rejection::DeadlineInPast);
        }
    }
    if let Some(p) = priority {
        if p > 100 {
            return Err(Rejection::InvalidPriority);
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Python: validate_fields(agent_id, payload_len, budget_tokens=None,
/// deadline_ms=None, priority=None, now_ms=None, max_payload_bytes=1 MiB).
/// Signed integers so that negatives from JSON get their own code.
#[pyfunction]
#[pyo3(signature = (agent_id, payload_len, budget_tokens=None, deadline_ms=None, priority=None, now_ms=None, max_payload_bytes=MAX_PAYLOAD_BYTES))]
pub fn validate_fields(
    agent_id: &str,
    payload_len: usize,
    budget_tokens: Option<i128>,
    deadline_ms: Option<i128>,
    priority: Option<i128>,
    now_ms: Option<u64>,
    max_payload_bytes: usize,
) -> PyResult<()> {
    let budget = match budget_tokens {
        None => None,
        Some(b) if b <= 0 => return Err(Rejection::InvalidBudgetTokens.into_error().into()),
        Some(b) => Some(u64::try_from(b).unwrap_or(u64::MAX)),
    };
    let deadline = match deadline_ms {
        None => None,
        Some(d) if d <= 0 => Some(0),
        Some(d) => Some(u64::try_from(d).unwrap_or(u64::MAX)),
    };
    let prio = match priority {
        None => None,
        Some(p) if !(0..=100).contains(&p) => {
            return Err(Rejection::InvalidPriority.into_error().into())
        }
        Some(p) => Some(p as u32),
    };
    let now = now_ms.unwrap_or_else(self::now_ms);
    validate(
        agent_id,
        payload_len,
        budget,
        deadline,
        prio,
        now,
        max_payload_bytes,
    )
    .map_err(|r| r.into_error().into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_PAYLOAD_BYTES", MAX_PAYLOAD_BYTES)?;
    m.add("REJECTION_CODES", PyTuple::new(m.py(), REJECTION_CODES)?)?;
    m.add_function(wrap_pyfunction!(validate_fields, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(agent: &str) -> Result<(), Rejection> {
        validate(agent, 10, None, None, None, 1000, MAX_PAYLOAD_BYTES)
    }

    #[test]
    fn agent_ids() {
        assert!(ok("my-agent_01").is_ok());
        assert_eq!(ok(""), Err(Rejection::InvalidAgentId));
        assert_eq!(ok("My-Agent"), Err(Rejection::InvalidAgentId));
        assert_eq!(ok("a b"), Err(Rejection::InvalidAgentId));
        assert_eq!(ok("é"), Err(Rejection::InvalidAgentId));
    }

    #[test]
    fn each_rule_has_its_code() {
        let v = |len, b, d, p| validate("a", len, b, d, p, 1000, 100);
        assert_eq!(v(0, None, None, None), Err(Rejection::PayloadRequired));
        assert_eq!(v(101, None, None, None), Err(Rejection::PayloadTooLarge));
        assert!(v(100, None, None, None).is_ok());
        assert_eq!(
            v(1, Some(0), None, None),
            Err(Rejection::InvalidBudgetTokens)
        );
        assert_eq!(v(1, None, Some(1000), None), Err(Rejection::DeadlineInPast));
        assert!(v(1, None, Some(1001), None).is_ok());
        assert_eq!(v(1, None, None, Some(101)), Err(Rejection::InvalidPriority));
        assert!(v(1, Some(1), None, Some(0)).is_ok());
        for r in [
            Rejection::InvalidAgentId,
            Rejection::NoEndpointAvailable,
            Rejection::UnknownGroup,
        ] {
            assert_eq!(REJECTION_CODES[r as usize], r.code());
        }
    }
}
