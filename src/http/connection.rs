//! The limits of one client connection: how long it may take to send a request's
//! headers, how long its body, how long it may sit idle between requests; and the
//! hand-over of a connection that became a WebSocket, which none of them bind.
//!
//! A slow client must not hold a connection (and its file descriptor) for ever. hyper's
//! own `header_read_timeout` cannot express all three: it also runs while a keep-alive
//! connection waits for its next request, so an idle timeout longer than the header
//! timeout is impossible with it. So the connection's IO ([`GuardedIo`]) keeps the
//! phase it is in and fails a read that waits past that phase's deadline, which makes
//! hyper close the connection:
//!
//! - **head**: from the connection's start, or from the first byte of a later request,
//!   the headers must be complete within the header timeout;
//! - **idle**: after a response, the next request must start within the keep-alive
//!   timeout;
//! - **request**: while the edge works on a request, the IO sets no deadline; the body
//!   must arrive within the body timeout ([`TimedBody`]), and the handler takes what
//!   it takes;
//! - **upgraded**: a WebSocket has limits of its own (heartbeats, idle timeouts).
//!
//! The edge tells the IO about requests through the shared [`Connection`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long each phase of a connection may last.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the start of a request (or of the connection) to its last header byte.
    pub header: Duration,
    /// From the end of the headers to the last byte of the body.
    pub body: Duration,
    /// Between a response and the first byte of the next request.
    pub keep_alive: Duration,
}

/// What the edge tells a connection's IO about the requests on it.
#[derive(Debug, Default)]
pub struct Connection {
    in_flight: AtomicUsize,
    /// Bumped on every change, so the IO notices a request that started and ended
    /// between two of its reads.
    changes: AtomicU64,
    upgraded: AtomicBool,
    /// The task waiting to read from the connection: woken when a request ends, so
    /// that it arms the idle deadline (hyper need not read again after a response).
    reader: AtomicWaker,
}

impl Connection {
    /// A request's headers were read: the edge works on it.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The edge answered the request (its body may still be going out).
    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.reader.wake();
    }

    /// The connection became a WebSocket: no HTTP timeout applies any more.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request's headers, since this moment.
    Head(Instant),
    /// Waiting for the next request, since this moment.
    Idle(Instant),
}

/// A connection's socket, with the deadlines described in the module header.
#[derive(Debug)]
pub struct GuardedIo<T> {
    inner: T,
    timeouts: Timeouts,
    connection: Arc<Connection>,
    phase: Phase,
    seen_changes: u64,
    last_write: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T, timeouts: Timeouts, connection: Arc<Connection>) -> GuardedIo<T> {
        let now = Instant::now();
        GuardedIo {
            inner,
            timeouts,
            connection,
            phase: Phase::Head(now),
            seen_changes: 0,
            last_write: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.header)),
        }
    }

    /// When a read waiting now must give up, or `None` when nothing bounds it.
    fn deadline(&mut self) -> Option<Instant> {
        if self.connection.upgraded.load(Ordering::Acquire) {
            return None;
        }
        let changes = self.connection.changes.load(Ordering::Acquire);
        if self.connection.in_flight.load(Ordering::Acquire) > 0 {
            self.seen_changes = changes;
            return None;
        }
        if changes != self.seen_changes {
            // A request ended since we last looked: the connection is idle from now.
            self.seen_changes = changes;
            self.phase = Phase::Idle(Instant::now());
        }
        Some(match self.phase {
            Phase::Head(since) => since + self.timeouts.header,
            Phase::Idle(since) => since.max(self.last_write) + self.timeouts.keep_alive,
        })
    }

    fn on_bytes_read(&mut self) {
        if self.connection.in_flight.load(Ordering::Acquire) == 0
            && let Phase::Idle(_) = self.phase
        {
            self.phase = Phase::Head(Instant::now());
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.on_bytes_read();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.connection.reader.register(cx.waker());
                let Some(deadline) = this.deadline() else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        match this.phase {
                            Phase::Head(_) => "the request's headers took too long",
                            Phase::Idle(_) => "the connection was idle too long",
                        },
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.last_write = Instant::now();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.last_write = Instant::now();
        }
        written
    }
}

/// How a request's body went, for the edge to answer after the route did.
#[derive(Debug, Default)]
pub struct BodyProgress {
    finished: AtomicBool,
    timed_out: AtomicBool,
}

impl BodyProgress {
    /// The body was read to its end.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// The body did not arrive within the body timeout.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }
}

/// A request body that must arrive within a deadline, and says whether it was read.
#[derive(Debug)]
pub struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    progress: Arc<BodyProgress>,
}

impl TimedBody {
    pub fn new(inner: Incoming, timeout: Duration) -> (TimedBody, Arc<BodyProgress>) {
        let progress = Arc::new(BodyProgress::default());
        if inner.is_end_stream() {
            progress.finished.store(true, Ordering::Release);
        }
        let body = TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            progress: progress.clone(),
        };
        (body, progress)
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body took too long to arrive")]
pub struct BodyTimedOut;

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.progress.finished.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if self.inner.is_end_stream() {
                    self.progress.finished.store(true, Ordering::Release);
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.progress.timed_out.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
