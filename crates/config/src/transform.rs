//! A rule's `transform`: what changes between the request trellis routed and the one its target gets,
//! and between the target's response and the client's.

/// Validated: the header names are lower-case, valid, listed once, and none of them is one trellis
/// decides on or sets itself (see `validate::transform`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transform {
    /// Replaces the part of the path that the rule's `match.path.prefix` matched; starts with `/`.
    pub path_prefix: Option<String>,
    /// Applied to the request the target receives.
    pub request_headers: HeaderEdits,
    /// Applied to responses that come from a target (never to trellis's own answers). `add` is empty.
    pub response_headers: HeaderEdits,
}

/// Applied in this order: `remove`, `set`, `add`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// Replace every value of the header with this one.
    pub set: Vec<(String, String)>,
    /// Append this value to the header's.
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}
