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
    /// The request field that carries its prompt: `messages` or `prompt`.
    pub fn prompt_field(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completions => "prompt",
        }
    }

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
    /// Which of the two fields set [`ApiRequest::max_tokens`], for errors about it.
    pub max_tokens_param: &'static str,
    /// Stop sequences (`stop`), as a string or a list.
    pub stop: Vec<String>,
    /// A feature the request asks for that only a real model can give (log-probabilities,
    /// a forced tool call, structured output, an echoed prompt), as (field, what): an
    /// emulated provider, which writes filler text, refuses it rather than ignore it.
    pub needs_model: Option<(&'static str, &'static str)>,
    /// `n`.
    pub n: u32,
    /// Prompt tokens, estimated at four characters per token (the rule of thumb OpenAI
    /// documents for English text; two of another alphabet, one CJK character or emoji)
    /// plus a few per chat message for its framing, and a fixed count per image; a token id
    /// is one. All of a batch's prompts together.
    pub prompt_tokens: u32,
    /// Prompts in the request: more than one for a completions batch.
    pub prompts: u32,
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

    /// A provider's refusal of the request (a 4xx) whose body is not an error object in
    /// OpenAI's shape: its status, and its body, or the start of it, as the message.
    pub fn upstream_refused(status: StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(500).collect();
        ApiError {
            status,
            message: if text.is_empty() {
                format!(
                    "The provider refused the request with HTTP {}.",
                    status.as_u16()
                )
            } else {
                format!(
                    "The provider refused the request with HTTP {}: {text}",
                    status.as_u16()
                )
            },
            kind: "invalid_request_error",
            param: None,
            code: Some("upstream_refused"),
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
        per_minute: Option<f64>,
        retry_after_s: u64,
    ) -> Self {
        let per_minute = per_minute.unwrap_or(0.0);
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

    /// 429 for a key that has spent more than its dollars a day allow (OpenAI's
    /// `insufficient_quota`), with the seconds until the refill has paid the debt back.
    pub fn insufficient_quota(key: &str, usd_per_day: Option<f64>, retry_after_s: u64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Key `{key}` has spent its ${} a day. Try again in {retry_after_s} s.",
                usd_per_day.unwrap_or(0.0)
            ),
            kind: "insufficient_quota",
            param: None,
            code: Some("insufficient_quota"),
        }
    }

    /// 429 for a request that asks more tokens than its key's whole minute allows (OpenAI's
    /// "Request too large"): no wait admits it, so no `Retry-After` comes with it.
    pub fn request_too_large(key: &str, asked: u64, per_minute: f64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Request too large for key `{key}`: {asked} tokens (the prompt and n x max_tokens) against its limit of {per_minute} tokens per minute. Lower max_tokens or the prompt."
            ),
            kind: "tokens",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 429 for a request that may cost more than its key's whole day allows: no wait admits
    /// it, so no `Retry-After` comes with it.
    pub fn request_too_costly(key: &str, model: &str, usd: f64, per_day: f64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Request too costly for key `{key}`: up to ${usd:.6} (the prompt and n x max_tokens at the dearest deployment of `{model}`) against its budget of ${per_day} a day. Lower max_tokens or the prompt."
            ),
            kind: "insufficient_quota",
            param: None,
            code: Some("insufficient_quota"),
        }
    }

    /// 429 when every deployment tried answered that it is over its rate.
    pub fn providers_busy(model: &str, tried: &[String], retry_after_s: u64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: if tried.is_empty() {
                format!(
                    "Every deployment of `{model}` is resting after asking to slow down (HTTP 429). Try again in {retry_after_s} s."
                )
            } else {
                format!(
                    "Every deployment of `{model}` that was tried is over its rate limit ({}). Try again in {retry_after_s} s.",
                    tried.join("; ")
                )
            },
            kind: "rate_limit_error",
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

    /// 415 for a body in an encoding the gateway does not read (`Content-Encoding: gzip`):
    /// read as it came, it was refused as JSON that is not valid, which sent the client
    /// looking in the wrong place.
    pub fn unsupported_encoding(encoding: &str) -> Self {
        ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "The request body is encoded as `{encoding}`, which this gateway does not read; send it unencoded."
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("unsupported_content_encoding"),
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

    /// 400 for a request longer than every deployment of its model holds (`limit`): its
    /// prompt's tokens and field, and the output's it asks for (`max_tokens` or
    /// `max_completion_tokens`; 0 where it asks none), each named in the message.
    pub fn context_too_long(
        model: &str,
        limit: u32,
        (prompt, prompt_param): (u64, &str),
        (asked, asked_param): (u64, &str),
    ) -> Self {
        // The prompt is at fault where it leaves no room for a token of output, as vLLM
        // names the messages; else the output asked for. The sum is told in its parts.
        let param = if prompt >= u64::from(limit) {
            prompt_param
        } else {
            asked_param
        };
        let asked_part = if asked > 0 {
            format!(", {asked} in `{asked_param}`")
        } else {
            String::new()
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "The maximum context length of `{model}` here is {limit} tokens; the request needs {} ({prompt} in `{prompt_param}`{asked_part}). Shorten the prompt or ask for fewer tokens.",
                prompt + asked
            ),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some("context_length_exceeded"),
        }
    }

    /// 408 for a request body that did not arrive in time.
    pub fn body_timeout(ms: u64) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("The request body did not arrive within {ms} ms."),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_timeout"),
        }
    }

    /// 405 for a known path asked with a method it does not take.
    pub fn wrong_method(method: &str, path: &str) -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{path} does not take {method}; see the `Allow` header."),
            kind: "invalid_request_error",
            param: None,
            code: Some("method_not_allowed"),
        }
    }

    /// 400 for a request whose traffic class (or lack of one) no deployment of the model
    /// takes, naming the classes that are served.
    pub fn class_not_served(model: &str, class: Option<&str>, served: &[&str]) -> Self {
        let asked = match class {
            Some(c) => format!("requests of class `{c}`"),
            None => "requests without a class".to_string(),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "No deployment of `{model}` serves {asked}; send the header `x-switchyard-class` with one of: {}.",
                served.join(", ")
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("class_not_served"),
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

    /// 504: the request's `total_ms` ran out before an answer; no deployment is blamed.
    pub fn timed_out(model: &str, why: &[String]) -> Self {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!(
                "The request to `{model}` ran out of its time: {}.",
                why.join("; ")
            ),
            kind: "api_error",
            param: None,
            code: Some("timeout"),
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
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    format!(
                        "`{field}` must be an integer from 1 to {}, not {v}.",
                        u32::MAX
                    ),
                    Some(field),
                )
            }),
    }
}

