//! Reading JSON webhook and notification payloads: the one strict parse and
//! the small helpers every parser shares, so that every error names its
//! field the same way.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::event::{LimitHit, Unreadable};

pub use crate::event::excerpt as shown;

/// Longest event id accepted: ids are dedupe keys and log fields.
pub const MAX_ID_LEN: usize = 256;

/// Why a body is not JSON the service reads: serde_json's error (it names
/// line and column), and whether it was a repeated key, a limit on
/// untrusted input.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct NotJson {
    error: serde_json::Error,
    duplicate_key: bool,
}

impl NotJson {
    pub fn limit(&self) -> Option<LimitHit> {
        self.duplicate_key.then_some(LimitHit::DuplicateJsonKey)
    }
}

impl From<NotJson> for Unreadable {
    fn from(e: NotJson) -> Self {
        Unreadable {
            limit: e.limit(),
            reason: e.to_string(),
        }
    }
}

/// Why an id cannot be a dedupe key and log field; always the
/// [`LimitHit::BadEventId`] limit. The words follow the field's name
/// (`field `id` is 300 bytes long …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadId {
    #[error("is {0} bytes long (an id is at most {MAX_ID_LEN})")]
    TooLong(usize),
    #[error("contains control characters")]
    ControlCharacters,
}

impl From<BadId> for Unreadable {
    fn from(e: BadId) -> Self {
        Unreadable {
            reason: e.to_string(),
            limit: Some(LimitHit::BadEventId),
        }
    }
}

/// A field holding another JSON type than the format defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` must be {want}, found {found}")]
pub struct WrongType {
    /// The field's full path in the request (`data.target.tag`).
    pub field: String,
    pub want: &'static str,
    pub found: &'static str,
}

impl From<WrongType> for Unreadable {
    fn from(e: WrongType) -> Self {
        Unreadable::from(e.to_string())
    }
}

/// Parses a payload as JSON, refusing an object that repeats a key.
///
/// serde_json keeps the last of two equal keys, while other readers of the
/// same bytes (a registry's UI, a log pipeline, an analyst) may keep the
/// first: `{"action": "DELETE", "action": "INSERT"}` must not mean one
/// thing to us and another to them. The error names the key and its place.
pub fn parse(bytes: &[u8]) -> Result<Value, NotJson> {
    let duplicate_key = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Strict(&duplicate_key)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| NotJson {
            error,
            duplicate_key: duplicate_key.get(),
        })
}

/// Builds a `Value`, refusing repeated keys; notes a refusal in the cell
/// (serde's errors are text, and the limit must not be read back from it).
#[derive(Clone, Copy)]
struct Strict<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                self.0.set(true);
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    shown(&key)
                )));
            }
            let value = map.next_value_seed(self)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// The number of array elements in a JSON document, at every depth, read
/// without building anything. `None` when there are more than `max` (the
/// count stops there) or the bytes are not JSON (the parse that follows
/// reports that properly).
///
/// Every webhook format lists its events in arrays (distribution's
/// `events`, Event Grid and CloudEvents batches, Harbor's `resources`), so
/// this bounds the events of a request, nested lists included, before any
/// per-event structure exists.
pub fn count_array_elements(bytes: &[u8], max: usize) -> Option<usize> {
    let mut count = 0;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let counted = Counter {
        count: &mut count,
        max,
    }
    .deserialize(&mut deserializer);
    match counted {
        Ok(()) => Some(count),
        Err(_) if count > max => None,
        Err(_) => Some(count),
    }
}

/// One array element: counted when it is known to exist, then its own
/// content.
struct Element<'a>(Counter<'a>);

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let Element(counter) = self;
        *counter.count += 1;
        if *counter.count > counter.max {
            return Err(de::Error::custom("too many array elements"));
        }
        d.deserialize_any(counter)
    }
}

/// Counts elements into `count`, failing as soon as it passes `max`.
struct Counter<'a> {
    count: &'a mut usize,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Element(Counter {
                count: &mut *self.count,
                max: self.max,
            }))?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Counter {
                count: &mut *self.count,
                max: self.max,
            })?;
        }
        Ok(())
    }
}

/// The string at `path` inside `obj` (which stood at `at` in the request):
/// `None` when absent, null or empty; the error names the full path.
pub fn text<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    path: &[&str],
) -> Result<Option<&'a str>, WrongType> {
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
                return Err(WrongType {
                    field: name(depth),
                    want: if last { "a string" } else { "an object" },
                    found: json_type(other),
                });
            }
        }
    }
    Ok(None)
}

