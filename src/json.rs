//! Canonical JSON: object keys sorted at every level, no insignificant whitespace.
//!
//! Digests of manifests and catalogs must not depend on hash-map iteration order or on
//! whether serde_json preserves insertion order, so every document envoci hashes goes
//! through [`to_canonical_vec`].

use serde::Serialize;
use serde_json::Value;

/// Serialises `value` canonically.
pub fn to_canonical_vec<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = sort_keys(serde_json::to_value(value)?);
    serde_json::to_vec(&value)
}

fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn key_order_does_not_matter() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..50 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            b.insert(format!("k{i}"), i);
        }
        let a = super::to_canonical_vec(&serde_json::json!({"z": a, "a": [1, {"y": 1, "b": 2}]}))
            .unwrap();
        let b = super::to_canonical_vec(&serde_json::json!({"a": [1, {"b": 2, "y": 1}], "z": b}))
            .unwrap();
        assert_eq!(a, b);
        assert!(String::from_utf8(a)
            .unwrap()
            .starts_with("{\"a\":[1,{\"b\":2,\"y\":1}]"));
    }
}
