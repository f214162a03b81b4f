//! The agent's HTTP/2 server: every connection (one per `connect` bridge) is
//! served with hyper; each request is one task, dropped (and its command
//! killed) when the server side of the stream is reset.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;

use crate::checkpoint::{CheckpointError, Store};
use crate::fs::{CONTAINER_ROOT, Workspace, WorkspaceError};
use crate::pipe::{Pipe, pipe};
use crate::protocol::{
    self, CheckpointDiff, CheckpointExport, CheckpointImportQuery, CheckpointLayer,
    CheckpointRestore, CheckpointTake, EgressOpenQuery, EgressRefusal, ErrorBody, ExecRequest,
    PathRequest, Ping, PtyQuery, PtyResize, ReadRequest, SearchRequest, StdioQuery, StdioSpec,
    TailRequest, WriteQuery,
};
use crate::search::{self, SearchError};

/// Serves every connection `listener` accepts, until the process ends.
pub async fn serve(listener: UnixListener) -> std::io::Result<()> {
    // What an import that died left: removed before any import can start;
    // the bundles of whole ones are settled.
    if std::path::Path::new(crate::CHECKPOINT_STORE).is_dir() {
        match Store::open(crate::CHECKPOINT_STORE) {
            Ok(store) => {
                store.remove_unfinished_imports();
                settle_in_background();
            }
            Err(e) => eprintln!("crogia-agent: the checkpoint store: {e}"),
        }
    }
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(stream));
    }
}

/// Serves HTTP/2 on one connection until the peer closes it.
pub async fn serve_connection(io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
    let service = hyper::service::service_fn(handle);
    if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(protocol::link::STREAM_WINDOW)
        .initial_connection_window_size(protocol::link::CONNECTION_WINDOW)
        .max_frame_size(protocol::link::MAX_FRAME)
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        eprintln!("crogia-agent: connection ended: {e}");
    }
}

/// An answer: whole, or a stream that lasts as long as the caller reads.
type Body = Either<Full<Bytes>, Pipe>;

async fn handle(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if request.method() == Method::POST && request.uri().path() == protocol::WATCH {
        return Ok(watch_stream());
    }
    if request.method() == Method::POST && request.uri().path() == protocol::EXEC_STREAM {
        return Ok(match body::<ExecRequest>(request).await {
            Err(response) => response.map(Either::Left),
            Ok(exec) => match crate::exec::stream(&exec) {
                Ok(output) => streaming(output, "application/x-ndjson"),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot run the command: {e}"),
                )
                .map(Either::Left),
            },
        });
    }
    if request.method() == Method::POST && request.uri().path() == protocol::PTY {
        return Ok(pty_stream(request));
    }
    if request.method() == Method::POST && request.uri().path() == protocol::STDIO {
        return Ok(stdio_stream(request));
    }
    if request.method() == Method::POST && request.uri().path() == protocol::EGRESS {
        return Ok(streaming(crate::egress::follow(), "application/x-ndjson"));
    }
    if request.method() == Method::POST && request.uri().path() == protocol::EGRESS_OPEN {
        return Ok(egress_open(request));
    }
    if request.method() == Method::POST && request.uri().path() == protocol::CHECKPOINT_EXPORT {
        return Ok(export(request).await);
    }
    Ok(answer_whole(request).await.map(Either::Left))
}

/// A streamed answer of `content_type`.
fn streaming(body: Pipe, content_type: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(Either::Right(body))
        .expect("a valid response")
}

/// `EGRESS_OPEN`: the server's end of a connection it dialled.
fn egress_open(request: Request<Incoming>) -> Response<Body> {
    let query = request.uri().query().unwrap_or_default();
    let open: EgressOpenQuery = match serde_urlencoded::from_str(query) {
        Ok(q) => q,
        Err(e) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("query: {e}"))
                .map(Either::Left);
        }
    };
    match crate::egress::open(open.id, request.into_body()) {
        Some(body) => streaming(body, "application/octet-stream"),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no connection {} is waiting", open.id),
        )
        .map(Either::Left),
    }
}

