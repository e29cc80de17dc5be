//! Every error the HTTP side answers, turned into a status in one place (`status`), and into
//! JSON for the API (`ApiError`) or a page for the web (`PageError`). A handler returns a
//! domain error; which status it gets follows from its kind, the same on both fronts.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::error;

use crate::error::{Kind, Kinded};

/// The HTTP status of each kind.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::BadRequest => StatusCode::BAD_REQUEST,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The title of each kind's error page.
fn title(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest => "Not understood",
        Kind::Unauthorized => "Sign in",
        Kind::Forbidden => "Not allowed",
        Kind::NotFound => "Not found",
        Kind::Conflict | Kind::TooManyRequests => "Not done",
        Kind::Unavailable => "Store unavailable",
        Kind::Internal => "Page error",
    }
}

/// An error as the API answers it: its kind's status and `{"error": "why"}`.
#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
}

impl<E: Kinded> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self.kind, Kind::Unavailable | Kind::Internal) {
            error!(error = %self.message, "HTTP request failed");
        }
        (
            status(self.kind),
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// An error as the pages show it: its kind's status and a page that says why.
#[derive(Debug)]
pub struct PageError {
    pub kind: Kind,
    pub message: String,
}

impl<E: Kinded> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl PageError {
    pub fn new(kind: Kind, message: impl Into<String>) -> PageError {
        PageError {
            kind,
            message: message.into(),
        }
    }

    /// Nothing by that name: `no {what}`.
    pub fn not_found(what: impl std::fmt::Display) -> PageError {
        PageError::new(Kind::NotFound, format!("no {what}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = status(self.kind);
        if status.is_server_error() {
            error!(error = %self.message, "status page failed");
        }
        super::pages::error_page(status, title(self.kind), &self.message)
    }
}

/// An error of a given kind with a message of its own, for the few refusals that belong to
/// the HTTP side itself (a form that is not one of the pages', a cross-site post).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: Kind,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: Kind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl Kinded for Refusal {
    fn kind(&self) -> Kind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind gets the same status from the API and from the pages.
    #[tokio::test]
    async fn each_kind_has_one_status_on_both_fronts() {
        let want = [
            (Kind::BadRequest, 400),
            (Kind::Unauthorized, 401),
            (Kind::Forbidden, 403),
            (Kind::NotFound, 404),
            (Kind::Conflict, 409),
            (Kind::TooManyRequests, 429),
            (Kind::Unavailable, 503),
            (Kind::Internal, 500),
        ];
        assert_eq!(want.len(), Kind::ALL.len());
        for (kind, code) in want {
            let api = ApiError::from(Refusal::new(kind, "why <b>"));
            let resp = api.into_response();
            assert_eq!(resp.status().as_u16(), code, "{kind:?} API");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], "why <b>");
            let page = PageError::from(Refusal::new(kind, "why <b>")).into_response();
            assert_eq!(page.status().as_u16(), code, "{kind:?} page");
            let body = axum::body::to_bytes(page.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains("why &#60;b&#62;"),
                "escaped on the page: {text}"
            );
        }
    }
}
