//! What goes back to the client, always streamed: the upstream's body under the read timeout, or
//! a short local answer. Either way the request's access record ends with it, which also frees the
//! upstream connection for reuse once the body was read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::lb::access::Record;
use crate::lb::body::{BoxError, Idle};

/// What goes back to the client: the upstream's body, streamed, or a short local answer. Either
/// way the request's record ends with it.
pub struct ResponseBody {
    kind: Kind,
    record: Option<Record>,
}

enum Kind {
    Upstream(Idle<Incoming>),
    Local(Option<Bytes>),
}

impl ResponseBody {
    pub fn upstream(body: Incoming, read_timeout: Duration, mut record: Record) -> ResponseBody {
        // A body that is already complete (HEAD, 204, 304, empty) may never be polled.
        if body.is_end_stream() {
            record.body_done();
        }
        ResponseBody {
            kind: Kind::Upstream(Idle::new(body, read_timeout)),
            record: Some(record),
        }
    }

    pub fn local(text: Bytes, record: Option<Record>) -> ResponseBody {
        let text = (!text.is_empty()).then_some(text);
        ResponseBody {
            kind: Kind::Local(text),
            record,
        }
    }

    /// The body ended normally: release the connection and end the record now, since hyper
    /// stops polling (and may keep the body around) once it knows the end was reached.
    fn done(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.body_done();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(body) => std::task::ready!(Pin::new(body).poll_frame(cx)),
            Kind::Local(text) => text.take().map(|t| Ok(Frame::data(t))),
        };
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(record), Some(data)) = (&mut this.record, frame.data_ref()) {
                    record.bytes += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.done();
                }
            }
            Some(Err(e)) => {
                if let Some(mut record) = this.record.take() {
                    record.body_failed(e.to_string());
                }
            }
            None => this.done(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Local(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Local(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}