/// `WATCH`: batches of workspace changes, one JSON line each, until the
/// caller resets the stream (the watch then stops).
fn watch_stream() -> Response<Body> {
    let mut watch = match crate::watch::watch(std::path::Path::new(CONTAINER_ROOT)) {
        Ok(w) => w,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot watch {CONTAINER_ROOT}: {e}"),
            )
            .map(Either::Left);
        }
    };
    let (tx, body) = pipe(4);
    tokio::spawn(async move {
        loop {
            let changes = tokio::select! {
                changes = crate::watch::next_batch(&mut watch) => changes,
                // The caller went away: stop watching now, not at the next change.
                () = tx.closed() => None,
            };
            let Some(changes) = changes else { break };
            let mut line =
                serde_json::to_vec(&crate::watch::Batch { changes }).expect("batches serialise");
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                break;
            }
        }
    });
    streaming(body, "application/x-ndjson")
}

/// `PTY`: a terminal whose input is the request's body and whose output is
/// the answer's.
fn pty_stream(request: Request<Incoming>) -> Response<Body> {
    let query = request.uri().query().unwrap_or_default();
    let size: PtyQuery = match serde_urlencoded::from_str(query) {
        Ok(q) => q,
        Err(e) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("query: {e}"))
                .map(Either::Left);
        }
    };
    match crate::pty::open(size, request.into_body()) {
        Ok((id, output)) => {
            let mut answer = streaming(output, "application/octet-stream");
            answer
                .headers_mut()
                .insert(protocol::PTY_ID_HEADER, id.into());
            answer
        }
        Err(e) => pty_error(e).map(Either::Left),
    }
}

/// `STDIO`: a program whose stdin is the request's body and whose stdout
/// is the answer's.
fn stdio_stream(request: Request<Incoming>) -> Response<Body> {
    let query = request.uri().query().unwrap_or_default();
    let spec = serde_urlencoded::from_str::<StdioQuery>(query)
        .map_err(|e| e.to_string())
        .and_then(|q| serde_json::from_str::<StdioSpec>(&q.spec).map_err(|e| e.to_string()));
    let spec = match spec {
        Ok(spec) => spec,
        Err(e) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("query: {e}"))
                .map(Either::Left);
        }
    };
    match crate::stdio::open(&spec, request.into_body()) {
        Ok(output) => streaming(output, "application/octet-stream"),
        Err(e) => {
            use crate::stdio::StdioError;
            let status = match e {
                StdioError::TooMany => StatusCode::TOO_MANY_REQUESTS,
                StdioError::BadSpec(_) => StatusCode::UNPROCESSABLE_ENTITY,
                // Not the agent's fault: the program is missing or not runnable.
                StdioError::Spawn { .. } => StatusCode::NOT_FOUND,
            };
            error(status, e.to_string()).map(Either::Left)
        }
    }
}

