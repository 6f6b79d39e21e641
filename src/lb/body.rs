//! Bodies crossing the proxy, always streamed, never collected whole: the request's here, the
//! response's in `response`.
//!
//! A request body is handed to an attempt lazily: the client's stream sits in a shared slot and
//! the attempt takes it only when hyper polls for the first chunk, which happens after the
//! upstream connection is up. A connect failure therefore leaves the body untouched for the next
//! attempt, however large. While an attempt streams it, the first `limit` bytes are kept, so an
//! attempt that failed after sending part of a small body can be replayed from the start; past
//! that limit the body is marked as not replayable and the kept bytes are dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::http::HeaderMap;
use tokio::sync::Notify;
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body whose stream may not pause longer than `timeout` between frames.
pub struct Idle<B> {
    inner: B,
    timeout: Duration,
    /// Armed only when the stream first has to wait, so bodies that arrive whole cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
pub struct IdleTimeout(pub Duration);

impl<B> Idle<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Idle {
            inner,
            timeout,
            timer: None,
        }
    }
}

impl<B> Body for Idle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(timer) = &mut this.timer {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's request body, shared by the attempts that may send it.
pub struct Replay {
    shared: Arc<Shared>,
    size_hint: SizeHint,
}

struct Shared {
    slot: Mutex<Slot>,
    limit: usize,
    /// More than `limit` bytes were read: what went out cannot be sent again.
    overflowed: AtomicBool,
    /// The current attempt has sent the whole body; the first-byte timer starts.
    sent: AtomicBool,
    sent_notify: Notify,
    /// Frames sent so far, all attempts together: shows whether an upload is moving.
    progress: AtomicU64,
    /// The client's stream failed (it went away, or paused too long): not the upstream's fault.
    client_failed: AtomicBool,
}

#[derive(Default)]
struct Slot {
    stash: Option<Box<Stash>>,
    /// An attempt waiting for the previous one to give the body back.
    waiter: Option<Waker>,
}

struct Stash {
    /// Frames already read from the client, while they fit in `limit`.
    kept: Vec<Bytes>,
    kept_len: usize,
    trailers: Option<HeaderMap>,
    /// The rest of the client's stream; `None` once it ended.
    rest: Option<Idle<Incoming>>,
}

impl Replay {
    pub fn new(body: Incoming, limit: usize, read_timeout: Duration) -> Replay {
        let size_hint = body.size_hint();
        let stash = Stash {
            kept: Vec::new(),
            kept_len: 0,
            trailers: None,
            rest: Some(Idle::new(body, read_timeout)),
        };
        let shared = Shared {
            slot: Mutex::new(Slot {
                stash: Some(Box::new(stash)),
                waiter: None,
            }),
            limit,
            overflowed: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            sent_notify: Notify::new(),
            progress: AtomicU64::new(0),
            client_failed: AtomicBool::new(false),
        };
        Replay {
            shared: Arc::new(shared),
            size_hint,
        }
    }

    /// A body for the next attempt, starting again from the first byte.
    pub fn attempt(&self, wait_timeout: Duration) -> AttemptBody {
        self.shared.sent.store(false, Ordering::Relaxed);
        AttemptBody {
            shared: self.shared.clone(),
            stash: None,
            pos: 0,
            trailers_sent: false,
            size_hint: self.size_hint,
            wait: None,
            wait_timeout,
        }
    }

    /// Everything an attempt sent so far can be sent again.
    pub fn is_replayable(&self) -> bool {
        !self.shared.overflowed.load(Ordering::Relaxed)
    }

    pub fn client_failed(&self) -> bool {
        self.shared.client_failed.load(Ordering::Relaxed)
    }

    /// Changes whenever a frame goes out.
    pub fn progress(&self) -> u64 {
        self.shared.progress.load(Ordering::Relaxed)
    }

