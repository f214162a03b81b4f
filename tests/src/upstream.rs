//! Remote hosts for the sandbox network tests, on this machine's loopback
//! (the server dials them; a container reaches them only through its
//! agent's proxy): a small HTTP server, and a PyPI-style simple index
//! serving one wheel built here.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The package the index serves, and what importing it shows.
pub const PACKAGE: &str = "crogia-hello";
pub const MODULE: &str = "crogia_hello";
pub const GREETING: &str = "hello through the sandbox proxy";
/// What `/` answers.
pub const HELLO: &str = "hello from upstream";
/// Bytes `/big` answers with.
pub const BIG: usize = 4 << 20;
/// Most bytes `/size/{bytes}` answers with.
pub const MAX_SIZE: usize = 256 << 20;

/// An HTTP server on 127.0.0.1 counting the requests it answered.
pub struct Upstream {
    pub port: u16,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    hits: Arc<AtomicUsize>,
    wheel: Arc<Vec<u8>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            hits: hits.clone(),
            wheel: Arc::new(wheel()),
        };
        let app = Router::new()
            .route(
                "/",
                get(|State(s): State<Shared>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    HELLO
                }),
            )
            .route(
                "/big",
                get(|State(s): State<Shared>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    vec![b'x'; BIG]
                }),
            )
            .route(
                "/size/{bytes}",
                get(
                    |State(s): State<Shared>, Path(bytes): Path<usize>| async move {
                        s.hits.fetch_add(1, Ordering::SeqCst);
                        vec![b'x'; bytes.min(MAX_SIZE)]
                    },
                ),
            )
            .route(
                &format!("/simple/{PACKAGE}/"),
                get(|State(s): State<Shared>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let digest = hex(&Sha256::digest(s.wheel.as_slice()));
                    let name = wheel_name();
                    axum::response::Html(format!(
                        "<!DOCTYPE html><html><body>\
                         <a href=\"/files/{name}#sha256={digest}\">{name}</a>\
                         </body></html>"
                    ))
                }),
            )
            .route(
                &format!("/files/{}", wheel_name()),
                get(|State(s): State<Shared>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    s.wheel.as_ref().clone()
                }),
            )
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, hits, task }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn wheel_name() -> String {
    format!("{MODULE}-1.0-py3-none-any.whl")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A pure-Python wheel: one module, its metadata, and a RECORD of both.
fn wheel() -> Vec<u8> {
    let info = format!("{MODULE}-1.0.dist-info");
    let files = [
        (
            format!("{MODULE}/__init__.py"),
            format!("GREETING = {GREETING:?}\n"),
        ),
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n"),
        ),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: crogia-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_string(),
        ),
    ];
    let mut record = String::new();
    for (path, content) in &files {
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(content.as_bytes()));
        record.push_str(&format!("{path},sha256={digest},{}\n", content.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (path, content) in files
        .iter()
        .map(|(p, c)| (p.clone(), c.clone()))
        .chain([(format!("{info}/RECORD"), record)])
    {
        zip.start_file(path, options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}
