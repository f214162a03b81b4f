//! Request extractors that answer bad input the way the contract does:
//! `{"detail": "..."}` naming what was wrong, with 422 for a body or query
//! that does not fit, 413 for a body over the limit, and 415 for a body that
//! is not declared as JSON.

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON request body: declared `Content-Type: application/json` (or
/// `application/<something>+json`), and a JSON object that fits `T`.
///
/// The content type is required because it is what a web page cannot send
/// to another site without the browser asking the server first (a CORS
/// preflight): with any content type accepted, a page could post `text/plain`
/// that parses as JSON to a server on the operator's machine (see
/// `guard.rs`). FastAPI, which the contract comes from, refuses them too.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Whether a `Content-Type` value declares JSON.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                match content_type {
                    Some(t) => format!("Content-Type must be application/json, not {t:?}"),
                    None => "Content-Type must be application/json (none was given)".into(),
                },
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body is larger than the server's limit (server.max_body_bytes)",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Could not read the request body: {e}"),
                )
            }
        })?;
        let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Err(unprocessable(
                "Request body is empty; expected a JSON object".into(),
            ));
        };
        // serde reads a struct from an array too (`[]` would pass as `{}`);
        // every body of this API is an object, as the document says.
        if first != b'{' {
            return Err(unprocessable("Request body must be a JSON object".into()));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                unprocessable(format!("Request body is not valid JSON: {inner}"))
            } else if path == "." {
                unprocessable(format!("Invalid request body: {inner}"))
            } else {
                unprocessable(format!("Invalid field `{path}`: {inner}"))
            }
        })?;
        Ok(Self(value))
    }
}

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
    }
}

/// Query parameters; a missing or malformed one is a 422 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Self)
            .map_err(|e| unprocessable(format!("Invalid query parameters: {}", e.into_inner())))
    }
}

impl<T: JsonSchema> OperationInput for ApiQuery<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Query::<T>::operation_input(ctx, operation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        for t in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(t), "{t}");
        }
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "",
        ] {
            assert!(!is_json(t), "{t}");
        }
    }
}

fn unprocessable(detail: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
}

/// Path parameters; one that does not parse (a pid that is not a number) is
/// a 422 naming it.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| unprocessable(format!("Invalid path parameter: {}", e.body_text())))
    }
}

impl<T: JsonSchema> OperationInput for ApiPath<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Path::<T>::operation_input(ctx, operation);
    }
}
