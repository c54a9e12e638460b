//! The API's error responses: a status and a JSON body `{"error": KIND, "detail": TEXT}`.
//! A client's mistake is always a 4xx; 5xx are kept for the node's own trouble.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::node::NodeError;

/// An error answer: `status` with `{"error": error, "detail": detail}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// The HTTP status (not in the body).
    #[serde(skip)]
    #[schema(ignore)]
    pub status: StatusCode,
    /// A stable, machine-readable kind (`not_found`, `unauthorized`, `malformed_json`, …).
    #[schema(value_type = String)]
    pub error: &'static str,
    /// What went wrong, for a person.
    pub detail: String,
}

impl ApiError {
    /// An error with this status, kind and detail.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self { status, error, detail: detail.into() }
    }

    pub(super) fn bad_request(error: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, detail)
    }

    pub(super) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub(super) fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut r =
            (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let detail = e.to_string();
        match e {
            NodeError::UnknownDownload(_) => Self::not_found(detail),
            NodeError::NoDht => Self::new(StatusCode::CONFLICT, "no_dht", detail),
            NodeError::NoDataDir => Self::new(StatusCode::CONFLICT, "no_data_dir", detail),
            NodeError::DhtTimeout(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "dht_timeout", detail)
            }
            NodeError::Stopped => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "node_stopped", detail)
            }
            NodeError::NoProviders(_) => Self::new(StatusCode::NOT_FOUND, "no_providers", detail),
            NodeError::Dht(_) => Self::new(StatusCode::BAD_GATEWAY, "dht_error", detail),
            NodeError::Signaling { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "signaling_failed", detail)
            }
            NodeError::ShardStuck(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shard_stuck", detail)
            }
            NodeError::Catalog(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "catalog_unavailable", detail)
            }
            NodeError::Listen { .. } | NodeError::Shards(_) | NodeError::Config(_) => {
                Self::internal(detail)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let detail = r.body_text();
        match r {
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("malformed_json", detail),
            JsonRejection::JsonDataError(_) => Self::bad_request("invalid_body", detail),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request bodies are limited to {} bytes",
                    crate::config::API_BODY_MAX_BYTES
                ),
            ),
            // A body that could not be read (cut short, bad chunked encoding): the
            // client's side of the connection.
            _ => Self::bad_request("unreadable_body", detail),
        }
    }
}
