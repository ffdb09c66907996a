//! Reading fields out of payloads, with errors that name the format and the field:
//! the helpers every decoder uses. Pure; imports only the shared vocabulary.

use bytes::Bytes;
use serde_json::{Map, Value};

use estate_config::SourceFormat;
use estate_protocols::rfc3339;

use super::decoded::{error, DecodeError, DecodeReason};

/// `format: field "name": expected …, found …`.
pub fn bad_field(format: SourceFormat, field: &str, expected: &str, found: &Value) -> DecodeError {
    error(
        format,
        DecodeReason::BadField,
        format!(
            "field {field:?}: expected {expected}, found {}",
            show(found)
        ),
    )
}

/// `format: field "name" is missing`.
pub fn missing(format: SourceFormat, field: &str) -> DecodeError {
    error(
        format,
        DecodeReason::BadField,
        format!("field {field:?} is missing"),
    )
}

/// A JSON value for an error message, bounded.
pub fn show(v: &Value) -> String {
    cut(&v.to_string(), 60)
}

/// The payload as a JSON object, or the error naming `format`.
pub fn json_object(
    format: SourceFormat,
    payload: &[u8],
) -> Result<Map<String, Value>, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        error(
            format,
            DecodeReason::InvalidUtf8,
            format!(
                "payload is not UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(error(
            format,
            DecodeReason::BadJson,
            format!(
                "payload is JSON {} but must be an object",
                json_type(&other)
            ),
        )),
        Err(e) => Err(error(
            format,
            DecodeReason::BadJson,
            format!("payload is not JSON: {e}"),
        )),
    }
}

/// The payload as trimmed UTF-8 text.
pub fn text(format: SourceFormat, payload: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(payload).map(str::trim).map_err(|e| {
        error(
            format,
            DecodeReason::InvalidUtf8,
            format!(
                "payload is not UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// "a string", "an object", … for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional field (`null` is absent) that `pick` reads as `expected` ("a boolean", …);
/// any other JSON type is a `bad_field` error naming what was expected.
fn opt<'a, T>(
    format: SourceFormat,
    m: &'a Map<String, Value>,
    field: &str,
    expected: &str,
    pick: impl FnOnce(&'a Value) -> Option<T>,
) -> Result<Option<T>, DecodeError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => pick(v)
            .map(Some)
            .ok_or_else(|| bad_field(format, field, expected, v)),
    }
}

/// An optional boolean field (`null` is absent).
pub fn opt_bool(
    format: SourceFormat,
    m: &Map<String, Value>,
    field: &str,
) -> Result<Option<bool>, DecodeError> {
    opt(format, m, field, "a boolean", Value::as_bool)
}

/// An optional number field (`null` is absent).
pub fn opt_f64(
    format: SourceFormat,
    m: &Map<String, Value>,
    field: &str,
) -> Result<Option<f64>, DecodeError> {
    opt(format, m, field, "a number", Value::as_f64)
}

/// An optional string field (`null` is absent).
pub fn opt_str<'a>(
    format: SourceFormat,
    m: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, DecodeError> {
    opt(format, m, field, "a string", Value::as_str)
}

/// A required, non-empty id: a string or an integer.
pub fn req_id(
    format: SourceFormat,
    m: &Map<String, Value>,
    field: &str,
) -> Result<String, DecodeError> {
    match m.get(field) {
        None | Some(Value::Null) => Err(missing(format, field)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Some(other) => Err(bad_field(
            format,
            field,
            "a non-empty string or an integer",
            other,
        )),
    }
}

/// An optional timestamp: RFC 3339 text or epoch milliseconds.
pub fn opt_time(
    format: SourceFormat,
    m: &Map<String, Value>,
    field: &str,
) -> Result<Option<i64>, DecodeError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            bad_field(
                format,
                field,
                "epoch milliseconds as an integer",
                &Value::Number(n.clone()),
            )
        }),
        Some(Value::String(s)) => rfc3339::parse_ms(s)
            .map(Some)
            .ok_or_else(|| bad_field(format, field, "an RFC 3339 time", &Value::String(s.clone()))),
        Some(other) => Err(bad_field(
            format,
            field,
            "an RFC 3339 time or epoch milliseconds",
            other,
        )),
    }
}

/// `s` cut to at most `max` bytes (≥ 3) at a character boundary, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Raw bytes as kept with an event or dead letter: at most `limit` bytes, and whether
/// they were cut.
pub fn bounded_raw(payload: &[u8], limit: usize) -> (Bytes, bool) {
    if payload.len() > limit {
        (Bytes::copy_from_slice(&payload[..limit]), true)
    } else {
        (Bytes::copy_from_slice(payload), false)
    }
}
