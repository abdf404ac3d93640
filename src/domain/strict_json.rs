//! JSON parsing that refuses an object with the same key twice. `serde_json` keeps the last
//! one silently; for a job that would mean sending to a number or under a key the campaign
//! system may not have meant, so a job with a duplicate key is rejected with its reason.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `body` into a [`Value`], refusing duplicate keys at any depth. The error says what
/// and where (line and column), never a value.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = StrictValue
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
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

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key {}",
                    shown_key(&key)
                )));
            }
            let value = map.next_value_seed(StrictValue)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A key as the error may show it: field names are the schema's, but a key could be anything
/// a campaign system put there, so only short plain names are echoed.
fn shown_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
    if plain {
        format!("`{key}`")
    } else {
        "(not shown)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_serde_json_parses_them() {
        let body = br#"{"a":[1,-2,3.5,true,null,"x",{"b":{}}],"c":"\u00e4"}"#;
        let strict = parse(body).unwrap();
        let loose: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(strict, loose);
    }

    #[test]
    fn a_key_twice_at_any_depth_is_refused() {
        assert!(
            parse(br#"{"a":1,"a":2}"#)
                .unwrap_err()
                .contains("duplicate key `a`")
        );
        let err = parse(br#"{"r":[{"to":"1"},{"to":"2","to":"3"}]}"#).unwrap_err();
        assert!(
            err.contains("duplicate key `to`") && err.contains("line 1"),
            "{err}"
        );
        // The same key in sibling objects is fine.
        assert!(parse(br#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn keys_that_could_be_data_are_not_echoed() {
        let err = parse(br#"{"+4915112345678":1,"+4915112345678":2}"#).unwrap_err();
        assert!(!err.contains("4915112345678"), "{err}");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse(br#"{"a":1} x"#).is_err());
    }
}
