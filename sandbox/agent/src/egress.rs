//! The sandbox's way out: an HTTP proxy on the container's own loopback
//! (plain `http://` requests and `CONNECT` tunnels) whose every connection
//! is asked of the server. The container has no network interface but
//! `lo`; the server decides by the session's policy, dials the remote end
//! itself, and carries the bytes over the agent's link. The agent never
//! decides anything and never sees inside a TLS tunnel.
//!
//! - The server follows [`follow`] (`/v1/egress`): each connection a
//!   program asks for is one JSON line.
//! - It answers with [`open`] (`/v1/egress/open`), whose request body is
//!   what the remote end sends and whose answer is what the program sends,
//!   or with [`refuse`] (`/v1/egress/refuse`): the program then gets an
//!   HTTP error whose body says why.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::pipe::{Pipe, pipe};
use crate::protocol::{
    EGRESS_ANSWER_SECS, EgressAsk, EgressRefusal, MAX_EGRESS_WAITING, PROXY_PORT,
};

/// How long a program waits for the server to decide (perhaps asking a
/// person) and dial.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(EGRESS_ANSWER_SECS);
/// Bytes buffered in each direction of a connection.
const TUNNEL_BUFFER: usize = 64 * 1024;
/// Bytes read from a program at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Longest reason phrase sent to a program.
const MAX_REASON: usize = 200;

/// Why a connection is not made, as the program will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: String,
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: &str, message: String) -> Self {
        Self {
            status,
            reason: reason.into(),
            message,
        }
    }
}

type Outcome = Result<DuplexStream, Refused>;

struct Waiting {
    ask: EgressAsk,
    answer: oneshot::Sender<Outcome>,
}

/// Connections waiting for the server, and the server's stream of them.
#[derive(Default)]
struct Hub {
    waiting: HashMap<u64, Waiting>,
    listener: Option<mpsc::Sender<EgressAsk>>,
}