fn pty_error(e: crate::pty::PtyError) -> Response<Full<Bytes>> {
    use crate::pty::PtyError;
    let status = match e {
        PtyError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        PtyError::NotFound(_) => StatusCode::NOT_FOUND,
        PtyError::BadSize => StatusCode::UNPROCESSABLE_ENTITY,
        PtyError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn answer_whole(request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
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
        (&Method::POST, protocol::FS_READ) => match body::<ReadRequest>(request).await {
            Err(response) => response,
            Ok(r) => on_workspace(move |ws| ws.read(&r.path, r.limit).map_err(Into::into))
                .await
                .map_or_else(|e| e, bytes),
        },
        (&Method::POST, protocol::FS_WRITE) => write(request).await,
        (&Method::POST, protocol::FS_LIST) => match body::<PathRequest>(request).await {
            Err(response) => response,
            Ok(r) => answer(on_workspace(move |ws| Ok(ws.list(&r.path)?)).await),
        },
        (&Method::POST, protocol::FS_STAT) => match body::<PathRequest>(request).await {
            Err(response) => response,
            Ok(r) => answer(on_workspace(move |ws| Ok(ws.stat(&r.path)?)).await),
        },
        (&Method::POST, protocol::FS_REMOVE) => match body::<PathRequest>(request).await {
            Err(response) => response,
            Ok(r) => answer(on_workspace(move |ws| Ok(ws.remove(&r.path)?)).await),
        },
        (&Method::POST, protocol::FS_TAIL) => match body::<TailRequest>(request).await {
            Err(response) => response,
            Ok(r) => answer(on_workspace(move |ws| Ok(ws.tail_lines(&r.path, r.lines)?)).await),
        },
        (&Method::POST, protocol::GLOB) => match body::<SearchRequest>(request).await {
            Err(response) => response,
            Ok(r) => answer(
                on_workspace(move |ws| search::glob(ws, &r.pattern, &r.options, &r.limits)).await,
            ),
        },
        (&Method::POST, protocol::GREP) => match body::<SearchRequest>(request).await {
            Err(response) => response,
            Ok(r) => answer(
                on_workspace(move |ws| search::grep(ws, &r.pattern, &r.options, &r.limits)).await,
            ),
        },
        (&Method::POST, protocol::EGRESS_REFUSE) => match body::<EgressRefusal>(request).await {
            Err(response) => response,
            Ok(r) => {
                let id = r.id;
                if crate::egress::refuse(r) {
                    json(StatusCode::OK, &serde_json::json!({}))
                } else {
                    error(
                        StatusCode::NOT_FOUND,
                        format!("no connection {id} is waiting"),
                    )
                }
            }
        },
        (&Method::POST, protocol::CHECKPOINT_TAKE) => match body::<CheckpointTake>(request).await {
            Err(response) => response,
            Ok(r) => {
                checkpoint(move |store, ws| {
                    store.take(ws, r.parent.as_deref(), &r.message, r.max_file_bytes)
                })
                .await
            }
        },
        (&Method::POST, protocol::CHECKPOINT_DIFF) => match body::<CheckpointDiff>(request).await {
            Err(response) => response,
            Ok(r) => {
                checkpoint(move |store, ws| {
                    store.diff(ws, &r.from, r.to.as_deref(), r.max_file_bytes)
                })
                .await
            }
        },
        (&Method::POST, protocol::CHECKPOINT_RESTORE) => {
            match body::<CheckpointRestore>(request).await {
                Err(response) => response,
                Ok(r) => checkpoint(move |store, ws| store.restore(ws, &r.checkpoint)).await,
            }
        }
        (&Method::POST, protocol::CHECKPOINT_IMPORT) => import(request).await,
        (&Method::POST, protocol::CHECKPOINT_LAYER) => match body::<CheckpointLayer>(request).await
        {
            Err(response) => response,
            Ok(r) => layer(r).await,
        },
        (&Method::POST, protocol::PTY_RESIZE) => match body::<PtyResize>(request).await {
            Err(response) => response,
            Ok(r) => match crate::pty::resize(&r) {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
                Err(e) => pty_error(e),
            },
        },
        (_, path) => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

/// `FS_WRITE`: the path in the query, the content as the body.
async fn write(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or_default();
    let target: WriteQuery = match serde_urlencoded::from_str(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("query: {e}")),
    };
    let data = match Limited::new(request.into_body(), protocol::MAX_WRITE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("body: {e}")),
    };
    answer(on_workspace(move |ws| Ok(ws.write(&target.path, &data)?)).await)
}

/// Runs `f` on the blocking pool with the workspace opened; a refusal
/// becomes the answer that carries it.
async fn on_workspace<T: Send + 'static>(
    f: impl FnOnce(&Workspace) -> Result<T, SearchError> + Send + 'static,
) -> Result<T, Response<Full<Bytes>>> {
    let done = tokio::task::spawn_blocking(move || {
        let ws = Workspace::open(CONTAINER_ROOT).map_err(|e| {
            SearchError::Workspace(WorkspaceError::Io {
                path: CONTAINER_ROOT.into(),
                message: e.to_string(),
            })
        })?;
        f(&ws)
    })
    .await;
    match done {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(fault)) => Err(json(
            StatusCode::BAD_REQUEST,
            &ErrorBody {
                error: fault.to_string(),
                fault: Some(fault),
            },
        )),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the operation failed: {e}"),
        )),
    }
}