/// The boolean `field` holds: false where it is left out or null.
fn boolean(v: Option<&Value>, field: &str) -> Result<bool, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(
            format!("`{field}` must be a boolean."),
            Some(field),
        )),
    }
}

impl ApiRequest {
    /// The most tokens the request may spend, as a key's limit holds it: its prompt, and for
    /// every prompt of a batch its `n` answers of up to `max_tokens` (or its `best_of`
    /// where that asks more to choose them from). The count stops at the most a u64 holds
    /// rather than wrapping to a small one.
    pub fn tokens_asked(&self) -> u64 {
        let best_of = self
            .body
            .get("best_of")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        u64::from(self.prompts.max(1))
            .saturating_mul(u64::from(self.n.max(1)).max(best_of))
            .saturating_mul(u64::from(self.max_tokens.unwrap_or(0)))
            .saturating_add(u64::from(self.prompt_tokens))
    }
}

/// Checks message `i` of a chat beyond its role and content's type, as OpenAI does: an
/// assistant's message without content carries tool calls, a tool's message names the call it
/// answers, a `name` is text, and an array of content parts is not empty and each part is an
/// object of a `type`, a text part with its `text` and an image part with its URL.
fn message_shape(i: usize, m: &Value) -> Result<(), ApiError> {
    let bad = |field: &str, says: &str| {
        let param = format!("messages[{i}]{field}");
        Err(ApiError::invalid(
            format!("`{param}` {says}."),
            Some(&param),
        ))
    };
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    let content = m.get("content").filter(|c| !c.is_null());
    let calls = m.get("tool_calls").is_some_and(Value::is_array);
    if role == "assistant" && content.is_none() && !calls {
        return bad(
            ".content",
            "is required for an `assistant` message without `tool_calls`",
        );
    }
    if role == "tool" && !m.get("tool_call_id").is_some_and(Value::is_string) {
        return bad(
            ".tool_call_id",
            "is required for a `tool` message: the id of the call it answers",
        );
    }
    if m.get("name")
        .is_some_and(|n| !n.is_null() && !n.is_string())
    {
        return bad(".name", "must be a string");
    }
    if let Some(parts) = content.and_then(Value::as_array) {
        if parts.is_empty() {
            return bad(
                ".content",
                "is an empty array; give at least one content part",
            );
        }
        for (j, part) in parts.iter().enumerate() {
            let Some(kind) = part.get("type").and_then(Value::as_str) else {
                return bad(
                    &format!(".content[{j}]"),
                    "must be an object with a string `type`",
                );
            };
            if kind == "text" && !part.get("text").is_some_and(Value::is_string) {
                return bad(
                    &format!(".content[{j}].text"),
                    "is required for a `text` part, as a string",
                );
            }
            // OpenAI's image part is `{"image_url": {"url": ...}}`; vLLM also takes the URL
            // as a bare string, which is let through for the servers that read it.
            let image = part.get("image_url");
            if kind == "image_url"
                && !image
                    .is_some_and(|x| x.is_string() || x.get("url").is_some_and(Value::is_string))
            {
                return bad(
                    &format!(".content[{j}].image_url.url"),
                    "is required for an `image_url` part, as a string (a URL or a data URL)",
                );
            }
        }
    }
    Ok(())
}