    /// Resolves once the current attempt has sent the whole body.
    pub async fn sent(&self) {
        loop {
            let notified = self.shared.sent_notify.notified();
            if self.shared.sent.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_sent(&self) {
        self.sent.store(true, Ordering::Release);
        self.sent_notify.notify_waiters();
    }
}

/// The request body of one attempt.
pub struct AttemptBody {
    shared: Arc<Shared>,
    stash: Option<Box<Stash>>,
    /// Next kept frame to send again.
    pos: usize,
    trailers_sent: bool,
    size_hint: SizeHint,
    /// Bounds the wait for a previous attempt to give the body back.
    wait: Option<Pin<Box<Sleep>>>,
    wait_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body was not released by the previous attempt")]
pub struct BodyUnavailable;

impl AttemptBody {
    /// Takes the body from the slot, or registers to be woken when the previous attempt's
    /// connection lets go of it.
    fn poll_stash(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.stash.is_some() {
            return Poll::Ready(Ok(()));
        }
        {
            let mut slot = self.shared.slot();
            if let Some(stash) = slot.stash.take() {
                self.stash = Some(stash);
                return Poll::Ready(Ok(()));
            }
            slot.waiter = Some(cx.waker().clone());
        }
        let timeout = self.wait_timeout;
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(BodyUnavailable.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn keep(&mut self, data: &Bytes) {
        let shared = &self.shared;
        let Some(stash) = self.stash.as_mut() else {
            return;
        };
        if shared.overflowed.load(Ordering::Relaxed) {
            return;
        }
        if stash.kept_len + data.len() > shared.limit {
            shared.overflowed.store(true, Ordering::Relaxed);
            stash.kept = Vec::new();
            stash.kept_len = 0;
            return;
        }
        stash.kept.push(data.clone());
        stash.kept_len += data.len();
        self.pos = stash.kept.len();
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Err(e) = std::task::ready!(this.poll_stash(cx)) {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(stash) = this.stash.as_mut() else {
            return Poll::Ready(Some(Err(BodyUnavailable.into())));
        };
        if let Some(data) = stash.kept.get(this.pos) {
            this.pos += 1;
            this.shared.progress.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        let Some(rest) = stash.rest.as_mut() else {
            if let Some(trailers) = stash.trailers.clone().filter(|_| !this.trailers_sent) {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            this.shared.mark_sent();
            return Poll::Ready(None);
        };
        match std::task::ready!(Pin::new(rest).poll_frame(cx)) {
            None => {
                stash.rest = None;
                this.shared.mark_sent();
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                this.shared.progress.fetch_add(1, Ordering::Relaxed);
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    stash.trailers = Some(trailers.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.shared.client_failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

impl Drop for AttemptBody {
    /// Gives the body back for a later attempt.
    fn drop(&mut self) {
        let Some(stash) = self.stash.take() else {
            return;
        };
        let waiter = {
            let mut slot = self.shared.slot();
            slot.stash = Some(stash);
            slot.waiter.take()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

/// What goes upstream: nothing, or the client's body.
pub enum RequestBody {
    Empty,
    Attempt(AttemptBody),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Attempt(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Attempt(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies under test come from a real hyper connection, as in the proxy.
    async fn incoming(chunks: Vec<&'static [u8]>) -> (Incoming, tokio::task::JoinHandle<()>) {
        use http_body_util::StreamBody;
        use hyper_util::rt::TokioIo;
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let tx = std::sync::Mutex::new(Some(tx));
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(req.into_body());
                }
                async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Empty::<Bytes>::new(),
                    ))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_io), service)
                .await;
        });
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let req = hyper::Request::post("/").body(body).unwrap();
        tokio::spawn(async move {
            let _ = send.send_request(req).await;
        });
        (rx.await.unwrap(), server)
    }

    async fn collect(body: AttemptBody) -> Vec<u8> {
        use http_body_util::BodyExt;
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn an_untouched_body_survives_a_dropped_attempt() {
        let (body, _server) = incoming(vec![b"hello ", b"world"]).await;
        let replay = Replay::new(body, 4, Duration::from_secs(5));
        drop(replay.attempt(Duration::from_secs(1)));
        assert_eq!(
            collect(replay.attempt(Duration::from_secs(1))).await,
            b"hello world"
        );
        assert!(
            !replay.is_replayable(),
            "11 bytes do not fit a 4-byte limit"
        );
    }

    #[tokio::test]
    async fn a_small_body_replays_after_being_sent() {
        let (body, _server) = incoming(vec![b"abc", b"def"]).await;
        let replay = Replay::new(body, 1024, Duration::from_secs(5));
        assert_eq!(
            collect(replay.attempt(Duration::from_secs(1))).await,
            b"abcdef"
        );
        replay.sent().await;
        assert!(replay.is_replayable());
        assert_eq!(
            collect(replay.attempt(Duration::from_secs(1))).await,
            b"abcdef"
        );
    }

    #[tokio::test]
    async fn a_partly_sent_body_continues_from_the_client() {
        use http_body_util::BodyExt;
        let (body, _server) = incoming(vec![b"one", b"two", b"three"]).await;
        let replay = Replay::new(body, 1024, Duration::from_secs(5));
        let mut first = replay.attempt(Duration::from_secs(1));
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().as_ref(), b"one");
        drop(first);
        assert_eq!(
            collect(replay.attempt(Duration::from_secs(1))).await,
            b"onetwothree"
        );
    }

    #[tokio::test]
    async fn a_body_held_elsewhere_times_out() {
        use http_body_util::BodyExt;
        let (body, _server) = incoming(vec![b"x"]).await;
        let replay = Replay::new(body, 1024, Duration::from_secs(5));
        let mut holder = replay.attempt(Duration::from_secs(1));
        holder.frame().await.unwrap().unwrap();
        let err = replay
            .attempt(Duration::from_millis(20))
            .frame()
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.is::<BodyUnavailable>());
    }
}
