//! Why an agent's call or an operator's action was not taken, each with its kind
//! (`crate::error`).

use super::*;

/// Why an agent's credential was refused; the refusal is recorded against the MAC it claimed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentAuthError {
    #[error("no agent token (Authorization: Bearer)")]
    NoToken,
    #[error("unknown agent token")]
    UnknownToken,
    #[error("this token belongs to another node, not {0}")]
    OtherNode(MacAddr),
    #[error("token of an earlier boot (replayed); the node has booted since")]
    EarlierBoot,
    #[error("token already carried this boot's report (replayed)")]
    AlreadyReported,
}

impl crate::error::Kinded for AgentAuthError {
    fn kind(&self) -> Kind {
        match self {
            AgentAuthError::NoToken | AgentAuthError::UnknownToken => Kind::Unauthorized,
            _ => Kind::Forbidden,
        }
    }
}

/// Why an agent's call (a report, a question) was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Auth(#[from] AgentAuthError),
    #[error("the call names no node (no MAC)")]
    NoMac,
    #[error("node {0} is not known")]
    UnknownNode(MacAddr),
    /// The node's state does not take this call now.
    #[error("node {mac} is {state}; {what} is not taken now")]
    NotNow {
        mac: MacAddr,
        state: String,
        what: &'static str,
    },
    #[error("node {0} has no slot in the rack plan")]
    NoSlot(MacAddr),
    #[error("no burn-in profile for SKU {0}")]
    NoProfile(String),
    #[error(transparent)]
    Refused(#[from] machine::Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Kinded for AgentError {
    fn kind(&self) -> Kind {
        match self {
            AgentError::Auth(e) => e.kind(),
            AgentError::NoMac => Kind::BadRequest,
            AgentError::Store(_) => Kind::Unavailable,
            AgentError::UnknownNode(_)
            | AgentError::NotNow { .. }
            | AgentError::NoSlot(_)
            | AgentError::NoProfile(_)
            | AgentError::Refused(_) => Kind::Conflict,
        }
    }
}

/// Why an operator's action was not done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no node {0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] machine::Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AgentError {
    fn from(e: sqlx::Error) -> Self {
        AgentError::Store(StoreError::Query(e))
    }
}

impl crate::error::Kinded for ActionError {
    fn kind(&self) -> Kind {
        match self {
            ActionError::NotFound(_) => Kind::NotFound,
            ActionError::Refused(_) => Kind::Conflict,
            ActionError::Store(_) => Kind::Unavailable,
        }
    }
}

impl From<sqlx::Error> for ActionError {
    fn from(e: sqlx::Error) -> Self {
        ActionError::Store(StoreError::Query(e))
    }
}