/// Checks that `field`, where set, is a number within `lo..=hi` (OpenAI's ranges).
fn in_range(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    lo: f64,
    hi: f64,
) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|x| (lo..=hi).contains(&x)) => Ok(()),
        Some(v) => Err(ApiError::invalid(
            format!("`{field}` must be a number from {lo} to {hi}, not {v}."),
            Some(field),
        )),
    }
}

/// The stop sequences of `stop`: a string, or an array of strings.
fn stop_sequences(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "`stop` must be a string or an array of strings.",
            Some("stop"),
        )
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// The first feature `obj` asks for that needs a real model's output, as (field, what).
fn needs_model(
    endpoint: Endpoint,
    obj: &serde_json::Map<String, Value>,
) -> Option<(&'static str, &'static str)> {
    let truthy = |f: &str| match obj.get(f) {
        Some(Value::Bool(b)) => *b,
        // Completions' `logprobs` counts the alternatives to return; 0 still asks for the
        // chosen tokens' own.
        Some(Value::Number(_)) => true,
        _ => false,
    };
    if truthy("logprobs")
        || obj
            .get("top_logprobs")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 0)
    {
        return Some(("logprobs", "log-probabilities"));
    }
    if endpoint == Endpoint::Completions && truthy("echo") {
        return Some(("echo", "the prompt echoed back"));
    }
    if obj
        .get("best_of")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Some(("best_of", "a best of several completions"));
    }
    if obj
        .get("suffix")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Some(("suffix", "an insertion before a suffix"));
    }
    // `auto` and `none` leave the model free to answer in text, which filler text is.
    match obj.get("tool_choice") {
        Some(Value::String(c)) if c == "required" => return Some(("tool_choice", "a tool call")),
        Some(Value::Object(_)) => return Some(("tool_choice", "a tool call")),
        _ => {}
    }
    // The legacy form: `function_call` naming a function forces a call of it.
    if matches!(obj.get("function_call"), Some(Value::Object(_))) {
        return Some(("function_call", "a function call"));
    }
    match obj
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object" | "json_schema") => {
            Some(("response_format", "structured (JSON) output"))
        }
        _ => None,
    }
}