static HUB: LazyLock<Mutex<Hub>> = LazyLock::new(Default::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Removes a waiting connection whose program went away or gave up.
struct Forget(u64);

impl Drop for Forget {
    fn drop(&mut self) {
        HUB.lock().unwrap().waiting.remove(&self.0);
    }
}

/// Asks the server for a connection to `host:port`: the program's end of
/// it, or why not.
pub async fn ask(host: String, port: u16) -> Outcome {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (answer, outcome) = oneshot::channel();
    {
        let mut hub = HUB.lock().unwrap();
        if hub.waiting.len() >= MAX_EGRESS_WAITING {
            return Err(Refused::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many connections waiting",
                format!(
                    "The sandbox's proxy already holds {MAX_EGRESS_WAITING} connections waiting \
                     for the server; try again when some are done.\n"
                ),
            ));
        }
        let ask = EgressAsk { id, host, port };
        if let Some(listener) = &hub.listener {
            // Never full: it holds at most as many as may wait. Closed: the
            // next listener is told every connection still waiting.
            let _ = listener.try_send(ask.clone());
        }
        hub.waiting.insert(id, Waiting { ask, answer });
    }
    let _forget = Forget(id);
    match tokio::time::timeout(ANSWER_TIMEOUT, outcome).await {
        Ok(Ok(outcome)) => outcome,
        _ => Err(Refused::new(
            StatusCode::GATEWAY_TIMEOUT,
            "The server did not answer",
            format!(
                "Crogia's server did not answer this sandbox's request for a connection within \
                 {} s: it may be restarting. Try again.\n",
                ANSWER_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// `/v1/egress`: the connections programs ask for, one JSON line each, as
/// long as the caller reads (a newer caller takes over).
pub fn follow() -> Pipe {
    let (asks, mut next) = mpsc::channel(MAX_EGRESS_WAITING);
    {
        let mut hub = HUB.lock().unwrap();
        for waiting in hub.waiting.values() {
            let _ = asks.try_send(waiting.ask.clone());
        }
        hub.listener = Some(asks.clone());
    }
    let (tx, body) = pipe(16);
    tokio::spawn(async move {
        loop {
            let ask = tokio::select! {
                ask = next.recv() => ask,
                () = tx.closed() => None,
            };
            let Some(ask) = ask else { break };
            let mut line = serde_json::to_vec(&ask).expect("asks serialise");
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                break;
            }
        }
        let mut hub = HUB.lock().unwrap();
        if hub
            .listener
            .as_ref()
            .is_some_and(|current| current.same_channel(&asks))
        {
            hub.listener = None;
        }
    });
    body
}

/// `/v1/egress/open`: the server dialled connection `id`; `from_remote` is
/// what the remote end sends. Returns what the program sends, or `None`
/// when no program waits for `id` any more.
pub fn open(id: u64, from_remote: Incoming) -> Option<Pipe> {
    let waiting = HUB.lock().unwrap().waiting.remove(&id)?;
    let (program_end, server_end) = tokio::io::duplex(TUNNEL_BUFFER);
    waiting.answer.send(Ok(program_end)).ok()?;
    let (mut from_program, mut to_program) = tokio::io::split(server_end);
    tokio::spawn(async move {
        let mut from_remote = from_remote;
        while let Some(Ok(frame)) = from_remote.frame().await {
            if let Ok(data) = frame.into_data()
                && to_program.write_all(&data).await.is_err()
            {
                break;
            }
        }
        // The remote end finished sending (or went away): the program reads
        // the end of the stream.
        let _ = to_program.shutdown().await;
    });
    let (tx, body) = pipe(8);
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = from_program.read_buf(&mut buf) => read,
                () = tx.closed() => break,
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(buf.split().freeze()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Some(body)
}

/// `/v1/egress/refuse`: connection `id` is not made. False when no program
/// waits for it any more.
pub fn refuse(refusal: EgressRefusal) -> bool {
    let Some(waiting) = HUB.lock().unwrap().waiting.remove(&refusal.id) else {
        return false;
    };
    let status = StatusCode::from_u16(refusal.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::FORBIDDEN);
    let _ = waiting.answer.send(Err(Refused {
        status,
        reason: refusal.reason,
        message: refusal.message,
    }));
    true
}

/// Serves the proxy on the container's loopback until the process ends.
pub async fn serve_proxy() {
    let listener = match TcpListener::bind(("127.0.0.1", PROXY_PORT)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "crogia-agent: no egress proxy: cannot listen on 127.0.0.1:{PROXY_PORT}: {e}"
            );
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(proxy);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

async fn proxy(request: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    Ok(if request.method() == Method::CONNECT {
        connect(request).await
    } else {
        forward(request).await
    })
}

/// The host (without IPv6 brackets) and port a request is for.
fn target(uri: &hyper::Uri, default_port: u16) -> Option<(String, u16)> {
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| {
        (
            host.to_string(),
            authority.port_u16().unwrap_or(default_port),
        )
    })
}

/// `CONNECT host:port`: a tunnel (HTTPS, or anything else over TCP).
async fn connect(mut request: Request<Incoming>) -> Response<ProxyBody> {
    let Some((host, port)) = target(request.uri(), 443) else {
        return refused(not_proxy_request());
    };
    let mut tunnel = match ask(host, port).await {
        Ok(tunnel) => tunnel,
        Err(r) => return refused(r),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let mut upgraded = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut tunnel).await;
        }
    });
    Response::new(Empty::new().map_err(|never| match never {}).boxed())
}

/// `GET http://host/path` (any method): the request sent on its own
/// connection, so that each request is decided by the policy.
async fn forward(mut request: Request<Incoming>) -> Response<ProxyBody> {
    if request.uri().scheme_str() != Some("http") {
        return refused(not_proxy_request());
    }
    let Some((host, port)) = target(request.uri(), 80) else {
        return refused(not_proxy_request());
    };
    let tunnel = match ask(host, port).await {
        Ok(tunnel) => tunnel,
        Err(r) => return refused(r),
    };
    let (mut send, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tunnel)).await {
            Ok(pair) => pair,
            Err(e) => return refused(unreachable(&e)),
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let origin_form = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .expect("a path is a URI");
    *request.uri_mut() = origin_form;
    let headers = request.headers_mut();
    headers.remove("proxy-connection");
    headers.remove(hyper::header::PROXY_AUTHORIZATION);
    match send.send_request(request).await {
        Ok(answer) => answer.map(BodyExt::boxed),
        Err(e) => refused(unreachable(&e)),
    }
}

fn not_proxy_request() -> Refused {
    Refused::new(
        StatusCode::BAD_REQUEST,
        "Not a proxy request",
        "This is the sandbox's egress proxy: it carries http:// requests and CONNECT tunnels \
         (https://) to the hosts the session's network policy allows.\n"
            .into(),
    )
}

fn unreachable(e: &hyper::Error) -> Refused {
    Refused::new(
        StatusCode::BAD_GATEWAY,
        "Bad gateway",
        format!("The remote server's answer could not be read: {e}\n"),
    )
}

/// The answer a program gets for a connection that is not made.
fn refused(r: Refused) -> Response<ProxyBody> {
    let reason: Vec<u8> = r
        .reason
        .bytes()
        .filter(|b| b.is_ascii_graphic() || *b == b' ')
        .take(MAX_REASON)
        .collect();
    let mut answer = Response::new(
        Full::new(Bytes::from(r.message))
            .map_err(|never| match never {})
            .boxed(),
    );
    *answer.status_mut() = r.status;
    let headers = answer.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason) {
        answer.extensions_mut().insert(phrase);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_the_default_port_and_lose_ipv6_brackets() {
        let uri: hyper::Uri = "http://example.org/x".parse().unwrap();
        assert_eq!(target(&uri, 80), Some(("example.org".into(), 80)));
        let uri: hyper::Uri = "[::1]:8443".parse().unwrap();
        assert_eq!(target(&uri, 443), Some(("::1".into(), 8443)));
        let uri: hyper::Uri = "/just/a/path".parse().unwrap();
        assert_eq!(target(&uri, 80), None);
    }

    #[test]
    fn a_refusal_keeps_only_a_printable_reason_phrase() {
        let answer = refused(Refused::new(
            StatusCode::FORBIDDEN,
            "Refused\r\nX-Injected: 1",
            "no\n".into(),
        ));
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        let phrase = answer
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(phrase.as_bytes(), b"RefusedX-Injected: 1");
    }
}
