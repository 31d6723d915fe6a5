//! What can go wrong talking to the fleet's store.

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No endpoint answered, or the cluster has no quorum: the store cannot be read or written now.
    #[error("fleet store unavailable: {0}")]
    Unavailable(String),
    /// The configuration changed between reading it and writing it.
    #[error("the fleet's configuration changed since revision {0}; read it again and retry")]
    Conflict(i64),
    /// `import` goes into an empty prefix only.
    #[error("{0} already holds a fleet; import goes into an empty prefix (use fleet apply to change it)")]
    NotEmpty(String),
    /// A value under the prefix that trellis did not write (or an older trellis wrote differently).
    #[error("{key}: {message}")]
    Corrupt { key: String, message: String },
}

impl From<etcd_client::Error> for FleetError {
    fn from(e: etcd_client::Error) -> Self {
        FleetError::Unavailable(e.to_string())
    }
}
