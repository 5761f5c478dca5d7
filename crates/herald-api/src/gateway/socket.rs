//! A WebSocket connection's socket after the upgrade: the TCP stream itself and a [`FrameReader`].
//!
//! Reading is split in two so that an idle connection holds no buffer and its task stays small: `ready()`
//! waits for the stream to become readable (no bytes in hand), and `try_next()` reads what is there and
//! decodes it without waiting. Writes encode their frames into one buffer that lives for that write.

use super::frames::{FrameError, FrameReader, Incoming, OutFrame};
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a closing connection waits for the client's close frame (or EOF) after sending its own. Reading
/// until then keeps unread input from turning the close into a TCP reset, which would destroy the close
/// frame (and the reason in it) before the client reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Why no further message can be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client broke the protocol or a limit.
    Frame(FrameError),
    /// The connection ended (EOF, reset).
    Gone,
}

pub struct Socket {
    stream: TcpStream,
    reader: FrameReader,
    /// Encoded frames not yet taken by the kernel, from `sent` on. Kept here rather than in the write's
    /// future, so that a write given up half-way (the client was kicked) can still be completed before the
    /// close frame instead of leaving half a frame on the wire. Empty and unallocated between writes.
    unsent: Vec<u8>,
    sent: usize,
    /// The reader may hold a complete message: the last `try_next` found one and did not reach the end of
    /// what had arrived.
    maybe_buffered: bool,
}

impl Socket {
    /// `early` is what the client sent right behind its upgrade request (hyper read it already).
    pub fn new(stream: TcpStream, early: &[u8], max_message: usize) -> Self {
        let maybe_buffered = !early.is_empty();
        Self {
            stream,
            reader: FrameReader::with_bytes(max_message, early),
            unsent: Vec::new(),
            sent: 0,
            maybe_buffered,
        }
    }

    /// Ready when `try_next` may have something: a message may be buffered, or the stream is readable.
    /// The waker is kept by the stream's registration, so waiting this way adds nothing to the task's state.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.maybe_buffered {
            return Poll::Ready(());
        }
        // An error here shows up again on the read that follows.
        self.stream.poll_read_ready(cx).map(|_| ())
    }

    /// The next complete message, if one can be had without waiting.
    pub fn try_next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            match self.reader.next_message() {
                Ok(Some(message)) => {
                    self.maybe_buffered = true;
                    return Ok(Some(message));
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Frame(e)),
            }
            match self.stream.try_read_buf(self.reader.read_buffer()) {
                Ok(0) => return Err(ReadError::Gone),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.maybe_buffered = false;
                    self.reader.release_if_empty();
                    return Ok(None);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection read failed");
                    return Err(ReadError::Gone);
                }
            }
        }
    }

    /// Waits for the next message.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(message) = self.try_next()? {
                return Ok(message);
            }
            std::future::poll_fn(|cx| self.poll_ready(cx)).await;
        }
    }

    /// Writes frames (after what an earlier, abandoned write left), with one write call where the kernel
    /// takes them all. Cancel-safe: what was not written stays queued for the next write or the close.
    pub async fn write(&mut self, frames: &[OutFrame]) -> io::Result<()> {
        if self.sent > 0 {
            self.unsent.drain(..self.sent);
            self.sent = 0;
        }
        self.unsent.reserve_exact(frames.iter().map(OutFrame::encoded_len).sum());
        for frame in frames {
            frame.encode(&mut self.unsent);
        }
        self.flush().await
    }

    async fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.unsent.len() {
            // `TcpStream::write` is cancel-safe: it wrote `n` bytes or nothing.
            let n = self.stream.write(&self.unsent[self.sent..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += n;
        }
        self.unsent = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// The closing handshake from the server's side: the close frame (waiting up to `write_timeout` for a
    /// client whose buffers are full), then the end of our half of the stream, then whatever the client
    /// still sends until its close frame or EOF, for a short while.
    pub async fn close(mut self, code: u16, reason: &'static str, write_timeout: Duration) {
        let frame = [OutFrame::Close { code, reason }];
        match tokio::time::timeout(write_timeout, self.write(&frame)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let _ = self.stream.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Ok(message) = self.next().await {
                if matches!(message, Incoming::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
