//! The operators' HTTP port: `GET /metrics` (OpenMetrics text, `metrics`) and
//! `GET /` (the live dashboard, `dashboard`), served by hyper's HTTP/1 server.
//! Bounded: at most [`HTTP_CONNECTIONS_MAX`] connections, 16 KiB of request
//! head, 10 s to send it. Not compiled in the simulator (no operators there).
//!
//! Must not touch: what the numbers are (`metrics`), the Redis port (`server`).

use crate::shared::Shared;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// HTTP connections served at once; more are closed on accept.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// Bytes of request head (line and headers) hyper buffers.
const REQUEST_HEAD_MAX_BYTES: usize = 16 << 10;
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve the HTTP port until the listener fails for good.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= HTTP_CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let shared = shared.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&shared, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_HEAD_TIMEOUT)
                .max_buf_size(REQUEST_HEAD_MAX_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("http connection ended: {e}");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The response to `method path`.
fn respond(shared: &Shared, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
    }
    match path {
        "/metrics" => with_type(
            Response::new(Full::new(Bytes::from(crate::metrics::render(shared)))),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/" => with_type(
            Response::new(Full::new(Bytes::from_static(
                crate::dashboard::PAGE.as_bytes(),
            ))),
            "text/html; charset=utf-8",
        ),
        "/status.json" => with_type(
            Response::new(Full::new(Bytes::from(crate::dashboard::status_json(
                shared,
            )))),
            "application/json",
        ),
        _ => plain(StatusCode::NOT_FOUND, "not found; try /metrics or /\n"),
    }
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = with_type(
        Response::new(Full::new(Bytes::from_static(text.as_bytes()))),
        "text/plain; charset=utf-8",
    );
    *response.status_mut() = status;
    response
}
