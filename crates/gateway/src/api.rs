//! The OpenAI wire format at the gateway's edge: validating requests and shaping errors.
//!
//! Requests are kept as JSON values so that every field a client sends (`tools`,
//! `tool_choice`, `response_format`, `stop`, `n`, `stream_options`, and fields added after
//! this was written) reaches an OpenAI-compatible upstream unchanged; only the fields the
//! gateway itself needs are checked.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    /// The path below the provider's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The whole body, as sent.
    pub body: Value,
    /// Public model name.
    pub model: String,
    /// Whether the client wants a stream.
    pub stream: bool,
    /// Whether a streaming client asked for the usage chunk.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u32>,
    /// `n`.
    pub n: u32,
    /// Prompt tokens, estimated at four characters per token (the rule of thumb OpenAI
    /// documents for English text) plus a few per chat message for its framing.
    pub prompt_tokens: u32,
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
    /// OpenAI's error type.
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 for a bad request field.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// 404 for a model the gateway does not serve.
    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// 401 for a request without a valid key.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Missing or incorrect API key: send `Authorization: Bearer <key>` with a key this gateway knows.".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 429 for a key over its rate of `what` (`requests` or `tokens`).
    pub fn rate_limited(
        key: &str,
        what: &'static str,
        per_minute: f64,
        retry_after_s: u64,
    ) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Rate limit reached for key `{key}` ({per_minute} {what} per minute). Try again in {retry_after_s} s."
            ),
            kind: what,
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "The request body is larger than this gateway's limit of {limit} bytes."
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// 404 for an unknown path.
    pub fn no_route(path: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("Unknown request URL: {path}."),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// 503 when every deployment tried failed, naming them and why.
    pub fn all_failed(model: &str, tried: &[String]) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: if tried.is_empty() {
                format!("No deployment of `{model}` is available.")
            } else {
                format!(
                    "Every deployment of `{model}` that was tried failed: {}.",
                    tried.join("; ")
                )
            },
            kind: "api_error",
            param: None,
            code: Some("all_deployments_failed"),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

fn positive(body: &Value, field: &str) -> Result<Option<u32>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n >= 1)
            .map(|n| Some(n.min(u64::from(u32::MAX)) as u32))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("`{field}` must be an integer of at least 1, not {v}"),
                    Some(field),
                )
            }),
    }
}

fn text_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_len).sum(),
        Value::Object(o) => o.values().map(text_len).sum(),
        _ => 0,
    }
}

/// Validates a request body for `endpoint`.
///
/// # Errors
/// A 400 [`ApiError`] naming the field at fault.
pub fn parse(endpoint: Endpoint, bytes: &[u8]) -> Result<ApiRequest, ApiError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("The request body is not valid JSON: {e}"), None))?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("The request body must be a JSON object.", None))?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "`model` must be a non-empty string.",
                Some("model"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "You must provide a model parameter.",
                Some("model"),
            ))
        }
    };
    let prompt_chars = match endpoint {
        Endpoint::Chat => {
            let msgs = obj
                .get("messages")
                .ok_or_else(|| {
                    ApiError::invalid("Missing required parameter: 'messages'.", Some("messages"))
                })?
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid("`messages` must be a non-empty array.", Some("messages"))
                })?;
            for (i, m) in msgs.iter().enumerate() {
                if m.get("role").and_then(Value::as_str).is_none() {
                    return Err(ApiError::invalid(
                        format!("`messages[{i}].role` must be a string."),
                        Some(&format!("messages[{i}].role")),
                    ));
                }
            }
            text_len(&Value::Array(msgs.clone())) + 16 * msgs.len()
        }
        Endpoint::Completions => match obj.get("prompt") {
            Some(p @ (Value::String(_) | Value::Array(_))) => text_len(p),
            Some(_) => {
                return Err(ApiError::invalid(
                    "`prompt` must be a string or an array.",
                    Some("prompt"),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "Missing required parameter: 'prompt'.",
                    Some("prompt"),
                ))
            }
        },
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "`stream` must be a boolean.",
                Some("stream"),
            ))
        }
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_tokens = match positive(&body, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => positive(&body, "max_tokens")?,
    };
    let n = positive(&body, "n")?.unwrap_or(1);
    Ok(ApiRequest {
        model,
        stream,
        include_usage,
        max_tokens,
        n,
        prompt_tokens: (prompt_chars.div_ceil(4)).clamp(1, u32::MAX as usize) as u32,
        body,
    })
}
