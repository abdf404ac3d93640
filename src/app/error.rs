//! The command line's error type: what went wrong, said for a person, and the exit code it
//! maps to (2 for usage or configuration, 1 for a runtime failure).

use crate::store;

/// A CLI failure and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input or configuration: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running: exit 1.
    #[error("{0:#}")]
    Runtime(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Runtime(_) => 1,
        }
    }

    pub fn runtime(msg: impl std::fmt::Display) -> Self {
        Self::Runtime(anyhow::anyhow!("{msg}"))
    }
}

impl From<store::StoreError> for CliError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::UnsupportedUrl(_) | store::StoreError::NoHashKey => {
                Self::Usage(e.to_string())
            }
            other => Self::Runtime(anyhow::Error::new(other)),
        }
    }
}
