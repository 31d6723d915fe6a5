//! Every key the parser accepts, read from the raw serde structs themselves rather than from a list kept
//! by hand, so that a key added to a `Raw*` struct shows up here (and in the test that holds the README's
//! configuration reference to it) without anyone remembering to add it.
//!
//! How: `#[derive(Deserialize)]` hands a struct's field names to `Deserializer::deserialize_struct`. The
//! [`Walker`] below is a deserializer that records them, then feeds the derived visitor each field in turn
//! with a walker for that field's path, so nested tables, arrays of tables and options are followed down.
//! Scalars get a placeholder value; nothing is read from any file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::raw::*;
use crate::sections::SECTIONS;

/// How a key is written in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `[path]` or `path = { ... }`: a table with known keys.
    Table,
    /// `[[path]]` or `path = [{ ... }]`: an array of tables with known keys.
    ArrayOfTables,
    /// Anything else: a string, number, boolean, array of those, or a table whose keys are free (`env`).
    Value,
}

/// Every accepted key as a full dotted path (`service.listener.rule.priority`), array indices left out,
/// with its kind. Sections (`service`) and sub-tables (`service.listener`) are keys too.
pub fn known_keys() -> Result<BTreeMap<String, KeyKind>, String> {
    let keys = RefCell::new(BTreeMap::new());
    for section in SECTIONS {
        let walker = Walker {
            path: (*section).to_string(),
            in_array: false,
            keys: &keys,
        };
        walk_section(section, walker).map_err(|e| e.0)?;
    }
    Ok(keys.into_inner())
}

/// The raw struct of each top-level section. `sections::split` deserializes the same types; a section it
/// accepts must be listed in `SECTIONS`, and one listed there but missing here is an error, not a gap.
fn walk_section(section: &str, w: Walker) -> Result<(), WalkError> {
    match section {
        "admin" => RawAdmin::deserialize(w).map(drop),
        "fleet" => RawFleet::deserialize(w).map(drop),
        "access_log" => RawAccessLog::deserialize(w).map(drop),
        "limits" => RawLimits::deserialize(w).map(drop),
        "service" => Vec::<RawService>::deserialize(w).map(drop),
        "target_group" => Vec::<RawTargetGroup>::deserialize(w).map(drop),
        "scaling_group" => Vec::<RawScalingGroup>::deserialize(w).map(drop),
        "network" => RawNetwork::deserialize(w).map(drop),
        "auth_policy" => Vec::<RawAuthPolicy>::deserialize(w).map(drop),
        "jwt_issuer" => Vec::<RawJwtIssuer>::deserialize(w).map(drop),
        other => Err(WalkError(format!(
            "section `{other}` is in sections::SECTIONS but keys.rs does not know its raw struct"
        ))),
    }
}

/// Types with a hand-written `Deserialize` call `deserialize_any` and decide what they got from the value,
/// so their keys cannot be captured from a field list. Each is described here by the derived struct it
/// deserializes its table form into; one that is not gets an error naming its path.
fn walk_custom(w: &Walker) -> Result<(), WalkError> {
    match w.path.as_str() {
        // `RawTarget`: `"ip:port"` or `{ address, weight }`, the table read as `RawTargetTable`.
        "target_group.targets" => RawTargetTable::deserialize(w.clone()).map(drop),
        path => Err(WalkError(format!(
            "`{path}` has a hand-written Deserialize: describe its keys in keys.rs walk_custom"
        ))),
    }
}

#[derive(Clone)]
struct Walker<'a> {
    path: String,
    /// An element of an array: a struct here makes the path an array of tables.
    in_array: bool,
    keys: &'a RefCell<BTreeMap<String, KeyKind>>,
}

impl Walker<'_> {
    fn record(&self, kind: KeyKind) {
        self.keys.borrow_mut().insert(self.path.clone(), kind);
    }

    fn leaf(&self) {
        self.record(KeyKind::Value);
    }

    fn field(&self, name: &str) -> Self {
        Walker {
            path: format!("{}.{name}", self.path),
            in_array: false,
            keys: self.keys,
        }
    }
}