/// The roles a chat message may have.
const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A completions prompt's count of prompts and their tokens: text at four characters a
/// token, token ids one each; a batch is an array of texts or of arrays of ids. `None` for
/// any other shape.
fn prompt_size(p: &Value) -> Option<(usize, usize)> {
    let ids = |a: &[Value]| a.iter().all(Value::is_u64).then_some(a.len());
    match p {
        Value::String(s) => Some((1, quarters(s).div_ceil(4))),
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => {
            if let Some(n) = ids(a) {
                return Some((1, n));
            }
            a.iter()
                .map(|x| match x {
                    Value::String(s) => Some(quarters(s).div_ceil(4)),
                    Value::Array(t) if !t.is_empty() => ids(t),
                    _ => None,
                })
                .sum::<Option<usize>>()
                .map(|t| (a.len(), t))
        }
        _ => None,
    }
}

/// A text's length in quarters of a token, as tokenizers trained mostly on English split
/// scripts: a quarter for each character of the Latin alphabets (four a token, OpenAI's rule
/// of thumb for English), half a token for one of another alphabet (Greek, Cyrillic,
/// Arabic, the Indic scripts), a whole one for a CJK character or an emoji. Counted at four
/// characters a token, a Chinese prompt took a quarter of the tokens it is.
pub(crate) fn quarters(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0..=0x036F => 1,
            0x0370..=0x2E7F => 2,
            _ => 4,
        })
        .sum()
}

fn text_len(v: &Value) -> usize {
    match v {
        Value::String(s) => quarters(s),
        Value::Array(a) => a.iter().map(text_len).sum(),
        Value::Object(o) => o.values().map(text_len).sum(),
        _ => 0,
    }
}

/// Tokens an image in a chat message stands for: OpenAI's count for a high-detail image of
/// 1024 x 1024 (four 512-pixel tiles at 170 tokens each, and 85 more;
/// <https://platform.openai.com/docs/guides/images-vision>). Its data URL's base64 text is no
/// measure of it.
const IMAGE_TOKENS: usize = 765;

/// A chat request's prompt tokens: each message's text at four characters a token, a few
/// for its framing, and [`IMAGE_TOKENS`] for each image part, whose bytes are not text (an
/// audio part counts as much, a stand-in: its length is not known without decoding it).
fn chat_prompt_tokens(msgs: &[Value]) -> usize {
    let mut chars = 16 * msgs.len();
    let mut tokens = 0;
    for m in msgs {
        let Some(o) = m.as_object() else { continue };
        for (k, v) in o {
            match (k.as_str(), v) {
                ("content", Value::Array(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("image_url" | "input_image" | "input_audio") => {
                                tokens += IMAGE_TOKENS;
                            }
                            // A text part's text, as the same text given as a string: its
                            // `type` is the request's framing, not the model's reading.
                            Some("text") => chars += text_len(&part["text"]),
                            _ => chars += text_len(part),
                        }
                    }
                }
                _ => chars += text_len(v),
            }
        }
    }
    tokens + chars.div_ceil(4)
}

