//! What kind of refusal or failure an error is, whichever part raised it: the one word each
//! front door (the API, the pages, the command line) turns into its own answer. The HTTP
//! statuses are chosen once, in `http::error`.

/// The kinds of error the appliance answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request itself is wrong (a malformed body, a name that does not parse).
    BadRequest,
    /// No credential, or one the appliance does not know.
    Unauthorized,
    /// A credential that does not allow this (another node's token, a stale form).
    Forbidden,
    /// What the request names does not exist.
    NotFound,
    /// The request is well-formed, but the state of things does not allow it now.
    Conflict,
    /// Too many attempts: wait.
    TooManyRequests,
    /// The store (or another part) cannot answer now.
    Unavailable,
    /// The appliance failed at something it should not have.
    Internal,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::BadRequest,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::Conflict,
        Kind::TooManyRequests,
        Kind::Unavailable,
        Kind::Internal,
    ];
}

/// An error that knows its kind.
pub trait Kinded: std::fmt::Display {
    fn kind(&self) -> Kind;
}

impl Kinded for crate::store::StoreError {
    fn kind(&self) -> Kind {
        Kind::Unavailable
    }
}

impl Kinded for askama::Error {
    fn kind(&self) -> Kind {
        Kind::Internal
    }
}

impl Kinded for std::fmt::Error {
    fn kind(&self) -> Kind {
        Kind::Internal
    }
}
