//! A streamed answer body fed through a bounded channel. Unlike
//! `http_body_util`'s channel, its sender can wait for the caller to go
//! away ([`mpsc::Sender::closed`]), so work for a caller that reset its
//! stream stops even while it has nothing to send.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::HeaderMap;
use hyper::body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// Bytes read from a source at a time by [`forward`].
const READ_CHUNK: usize = 16 * 1024;

/// The body end: what the sender sends, in order, until it is dropped;
/// then the trailers, where the body has some.
#[derive(Debug)]
pub struct Pipe {
    data: mpsc::Receiver<Bytes>,
    trailers: Option<oneshot::Receiver<HeaderMap>>,
}

/// A sender and the body it feeds, holding at most `capacity` chunks.
pub fn pipe(capacity: usize) -> (mpsc::Sender<Bytes>, Pipe) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        tx,
        Pipe {
            data: rx,
            trailers: None,
        },
    )
}

/// As [`pipe`], and the trailers that end the body once every data sender
/// is dropped (none when their sender is dropped unused).
pub fn pipe_with_trailers(
    capacity: usize,
) -> (mpsc::Sender<Bytes>, oneshot::Sender<HeaderMap>, Pipe) {
    let (tx, mut body) = pipe(capacity);
    let (trailers_tx, trailers_rx) = oneshot::channel();
    body.trailers = Some(trailers_rx);
    (tx, trailers_tx, body)
}

impl Body for Pipe {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        let Some(trailers) = self.trailers.as_mut() else {
            return Poll::Ready(None);
        };
        let done = std::task::ready!(Pin::new(trailers).poll(cx));
        self.trailers = None;
        Poll::Ready(done.ok().map(|t| Ok(Frame::trailers(t))))
    }
}

/// Sends what `from` gives into `tx` until it ends (or fails: a terminal
/// whose last holder exited answers EIO) or nobody reads any more, even
/// while `from` is silent.
pub async fn forward(from: &mut (impl AsyncRead + Unpin), tx: &mpsc::Sender<Bytes>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = from.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(buf.split().freeze()).await.is_err() {
                        return;
                    }
                }
            },
            () = tx.closed() => return,
        }
    }
}