/// Each of a chat request's `tools` as OpenAI takes one: an object whose `type` is
/// `function` (or `custom`) with a table of that name naming the tool; OpenAI refuses the
/// others, naming the element and field at fault as `param`.
fn tool_shapes(tools: Option<&Value>) -> Result<(), ApiError> {
    let Some(Value::Array(tools)) = tools else {
        return Ok(());
    };
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("tools"),
        ));
    }
    for (k, tool) in tools.iter().enumerate() {
        let Some(tool) = tool.as_object() else {
            return Err(ApiError::invalid(
                format!("Invalid type for 'tools[{k}]': expected an object."),
                Some(&format!("tools[{k}]")),
            ));
        };
        let kind = match tool.get("type") {
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: 'tools[{k}].type'."),
                    Some(&format!("tools[{k}].type")),
                ))
            }
            Some(Value::String(t)) if t == "function" || t == "custom" => t.as_str(),
            Some(other) => {
                return Err(ApiError::invalid(
                    format!(
                        "Invalid value: {other}. Supported values are: 'function' and 'custom'."
                    ),
                    Some(&format!("tools[{k}].type")),
                ))
            }
        };
        let Some(table) = tool.get(kind).and_then(Value::as_object) else {
            return Err(ApiError::invalid(
                format!("Missing required parameter: 'tools[{k}].{kind}'."),
                Some(&format!("tools[{k}].{kind}")),
            ));
        };
        let at = |field: &str| format!("tools[{k}].{kind}.{field}");
        match table.get("name") {
            None => {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{}'.", at("name")),
                    Some(&at("name")),
                ))
            }
            Some(Value::String(name)) => {
                // OpenAI's pattern for a tool's name: what a model can write back in a call.
                let ok = (1..=64).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(ApiError::invalid(
                        format!(
                            "Invalid '{}': string does not match pattern. Expected a string of 1 to 64 letters, digits, underscores and dashes.",
                            at("name")
                        ),
                        Some(&at("name")),
                    ));
                }
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("Invalid type for '{}': expected a string.", at("name")),
                    Some(&at("name")),
                ))
            }
        }
        for (field, ok, says) in [
            (
                "parameters",
                matches!(
                    table.get("parameters"),
                    None | Some(Value::Null | Value::Object(_))
                ),
                "an object",
            ),
            (
                "strict",
                matches!(
                    table.get("strict"),
                    None | Some(Value::Null | Value::Bool(_))
                ),
                "a boolean",
            ),
            (
                "description",
                matches!(
                    table.get("description"),
                    None | Some(Value::Null | Value::String(_))
                ),
                "a string",
            ),
        ] {
            if !ok {
                return Err(ApiError::invalid(
                    format!("Invalid type for '{}': expected {says}.", at(field)),
                    Some(&at(field)),
                ));
            }
        }
    }
    Ok(())
}

