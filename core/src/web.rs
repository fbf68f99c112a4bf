//! The HTTP shape our handlers speak: `http::Request<Bytes>` in, `http::Response<String>` out.
//! The Lambda binaries convert from and to `lambda_http`; local mode converts from axum.
//! Keeping the raw bytes matters: signatures are verified over exactly what was sent.

use bytes::Bytes;

pub type HttpRequest = http::Request<Bytes>;
pub type HttpResponse = http::Response<String>;

/// A response with a content type; never fails (the status and header are valid constants).
pub fn response(status: u16, content_type: &str, body: impl Into<String>) -> HttpResponse {
    let mut resp = http::Response::new(body.into());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    response(status, "application/json", value.to_string())
}

pub fn text(status: u16, body: impl Into<String>) -> HttpResponse {
    response(status, "text/plain; charset=utf-8", body)
}

/// A header as a string, if present and valid UTF-8.
pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}
