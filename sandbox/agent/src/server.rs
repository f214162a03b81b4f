//! The agent's HTTP/2 server: every connection (one per `connect` bridge) is
//! served with hyper; each request is one task, dropped (and its command
//! killed) when the server side of the stream is reset.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;

use crate::protocol::{self, ErrorBody, ExecRequest, Ping};

/// Serves every connection `listener` accepts, until the process ends.
pub async fn serve(listener: UnixListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(stream));
    }
}

/// Serves HTTP/2 on one connection until the peer closes it.
pub async fn serve_connection(io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
    let service = hyper::service::service_fn(handle);
    if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        eprintln!("crogia-agent: connection ended: {e}");
    }
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, protocol::PING) => json(
            StatusCode::OK,
            &Ping {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
            },
        ),
        (&Method::POST, protocol::EXEC) => match body::<ExecRequest>(request).await {
            Err(response) => response,
            Ok(exec) => match crate::exec::run(&exec).await {
                Ok(done) => json(StatusCode::OK, &done),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot run the command: {e}"),
                ),
            },
        },
        (_, path) => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    };
    Ok(response)
}

/// The request's JSON body as `T`, or the answer that refuses it.
async fn body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(request.into_body(), protocol::MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| error(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, format!("body: {e}")))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("responses serialise");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn error(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    json(status, &ErrorBody { error })
}