/// Tokens of the schemas a chat request sends beside its messages (`tools`, the older
/// `functions`, a `response_format` schema): the model reads them as text, rendered into its
/// prompt, so they count as their JSON does, at four characters a token. Left out, a request
/// could carry any amount of prompt past a key's token limit.
fn schema_tokens(obj: &serde_json::Map<String, Value>) -> usize {
    ["tools", "functions", "response_format"]
        .iter()
        .filter_map(|k| obj.get(*k))
        .map(|v| v.to_string().len().div_ceil(4))
        .sum()
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
    let (prompts, prompt_tokens) = match endpoint {
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
                if !m.is_object() {
                    return Err(ApiError::invalid(
                        format!("`messages[{i}]` must be an object with a `role`."),
                        Some(&format!("messages[{i}]")),
                    ));
                }
                match m.get("role").and_then(Value::as_str) {
                    // Only an assistant's message may leave its content out (for its tool
                    // calls).
                    Some(r) if r != "assistant" && matches!(m.get("content"), None | Some(Value::Null)) => {
                        return Err(ApiError::invalid(
                            format!("`messages[{i}].content` is required for a `{r}` message."),
                            Some(&format!("messages[{i}].content")),
                        ))
                    }
                    Some(r) if ROLES.contains(&r) => {}
                    Some(r) => {
                        return Err(ApiError::invalid(
                            format!(
                                "`messages[{i}].role` is `{r}`; it must be one of {}.",
                                ROLES.join(", ")
                            ),
                            Some(&format!("messages[{i}].role")),
                        ))
                    }
                    None => {
                        return Err(ApiError::invalid(
                            format!("`messages[{i}].role` must be a string."),
                            Some(&format!("messages[{i}].role")),
                        ))
                    }
                }
                // Text, an array of content parts, or nothing (an assistant's tool calls).
                if !matches!(
                    m.get("content"),
                    None | Some(Value::Null | Value::String(_) | Value::Array(_))
                ) {
                    return Err(ApiError::invalid(
                        format!("`messages[{i}].content` must be a string or an array of content parts."),
                        Some(&format!("messages[{i}].content")),
                    ));
                }
                message_shape(i, m)?;
            }
            (1, chat_prompt_tokens(msgs) + schema_tokens(obj))
        }
        Endpoint::Completions => match obj.get("prompt") {
            Some(p) => prompt_size(p).ok_or_else(|| {
                ApiError::invalid(
                    "`prompt` must be a string, an array of strings, an array of token ids, or an array of arrays of token ids.",
                    Some("prompt"),
                )
            })?,
            None => {
                return Err(ApiError::invalid(
                    "Missing required parameter: 'prompt'.",
                    Some("prompt"),
                ))
            }
        },
    };
    for (field, lo, hi) in [
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    ] {
        in_range(obj, field, lo, hi)?;
    }
    let stop = stop_sequences(obj.get("stop"))?;
    // Fields whose shape an upstream would refuse: refused here the same way for every
    // provider, emulated ones included.
    for (field, ok, says) in [
        (
            "tools",
            matches!(obj.get("tools"), None | Some(Value::Null | Value::Array(_))),
            "an array of tools",
        ),
        (
            "stream_options",
            matches!(
                obj.get("stream_options"),
                None | Some(Value::Null | Value::Object(_))
            ),
            "an object",
        ),
        (
            "response_format",
            matches!(
                obj.get("response_format"),
                None | Some(Value::Null | Value::Object(_))
            ),
            "an object",
        ),
        (
            "tool_choice",
            matches!(
                obj.get("tool_choice"),
                None | Some(Value::Null | Value::String(_) | Value::Object(_))
            ),
            "a string or an object",
        ),
    ] {
        if !ok {
            return Err(ApiError::invalid(
                format!("`{field}` must be {says}."),
                Some(field),
            ));
        }
    }
    tool_shapes(obj.get("tools"))?;
    // Scalars of the wrong type, which an upstream would refuse.
    for (field, ok, says) in [
        (
            "seed",
            obj.get("seed")
                .is_none_or(|v| v.is_null() || v.is_i64() || v.is_u64()),
            "an integer",
        ),
        (
            "user",
            obj.get("user").is_none_or(|v| v.is_null() || v.is_string()),
            "a string",
        ),
    ] {
        if !ok {
            return Err(ApiError::invalid(
                format!("`{field}` must be {says}."),
                Some(field),
            ));
        }
    }
    boolean(obj.get("parallel_tool_calls"), "parallel_tool_calls")?;
    // A tool choice other than none asks for a tool: with none to choose, OpenAI refuses it.
    let choice = obj.get("tool_choice").filter(|v| !v.is_null());
    let no_tools = obj
        .get("tools")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if choice.is_some_and(|c| c.as_str() != Some("none")) && no_tools {
        return Err(ApiError::invalid(
            "`tool_choice` is only allowed when `tools` are specified.",
            Some("tool_choice"),
        ));
    }
    let stream = boolean(obj.get("stream"), "stream")?;
    // As OpenAI has it, stream options go with a stream.
    if !stream && !matches!(obj.get("stream_options"), None | Some(Value::Null)) {
        return Err(ApiError::invalid(
            "`stream_options` is only allowed when `stream` is true.",
            Some("stream_options"),
        ));
    }
    // A bias is added to a token's logit, from -100 (banned) to 100 (forced); its keys are
    // token ids.
    if let Some(bias) = obj.get("logit_bias").filter(|v| !v.is_null()) {
        let ok = bias.as_object().is_some_and(|b| {
            b.iter().all(|(k, v)| {
                k.parse::<u32>().is_ok()
                    && v.as_f64().is_some_and(|x| (-100.0..=100.0).contains(&x))
            })
        });
        if !ok {
            return Err(ApiError::invalid(
                "`logit_bias` must map token ids to numbers from -100 to 100.",
                Some("logit_bias"),
            ));
        }
    }
    let include_usage = boolean(
        obj.get("stream_options")
            .and_then(|o| o.get("include_usage")),
        "stream_options.include_usage",
    )?;
    let (max_tokens, max_tokens_param) = match positive(&body, "max_completion_tokens")? {
        Some(n) => (Some(n), "max_completion_tokens"),
        None => (positive(&body, "max_tokens")?, "max_tokens"),
    };
    let n = positive(&body, "n")?.unwrap_or(1);
    Ok(ApiRequest {
        model,
        stream,
        include_usage,
        max_tokens,
        max_tokens_param,
        stop,
        needs_model: needs_model(endpoint, obj),
        n,
        prompts: u32::try_from(prompts).unwrap_or(u32::MAX),
        prompt_tokens: prompt_tokens.clamp(1, u32::MAX as usize) as u32,
        body,
    })
}