/// A string an envelope cannot do without (its id, its type): present, a
/// string, and not empty.
pub fn required<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, Unreadable> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("field `{key}` is empty").into()),
        Some(other) => {
            Err(format!("field `{key}` must be a string, found {}", json_type(other)).into())
        }
        None => Err(format!("field `{key}` is missing").into()),
    }
}

/// An id is a dedupe key and a log field: bounded, no control characters.
pub fn check_id(id: &str) -> Result<(), BadId> {
    if id.len() > MAX_ID_LEN {
        return Err(BadId::TooLong(id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err(BadId::ControlCharacters);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Repository;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_and_named() {
        for body in [
            r#"{"action":"DELETE","action":"INSERT"}"#,
            r#"{"events":[{"target":{"tag":"a","tag":"b"}}]}"#,
        ] {
            let e = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("duplicate key `"), "{e}");
            assert!(e.contains("line 1"), "{e}");
        }
        let v = parse(br#"{"a":[1,-2,3.5,"x",null,true,{"a":{}}],"b":{"a":1}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":[1,-2,3.5,"x",null,true,{"a":{}}],"b":{"a":1}})
        );
        assert!(parse(b"{} x").is_err());
    }

    #[test]
    fn each_limit_is_carried_by_its_refusal_and_no_other_refusal_carries_one() {
        let limit = |e: Unreadable| (e.limit, e.reason);
        let name = format!("registry.example/{}", "a".repeat(300));
        for ((limit, message), want) in [
            (
                limit(parse(br#"{"a":1,"a":2}"#).unwrap_err().into()),
                LimitHit::DuplicateJsonKey,
            ),
            (
                limit(check_id(&"x".repeat(MAX_ID_LEN + 1)).unwrap_err().into()),
                LimitHit::BadEventId,
            ),
            (
                limit(check_id("a\nb").unwrap_err().into()),
                LimitHit::BadEventId,
            ),
            (
                limit(name.parse::<Repository>().unwrap_err().into()),
                LimitHit::NameTooLong,
            ),
        ] {
            assert_eq!(limit, Some(want), "{message}");
        }
        for refusal in [
            Unreadable::from(parse(b"{").unwrap_err()),
            Unreadable::from(parse(b"[1,2").unwrap_err()),
            "registry.example/UPPER"
                .parse::<Repository>()
                .unwrap_err()
                .into(),
            format!("{}/a", "h".repeat(300))
                .parse::<crate::reference::Digest>()
                .unwrap_err()
                .into(),
        ] {
            assert_eq!(refusal.limit, None, "{refusal}");
        }
    }

    #[test]
    fn refusals_keep_their_words() {
        let e = check_id(&"x".repeat(300)).unwrap_err().to_string();
        assert_eq!(e, "is 300 bytes long (an id is at most 256)");
        assert_eq!(
            check_id("a\u{7}").unwrap_err().to_string(),
            "contains control characters"
        );
        let e = parse(br#"{"a":1,"a":2}"#).unwrap_err().to_string();
        assert_eq!(e, "duplicate key `a` at line 1 column 10");
        let wrong = text(
            serde_json::json!({"t": {"x": 1}}).as_object().unwrap(),
            "data",
            &["t", "x"],
        )
        .unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "field `data.t.x` must be a string, found a number"
        );
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\\\"é]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]{0,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn elements(v: &Value) -> usize {
        match v {
            Value::Array(items) => items.len() + items.iter().map(elements).sum::<usize>(),
            Value::Object(fields) => fields.values().map(elements).sum(),
            _ => 0,
        }
    }

    proptest::proptest! {
        /// On JSON without repeated keys the strict parse is serde_json's,
        /// and the cap's count is the number of array elements it holds.
        #[test]
        fn the_strict_parse_and_the_count_agree_with_serde_json(v in any_json()) {
            let text = v.to_string();
            proptest::prop_assert_eq!(parse(text.as_bytes()).unwrap(), v.clone());
            let n = elements(&v);
            proptest::prop_assert_eq!(count_array_elements(text.as_bytes(), n), Some(n));
            if n > 0 {
                proptest::prop_assert_eq!(count_array_elements(text.as_bytes(), n - 1), None);
            }
        }
    }

    #[test]
    fn array_elements_are_counted_at_every_depth_up_to_the_bound() {
        let body = br#"{"events":[{},{"r":[1,2,[3]]}],"x":[]}"#;
        assert_eq!(count_array_elements(body, 10), Some(6));
        assert_eq!(count_array_elements(body, 6), Some(6));
        assert_eq!(count_array_elements(body, 5), None);
        assert_eq!(count_array_elements(b"not json", 5), Some(0));
    }
}
