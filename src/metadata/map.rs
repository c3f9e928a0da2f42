//! `Metadata`: field name → value, kept as a short sorted list.
//!
//! An item carries a handful of fields, and a first sync holds the desired
//! and the pushed metadata of every item at once. A `BTreeMap` allocates a
//! node of eleven slots however few fields it holds (632 bytes for two);
//! this holds exactly its fields, and iterates and serialises in the same
//! key order, so the state file and step fingerprints read as before.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;

#[derive(Clone, Default, PartialEq)]
pub struct Metadata(Vec<(String, Json)>);

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Metadata(Vec::with_capacity(n))
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&Json> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets `name`, returning the value it replaces.
    pub fn insert(&mut self, name: String, value: Json) -> Option<Json> {
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fields in name order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(n, _)| n)
    }
}

pub type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, Json)>,
    fn(&'a (String, Json)) -> (&'a String, &'a Json),
>;

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a Json);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Later values of a repeated name win, as with a map.
impl FromIterator<(String, Json)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, Json)>>(iter: I) -> Self {
        let mut out = Metadata::new();
        for (n, v) in iter {
            out.insert(n, v);
        }
        out.0.shrink_to_fit();
        out
    }
}

impl<const N: usize> From<[(String, Json); N]> for Metadata {
    fn from(fields: [(String, Json); N]) -> Self {
        fields.into_iter().collect()
    }
}

/// Panics when `name` is absent, as a map does.
impl std::ops::Index<&str> for Metadata {
    type Output = Json;
    fn index(&self, name: &str) -> &Json {
        self.get(name)
            .unwrap_or_else(|| panic!("no metadata field {name:?}"))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of field values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut out = Metadata::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((n, v)) = map.next_entry::<String, Json>()? {
                    out.insert(n, v);
                }
                out.0.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_like_an_ordered_map() {
        let mut m = Metadata::new();
        assert_eq!(m.insert("b".into(), json!(1)), None);
        assert_eq!(m.insert("a".into(), json!("x")), None);
        assert_eq!(m.insert("b".into(), json!(2)), Some(json!(1)));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b"), Some(&json!(2)));
        assert!(m.contains_key("a") && !m.contains_key("c"));
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"a":"x","b":2}"#);
        let back: Metadata = serde_json::from_str(r#"{"b":2,"a":"x"}"#).unwrap();
        assert_eq!(back, m);
        let repeated: Metadata = [("a".to_string(), json!(1)), ("a".to_string(), json!(3))].into();
        assert_eq!(repeated.get("a"), Some(&json!(3)));
        assert_eq!(format!("{m:?}"), r#"{"a": String("x"), "b": Number(2)}"#);
    }
}
