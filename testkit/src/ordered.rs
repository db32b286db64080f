//! [`Ordered`]: a JSON object of strings read with its keys in document order, for tests
//! that compare fields in the order a device sent them. serde_json's `Map` sorts its keys
//! (its `preserve_order` feature would change that for every crate of the workspace).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// `{"V": "12800", "I": "150"}` as `[("V", "12800"), ("I", "150")]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ordered(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_entry::<String, String>()? {
                    fields.push(field);
                }
                Ok(Ordered(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_values_must_be_strings() {
        let o: Ordered = serde_json::from_str(r#"{"V":"12800","I":"150","CS":"3"}"#).unwrap();
        let keys: Vec<&str> = o.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["V", "I", "CS"]);
        assert_eq!(o.0[1].1, "150");
        let err = serde_json::from_str::<Ordered>(r#"{"V":12800}"#).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }
}
