//! Reading HTTP answers with a size limit: a misbehaving (or hostile) server answering with an
//! endless body must not exhaust a function's memory. Every JSON or text answer our clients
//! keep goes through [`read_capped`]; job logs are streamed instead (never held whole).

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::sync::OnceLock;
use std::time::Duration;

/// How long any of our HTTP clients waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's one HTTP client, built on first use and shared by every adapter (GitLab,
/// OAuth, Slack, Mattermost). Why one: building a client loads and parses the TLS root
/// certificates, a few milliseconds each time, all of it in a cold start; one client also
/// keeps one connection pool. Timeouts are per request (each adapter sets its own).
pub fn shared_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("chatops/", env!("CARGO_PKG_VERSION")))
                .build()
                // Building fails only when the TLS backend cannot start; the default client
                // then fails each request with the reason, which the adapters report.
                .unwrap_or_default()
        })
        .clone()
}

/// The largest JSON answer a GitLab API call may have (lists are paginated at 100 items).
pub const MAX_GITLAB_JSON: usize = 16 * 1024 * 1024;
/// The largest answer Slack's or Mattermost's APIs may have.
pub const MAX_CHAT_JSON: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer could not be read")]
    Body(#[source] reqwest::Error),
}

/// The whole body, or `TooLarge` as soon as it passes `max` bytes.
pub async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge(max));
    }
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Body)?;
        if out.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// As text (lossy UTF-8), for answers whose text is all that is kept.
pub async fn read_capped_text(resp: reqwest::Response, max: usize) -> Result<String, ReadError> {
    let b = read_capped(resp, max).await?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `head` and then `chunks` × 64 KiB of `x`.
    async fn server(head: &'static str, chunks: usize) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..chunks {
                        let line = format!("{:x}\r\n", chunk.len());
                        if sock.write_all(line.as_bytes()).await.is_err()
                            || sock.write_all(&chunk).await.is_err()
                            || sock.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                    }
                    let _ = sock.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_the_limit() {
        const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let url = server(CHUNKED, 1000).await;
        let resp = reqwest::get(&url).await.unwrap();
        assert!(matches!(
            read_capped(resp, 1024 * 1024).await,
            Err(ReadError::TooLarge(_))
        ));
        let small = server(CHUNKED, 2).await;
        let resp = reqwest::get(&small).await.unwrap();
        assert_eq!(
            read_capped(resp, 1024 * 1024).await.unwrap().len(),
            128 * 1024
        );
        // A declared length over the limit is refused before reading.
        const DECLARED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n";
        let resp = reqwest::get(&server(DECLARED, 0).await).await.unwrap();
        assert!(matches!(
            read_capped(resp, 1024).await,
            Err(ReadError::TooLarge(_))
        ));
    }
}
