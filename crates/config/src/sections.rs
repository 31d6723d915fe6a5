//! Splits the document into independent units (`[admin]`, each `[[service]]`, each `[[target_group]]`, ...)
//! and deserializes each one on its own, so a type error or unknown key in one unit does not hide the
//! problems in the others.

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{Item, Table, Value};

use crate::diag::Diags;
use crate::raw::*;

/// The document as raw structs. Array entries keep their file index (for key paths); `None` marks an entry
/// that failed to deserialize (already reported).
#[derive(Default)]
pub(crate) struct RawDoc {
    pub admin: Option<RawAdmin>,
    pub fleet: Option<RawFleet>,
    pub access_log: Option<RawAccessLog>,
    pub limits: Option<RawLimits>,
    pub services: Vec<Option<RawService>>,
    pub target_groups: Vec<Option<RawTargetGroup>>,
    pub scaling_groups: Vec<Option<RawScalingGroup>>,
    pub network: Option<RawNetwork>,
    pub auth_policies: Vec<Option<RawAuthPolicy>>,
    pub jwt_issuers: Vec<Option<RawJwtIssuer>>,
    /// Names of target groups that failed to deserialize: references to them are not reported again.
    pub broken_target_groups: Vec<String>,
}

/// The sections a file may have. `split` refuses any other before it looks at the key, so this list is the
/// one place that says what the top level accepts (`keys::known_keys` starts from it).
pub(crate) const SECTIONS: &[&str] = &[
    "admin",
    "fleet",
    "access_log",
    "limits",
    "service",
    "target_group",
    "scaling_group",
    "network",
    "auth_policy",
    "jwt_issuer",
];

/// Takes the document apart (moving, not copying: a large file costs more to copy than to validate).
pub(crate) fn split(root: Table, d: &mut Diags) -> RawDoc {
    let mut doc = RawDoc::default();
    for (key, item) in root {
        let key = key.as_str();
        if !SECTIONS.contains(&key) {
            let meant = crate::diag::closest(key, SECTIONS.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            d.err(
                key,
                format!(
                    "unknown section `{key}`{meant}, expected one of {}",
                    SECTIONS.join(", ")
                ),
            );
            continue;
        }
        match key {
            "admin" => doc.admin = unit(item, key, d),
            "fleet" => doc.fleet = unit(item, key, d),
            "access_log" => doc.access_log = unit(item, key, d),
            "limits" => doc.limits = unit(item, key, d),
            "service" => doc.services = array(item, key, d).into_iter().map(|(_, r)| r).collect(),
            "target_group" => {
                for (name, raw) in array::<RawTargetGroup>(item, key, d) {
                    if let (None, Some(name)) = (&raw, name) {
                        doc.broken_target_groups.push(name);
                    }
                    doc.target_groups.push(raw);
                }
            }
            "scaling_group" => {
                doc.scaling_groups = array(item, key, d).into_iter().map(|(_, r)| r).collect()
            }
            "network" => doc.network = unit(item, key, d),
            "auth_policy" => {
                doc.auth_policies = array(item, key, d).into_iter().map(|(_, r)| r).collect()
            }
            "jwt_issuer" => {
                doc.jwt_issuers = array(item, key, d).into_iter().map(|(_, r)| r).collect()
            }
            // Listed in SECTIONS without an arm here: say so rather than drop the section unread.
            _ => d.err(key, format!("section `{key}` is not handled by this build")),
        }
    }
    doc
}

fn unit<T: DeserializeOwned>(item: Item, path: &str, d: &mut Diags) -> Option<T> {
    let value = match item.into_value() {
        Ok(v) => v,
        Err(_) => return None,
    };
    match T::deserialize(value.into_deserializer()) {
        Ok(v) => Some(v),
        Err(e) => {
            d.serde(path, &e);
            None
        }
    }
}

/// Each element of an array of tables, deserialized separately, with its `name` (if it has a string one).
fn array<T: DeserializeOwned>(
    item: Item,
    key: &str,
    d: &mut Diags,
) -> Vec<(Option<String>, Option<T>)> {
    let elements: Vec<Item> = match item {
        Item::ArrayOfTables(a) => a.into_iter().map(Item::Table).collect(),
        Item::Value(Value::Array(a)) => a.into_iter().map(Item::Value).collect(),
        _ => {
            d.err(key, format!("expected an array of tables ([[{key}]])"));
            return Vec::new();
        }
    };
    elements
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item
                .as_table_like()
                .and_then(|t| t.get("name"))
                .and_then(Item::as_str)
                .map(str::to_string);
            (name, unit(item, &format!("{key}[{i}]"), d))
        })
        .collect()
}
