//! Reading JSON webhook and notification payloads: the small helpers every
//! parser shares, so that every error names its field the same way.

use serde_json::{Map, Value};

/// Longest event id accepted: ids are dedupe keys and log fields.
pub const MAX_ID_LEN: usize = 256;

/// The string at `path` inside `obj` (which stood at `at` in the request):
/// `None` when absent, null or empty; the error names the full path.
pub fn text<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    path: &[&str],
) -> Result<Option<&'a str>, String> {
    let name = |depth: usize| {
        let inner = path[..=depth].join(".");
        if at.is_empty() {
            inner
        } else {
            format!("{at}.{inner}")
        }
    };
    let mut current = obj;
    for (depth, key) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        match current.get(*key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if last => return Ok((!s.is_empty()).then_some(s.as_str())),
            Some(Value::Object(inner)) if !last => current = inner,
            Some(other) => {
                let want = if last { "a string" } else { "an object" };
                return Err(format!(
                    "field `{}` must be {want}, found {}",
                    name(depth),
                    json_type(other)
                ));
            }
        }
    }
    Ok(None)
}

/// An id is a dedupe key and a log field: bounded, no control characters.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.len() > MAX_ID_LEN {
        return Err(format!("is {} bytes long (at most {MAX_ID_LEN})", id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// Caps echoed input: hostile payloads can be megabytes long.
pub fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

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