/// One checkpoint operation at a time (they share the store's cache and
/// ref, and a restore must not race a snapshot).
static CHECKPOINTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `f` on the blocking pool with the checkpoint store and the
/// workspace opened, one at a time.
async fn checkpoint<T: Serialize + Send + 'static>(
    f: impl FnOnce(&Store, &Workspace) -> Result<T, CheckpointError> + Send + 'static,
) -> Response<Full<Bytes>> {
    let _one = CHECKPOINTS.lock().await;
    let done = tokio::task::spawn_blocking(move || {
        let store = open_store()?;
        let ws = Workspace::open(CONTAINER_ROOT)
            .map_err(|e| CheckpointError::Workspace(e.to_string()))?;
        f(&store, &ws)
    })
    .await;
    checkpoint_answer(done)
}

fn checkpoint_answer<T: Serialize>(
    done: Result<Result<T, CheckpointError>, tokio::task::JoinError>,
) -> Response<Full<Bytes>> {
    match done {
        Ok(Ok(value)) => json(StatusCode::OK, &value),
        Ok(Err(e)) => {
            let status = match e {
                CheckpointError::Unknown(_) => StatusCode::NOT_FOUND,
                CheckpointError::BadId(_) | CheckpointError::BadImport(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                CheckpointError::TooMany => StatusCode::PAYLOAD_TOO_LARGE,
                CheckpointError::Store { .. } | CheckpointError::Workspace(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            error(status, e.to_string())
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the checkpoint operation failed: {e}"),
        ),
    }
}

/// `CHECKPOINT_EXPORT`: the objects are listed first (an unknown or
/// broken checkpoint is refused before anything is sent), then streamed as
/// they are read. Not one at a time with the other checkpoint operations:
/// objects never change once written.
async fn export(request: Request<Incoming>) -> Response<Body> {
    let asked = match body::<CheckpointExport>(request).await {
        Ok(asked) => asked,
        Err(response) => return response.map(Either::Left),
    };
    let compressed = asked.compressed;
    let listed = tokio::task::spawn_blocking(move || {
        let store = open_store()?;
        let objects = store.closure(&asked.checkpoint)?;
        Ok((store, objects))
    })
    .await;
    let (store, objects) = match listed {
        Ok(Ok(listed)) => listed,
        Ok(Err(e)) => return checkpoint_answer::<()>(Ok(Err(e))).map(Either::Left),
        Err(e) => return checkpoint_answer::<()>(Err(e)).map(Either::Left),
    };
    let (tx, body) = pipe(16);
    tokio::task::spawn_blocking(move || {
        // Chunks of the link's largest frame: a fork's 58 MB is a few
        // hundred frames, each relayed (and read ahead) as one.
        let out =
            std::io::BufWriter::with_capacity(protocol::link::MAX_FRAME as usize, ChunkSender(tx));
        // A failure ends the stream early; the importer finds the
        // checkpoint incomplete and says so.
        if let Err(e) = store.export(&objects, compressed, out) {
            eprintln!("crogia-agent: export: {e}");
        }
    });
    streaming(body, "application/x-tar")
}

/// Bytes written to it are sent to a streamed answer (from a blocking
/// thread); once the caller has gone, writing fails.
struct ChunkSender(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `CHECKPOINT_IMPORT`: the body, streamed into the store as it comes.
async fn import(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let query = request.uri().query().unwrap_or_default();
    let target: CheckpointImportQuery = match serde_urlencoded::from_str(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("query: {e}")),
    };
    let chunks = http_body_util::BodyDataStream::new(request.into_body())
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let input = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(chunks));
    let _one = CHECKPOINTS.lock().await;
    let done = tokio::task::spawn_blocking(move || {
        let store = open_store()?;
        if !target.restore {
            return store.import(input, &target.checkpoint, None);
        }
        let ws = Workspace::open(CONTAINER_ROOT)
            .map_err(|e| CheckpointError::Workspace(e.to_string()))?;
        store.import(input, &target.checkpoint, Some(&ws))
    })
    .await;
    if matches!(done, Ok(Ok(_))) {
        settle_in_background();
    }
    checkpoint_answer(done)
}

/// `CHECKPOINT_LAYER`: this container's store and workspace made a copy
/// of the parent's checkpoint (this is a fork layer's builder). Its store
/// is not settled after: the builder is removed as soon as this answers.
async fn layer(asked: CheckpointLayer) -> Response<Full<Bytes>> {
    let _one = CHECKPOINTS.lock().await;
    let done = tokio::task::spawn_blocking(move || {
        let source = Store::open_read_only(crate::LAYER_SOURCE_STORE)?;
        let source = match base(
            crate::LAYER_SOURCE_BASE_STORE,
            crate::LAYER_SOURCE_BASE_FILES,
        )? {
            Some(base) => source.with_base(base),
            None => source,
        };
        // Without the parent's files, every file is written from the objects.
        let live = Workspace::open(crate::LAYER_SOURCE_WORKSPACE).ok();
        let ws = Workspace::open(CONTAINER_ROOT)
            .map_err(|e| CheckpointError::Workspace(e.to_string()))?;
        let mut store = Store::open(crate::CHECKPOINT_STORE)?;
        store.copy_checkpoint(&source, live.as_ref(), &asked.checkpoint, &ws)
    })
    .await;
    checkpoint_answer(done)
}

/// The container's checkpoint store, reading what it lacks from the
/// fork's base when the container has one ([`crate::CHECKPOINT_BASE`]).
fn open_store() -> Result<Store, CheckpointError> {
    let store = Store::open(crate::CHECKPOINT_STORE)?;
    Ok(
        match base(crate::CHECKPOINT_BASE_STORE, crate::CHECKPOINT_BASE_FILES)? {
            Some(base) => store.with_base(base),
            None => store,
        },
    )
}

/// A fork's base: the layer's store at `store`, reading its checkpoint's
/// file blobs from the layer's files at `files` (when mounted); `None`
/// when there is none.
fn base(store: &str, files: &str) -> Result<Option<Store>, CheckpointError> {
    if !std::path::Path::new(store).is_dir() {
        return Ok(None);
    }
    let base = Store::open_read_only(store)?;
    if !std::path::Path::new(files).is_dir() {
        return Ok(Some(base));
    }
    Ok(Some(base.with_files(files)?))
}

/// Settles the bundles imports left ([`Store::settle_bundles`]) on a
/// thread of its own at idle priority (`SCHED_IDLE`: it runs only when
/// nothing else in the sandbox wants the CPU), one settling at a time.
fn settle_in_background() {
    static SETTLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    std::thread::spawn(|| {
        let _one = SETTLING.lock().unwrap_or_else(|e| e.into_inner());
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's policy (pid 0) from a valid
        // parameter; a failure leaves it at the default priority.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        match Store::open(crate::CHECKPOINT_STORE).and_then(|s| s.settle_bundles()) {
            Ok(0) => {}
            Ok(n) => eprintln!("crogia-agent: settled {n} imported objects as loose files"),
            Err(e) => eprintln!("crogia-agent: settling imported objects: {e}"),
        }
    });
}

fn answer<T: Serialize>(done: Result<T, Response<Full<Bytes>>>) -> Response<Full<Bytes>> {
    done.map_or_else(|e| e, |value| json(StatusCode::OK, &value))
}

fn bytes(data: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(data)))
        .expect("a valid response")
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
    json(status, &ErrorBody { error, fault: None })
}