#[derive(Debug)]
struct WalkError(String);

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl de::Error for WalkError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WalkError(msg.to_string())
    }
}

/// Scalars: record a value key and hand the visitor a placeholder of the type it asked for.
macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
            self.leaf();
            visitor.$visit($($value)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Walker<'_> {
    type Error = WalkError;

    leaf! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char(' '),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_unit => visit_unit(),
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        walk_custom(&self)?;
        // Every custom type described in walk_custom also takes a string; that ends this value.
        visitor.visit_str("")
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        visitor.visit_seq(OneElement(Some(Walker {
            in_array: true,
            ..self
        })))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.deserialize_seq(visitor)
    }

    /// A map type (`BTreeMap<String, String>`): its keys are the user's, so it is one value key.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        self.leaf();
        visitor.visit_map(Fields {
            fields: &[],
            next: 0,
            walker: self,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WalkError> {
        self.record(if self.in_array {
            KeyKind::ArrayOfTables
        } else {
            KeyKind::Table
        });
        visitor.visit_map(Fields {
            fields,
            next: 0,
            walker: self,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, WalkError> {
        Err(WalkError(format!(
            "`{}` is an enum; raw structs hold strings and validation reads them",
            self.path
        )))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WalkError> {
        visitor.visit_unit()
    }
}

/// A sequence of one element, walked at the array's own path.
struct OneElement<'a>(Option<Walker<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = WalkError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, WalkError> {
        self.0.take().map(|w| seed.deserialize(w)).transpose()
    }
}

/// A struct's fields as map entries: each name, then a walker for that field's path as its value.
struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    walker: Walker<'a>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = WalkError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        let Some(name) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize((*name).into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WalkError> {
        let name = self.fields.get(self.next).ok_or_else(|| {
            WalkError(format!(
                "{}: a value asked for after the last key",
                self.walker.path
            ))
        })?;
        self.next += 1;
        seed.deserialize(self.walker.field(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_nesting_renames_and_the_custom_target() {
        let keys = known_keys().unwrap();
        let kind = |k: &str| keys.get(k).copied();
        assert_eq!(kind("admin"), Some(KeyKind::Table));
        assert_eq!(kind("admin.listen"), Some(KeyKind::Value));
        assert_eq!(kind("service"), Some(KeyKind::ArrayOfTables));
        assert_eq!(kind("service.hosts"), Some(KeyKind::Value));
        // `#[serde(rename = "match")]` and a table nested four deep.
        assert_eq!(
            kind("service.listener.rule.match.headers"),
            Some(KeyKind::ArrayOfTables)
        );
        assert_eq!(
            kind("service.listener.rule.match.path.case_sensitive"),
            Some(KeyKind::Value)
        );
        assert_eq!(kind("scaling_group.policy.type"), Some(KeyKind::Value));
        assert_eq!(kind("scaling_group.launch.env"), Some(KeyKind::Value));
        assert_eq!(kind("target_group.targets"), Some(KeyKind::ArrayOfTables));
        assert_eq!(kind("target_group.targets.weight"), Some(KeyKind::Value));
        // Rust field names never leak through a rename.
        assert_eq!(kind("service.listener.rule.matcher"), None);
        assert_eq!(kind("scaling_group.policy.kind"), None);
    }

    #[test]
    fn a_custom_deserialize_without_a_description_is_an_error() {
        // Stands in for a future hand-written Deserialize at a path walk_custom does not know.
        struct Opaque;
        impl<'de> Deserialize<'de> for Opaque {
            fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(de::IgnoredAny).map(|_| Opaque)
            }
        }
        let keys = RefCell::new(BTreeMap::new());
        let walker = Walker {
            path: "service.mystery".into(),
            in_array: false,
            keys: &keys,
        };
        let Err(e) = Opaque::deserialize(walker) else {
            panic!("walked an undescribed custom type");
        };
        assert!(e.0.contains("service.mystery"), "{e}");
    }
}
