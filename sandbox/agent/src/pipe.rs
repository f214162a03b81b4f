//! A streamed answer body fed through a bounded channel. Unlike
//! `http_body_util`'s channel, its sender can wait for the caller to go
//! away ([`mpsc::Sender::closed`]), so work for a caller that reset its
//! stream stops even while it has nothing to send.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// The body end: what the sender sends, in order, until it is dropped.
#[derive(Debug)]
pub struct Pipe(mpsc::Receiver<Bytes>);

/// A sender and the body it feeds, holding at most `capacity` chunks.
pub fn pipe(capacity: usize) -> (mpsc::Sender<Bytes>, Pipe) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, Pipe(rx))
}

impl Body for Pipe {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
