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

/// Convert a `lambda_http` request (body already base64-decoded by lambda_http).
pub fn from_lambda(req: lambda_http::Request) -> HttpRequest {
    let (parts, body) = req.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(s) => Bytes::from(s),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, bytes)
}

/// Convert our response for `lambda_http`.
pub fn to_lambda(resp: HttpResponse) -> lambda_http::Response<lambda_http::Body> {
    let (parts, body) = resp.into_parts();
    lambda_http::Response::from_parts(parts, lambda_http::Body::Text(body))
}
