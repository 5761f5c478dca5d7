//! The server side of WebSocket framing (RFC 6455 §5), without I/O: client frames in, messages out; server
//! frames encoded into a caller's buffer.
//!
//! Written here instead of using tungstenite's `WebSocket` for what an idle connection costs. tungstenite
//! keeps a read buffer (allocated up front, never shrunk) and a write buffer (grown to the largest batch ever
//! written, never shrunk) for the connection's whole life. This reader holds bytes only while a frame or a
//! fragmented message is incomplete, and frees them as soon as it is not; writes are encoded into a buffer
//! that lives for one write. Headers are parsed and formatted by tungstenite's `FrameHeader`, so only the
//! protocol rules a server must enforce are written here.

use std::io::Cursor;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

/// Bytes asked of the socket per read when no frame length says how many are missing.
const READ_CHUNK: usize = 4096;
/// Control frames carry at most this much (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// Herald's protocol has no binary messages; only the fact is kept.
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame, with its code when it gave one.
    Close(Option<u16>),
}

/// Why the client's input cannot be read further; each maps to a close code.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frames break RFC 6455 (close 1002).
    Protocol(&'static str),
    /// A text message is not UTF-8 (close 1007).
    NotUtf8,
    /// A message is larger than the limit (close 1009).
    TooLarge,
}

impl FrameError {
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::NotUtf8 => 1007,
            FrameError::TooLarge => 1009,
        }
    }
}

/// A data message whose frames have not all arrived.
struct Fragmented {
    text: bool,
    data: Vec<u8>,
}

/// Decodes client frames from bytes the caller reads into [`FrameReader::read_buffer`].
pub struct FrameReader {
    /// Received bytes from `start` on are not decoded yet. Empty (and unallocated) between frames.
    buf: Vec<u8>,
    start: usize,
    /// Payload bytes still missing from the frame at `start`, once its header has been seen.
    missing: usize,
    /// Boxed: rare, and every connection carries the field.
    fragmented: Option<Box<Fragmented>>,
    max_message: usize,
}

impl FrameReader {
    pub fn new(max_message: usize) -> Self {
        Self { buf: Vec::new(), start: 0, missing: 0, fragmented: None, max_message }
    }

    /// Starts with bytes that arrived together with the upgrade request.
    pub fn with_bytes(max_message: usize, bytes: &[u8]) -> Self {
        let mut reader = Self::new(max_message);
        reader.buf.extend_from_slice(bytes);
        reader
    }

    /// Whether any received bytes or message fragments are held (an idle connection holds none).
    #[cfg(test)]
    fn holds_bytes(&self) -> bool {
        self.buf.capacity() > 0 || self.fragmented.is_some()
    }

    /// The buffer to append received bytes to, with room for what the current frame still needs (or a chunk).
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = if self.missing > 0 { self.missing } else { READ_CHUNK };
        self.buf.reserve(want);
        &mut self.buf
    }

    /// The next complete message among the received bytes; `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            let pending = &self.buf[self.start..];
            let mut cursor = Cursor::new(pending);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    self.release_if_empty();
                    return Ok(None);
                }
                Err(_) => return Err(FrameError::Protocol("reserved opcode")),
            };
            self.check(&header, length)?;
            let header_len = cursor.position() as usize;
            // `check` bounded `length` by the message limit, so it fits in memory.
            let length = length as usize;
            let available = pending.len() - header_len;
            if available < length {
                self.missing = length - available;
                return Ok(None);
            }
            self.missing = 0;
            let payload_at = self.start + header_len;
            self.start = payload_at + length;
            let payload = &mut self.buf[payload_at..payload_at + length];
            if let Some(mask) = header.mask {
                unmask(payload, mask);
            }
            let message = self.frame(&header, payload_at, length)?;
            self.release_if_empty();
            if let Some(message) = message {
                return Ok(Some(message));
            }
        }
    }

    /// The rules a header must follow before its payload is even buffered.
    fn check(&self, header: &FrameHeader, length: u64) -> Result<(), FrameError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(FrameError::Protocol("reserved bits set without an extension"));
        }
        if header.mask.is_none() {
            return Err(FrameError::Protocol("client frames must be masked"));
        }
        match header.opcode {
            OpCode::Control(_) => {
                if !header.is_final || length > MAX_CONTROL_PAYLOAD {
                    return Err(FrameError::Protocol("control frames are single frames of at most 125 bytes"));
                }
            }
            OpCode::Data(data) => {
                match (data, &self.fragmented) {
                    (Data::Continue, None) => return Err(FrameError::Protocol("continuation without a message")),
                    (Data::Text | Data::Binary, Some(_)) => {
                        return Err(FrameError::Protocol("new message before the last one ended"));
                    }
                    _ => {}
                }
                let so_far = self.fragmented.as_ref().map_or(0, |f| f.data.len());
                if length.saturating_add(so_far as u64) > self.max_message as u64 {
                    return Err(FrameError::TooLarge);
                }
            }
        }
        Ok(())
    }

    /// What a complete (unmasked) frame means; `None` when it is part of an unfinished message.
    fn frame(&mut self, header: &FrameHeader, at: usize, length: usize) -> Result<Option<Incoming>, FrameError> {
        let payload = &self.buf[at..at + length];
        let data = match header.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Incoming::Ping(payload.to_vec()))),
            OpCode::Control(Control::Pong) => return Ok(Some(Incoming::Pong)),
            OpCode::Control(Control::Close) => return close(payload).map(Some),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(FrameError::Protocol("reserved opcode"));
            }
            OpCode::Data(data) => data,
        };
        let complete = match (data, self.fragmented.take()) {
            (Data::Continue, Some(mut message)) => {
                message.data.extend_from_slice(payload);
                if !header.is_final {
                    self.fragmented = Some(message);
                    return Ok(None);
                }
                *message
            }
            (Data::Text | Data::Binary, None) => {
                let message = Fragmented { text: data == Data::Text, data: payload.to_vec() };
                if !header.is_final {
                    self.fragmented = Some(Box::new(message));
                    return Ok(None);
                }
                message
            }
            // `check` refused every other combination.
            _ => return Err(FrameError::Protocol("unexpected continuation")),
        };
        if !complete.text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(complete.data).map(|text| Some(Incoming::Text(text))).map_err(|_| FrameError::NotUtf8)
    }

    /// Frees the buffer once everything in it has been decoded: an idle connection keeps no bytes. Called
    /// after each decode, and by the reader when a read found nothing to append.
    pub fn release_if_empty(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }
}

/// A close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Incoming, FrameError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(FrameError::Protocol("a close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !CloseCode::from(code).is_allowed() {
                return Err(FrameError::Protocol("a close code a peer may not send"));
            }
            std::str::from_utf8(reason).map_err(|_| FrameError::NotUtf8)?;
            Ok(Incoming::Close(Some(code)))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// What the server writes.
#[derive(Debug)]
pub enum OutFrame {
    Text(bytes::Bytes),
    Ping,
    Pong(Vec<u8>),
    Close { code: u16, reason: &'static str },
}

impl OutFrame {
    /// The opcode, the close code (a close frame's payload starts with it) and the rest of the payload.
    fn parts(&self) -> (OpCode, Option<[u8; 2]>, &[u8]) {
        match self {
            OutFrame::Text(text) => (OpCode::Data(Data::Text), None, text),
            OutFrame::Ping => (OpCode::Control(Control::Ping), None, &[]),
            OutFrame::Pong(data) => (OpCode::Control(Control::Pong), None, data),
            OutFrame::Close { code, reason } => {
                (OpCode::Control(Control::Close), Some(code.to_be_bytes()), reason.as_bytes())
            }
        }
    }

    fn header_and_length(&self) -> (FrameHeader, u64) {
        let (opcode, code, payload) = self.parts();
        (header(opcode), (code.map_or(0, |c| c.len()) + payload.len()) as u64)
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let (header, length) = self.header_and_length();
        header.len(length) + length as usize
    }

    /// Appends the frame (unmasked, as a server sends) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (header, length) = self.header_and_length();
        // Writing into a Vec cannot fail.
        let _ = header.format(length, out);
        let (_, code, payload) = self.parts();
        if let Some(code) = code {
            out.extend_from_slice(&code);
        }
        out.extend_from_slice(payload);
    }
}

fn header(opcode: OpCode) -> FrameHeader {
    FrameHeader { is_final: true, opcode, mask: None, ..FrameHeader::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::Frame;

    /// A frame as a client would send it (masked), encoded by tungstenite.
    fn client_frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader { is_final, opcode, mask: Some([0x12, 0x34, 0x56, 0x78]), ..FrameHeader::default() };
        let frame = Frame::from_payload(header, payload.to_vec().into());
        let mut out = Vec::new();
        frame.format(&mut out).expect("formatted");
        out
    }

    fn text(payload: &str) -> Vec<u8> {
        client_frame(OpCode::Data(Data::Text), true, payload.as_bytes())
    }

    fn decode_all(reader: &mut FrameReader, bytes: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        reader.read_buffer().extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(message) = reader.next_message()? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn messages_arrive_whole_whatever_the_split() {
        let mut stream = text("hello");
        stream.extend(client_frame(OpCode::Data(Data::Text), false, "wor".as_bytes()));
        stream.extend(client_frame(OpCode::Control(Control::Ping), true, b"p"));
        stream.extend(client_frame(OpCode::Data(Data::Continue), true, "ld ✓".as_bytes()));
        stream.extend(client_frame(OpCode::Data(Data::Binary), true, &[1, 2]));
        stream.extend(client_frame(OpCode::Control(Control::Close), true, &[0x03, 0xe8, b'o', b'k']));
        let expected = vec![
            Incoming::Text("hello".into()),
            Incoming::Ping(b"p".to_vec()),
            Incoming::Text("world ✓".into()),
            Incoming::Binary,
            Incoming::Close(Some(1000)),
        ];
        for piece in 1..=stream.len() {
            let mut reader = FrameReader::new(1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                got.extend(decode_all(&mut reader, chunk).expect("valid"));
            }
            assert_eq!(got, expected, "split into pieces of {piece}");
            assert!(!reader.holds_bytes(), "nothing kept after the last frame");
        }
    }

    #[test]
    fn bytes_are_held_only_while_a_frame_is_incomplete() {
        let mut reader = FrameReader::new(1024);
        assert!(!reader.holds_bytes());
        let frame = text("a message");
        decode_all(&mut reader, &frame[..5]).expect("partial");
        assert!(reader.holds_bytes());
        assert_eq!(decode_all(&mut reader, &frame[5..]).expect("rest"), vec![Incoming::Text("a message".into())]);
        assert!(!reader.holds_bytes());
    }

    #[test]
    fn protocol_violations_are_refused() {
        let unmasked = {
            let mut out = Vec::new();
            Frame::message(b"x".to_vec(), OpCode::Data(Data::Text), true).format(&mut out).expect("formatted");
            out
        };
        let mut rsv = text("x");
        rsv[0] |= 0x40;
        let mut reserved_opcode = text("x");
        reserved_opcode[0] = (reserved_opcode[0] & 0xf0) | 0x3;
        let long_ping = client_frame(OpCode::Control(Control::Ping), true, &[0; 126]);
        let split_ping = client_frame(OpCode::Control(Control::Ping), false, b"");
        let stray_continuation = client_frame(OpCode::Data(Data::Continue), true, b"x");
        let mut interrupted = client_frame(OpCode::Data(Data::Text), false, b"x");
        interrupted.extend(text("y"));
        let bad_close_code = client_frame(OpCode::Control(Control::Close), true, &[0x03, 0xec]);
        let one_byte_close = client_frame(OpCode::Control(Control::Close), true, &[3]);
        for (name, bytes) in [
            ("unmasked", unmasked),
            ("rsv", rsv),
            ("reserved opcode", reserved_opcode),
            ("long ping", long_ping),
            ("fragmented ping", split_ping),
            ("stray continuation", stray_continuation),
            ("interrupted message", interrupted),
            ("close 1004", bad_close_code),
            ("one-byte close", one_byte_close),
        ] {
            let result = decode_all(&mut FrameReader::new(1024), &bytes);
            assert!(matches!(result, Err(FrameError::Protocol(_))), "{name}: {result:?}");
        }
        let bad_utf8 = client_frame(OpCode::Data(Data::Text), true, &[0xff, 0xfe]);
        assert_eq!(decode_all(&mut FrameReader::new(1024), &bad_utf8), Err(FrameError::NotUtf8));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_its_payload_is_buffered() {
        let mut reader = FrameReader::new(100);
        let frame = text(&"x".repeat(101));
        // Only the header has arrived: refused already.
        assert_eq!(decode_all(&mut reader, &frame[..8]), Err(FrameError::TooLarge));
        // Fragments count together.
        let mut pieces = client_frame(OpCode::Data(Data::Text), false, &[b'x'; 60]);
        pieces.extend(client_frame(OpCode::Data(Data::Continue), true, &[b'x'; 60]));
        assert_eq!(decode_all(&mut FrameReader::new(100), &pieces), Err(FrameError::TooLarge));
        // A declared length of 2^63 is not an allocation.
        let mut huge = vec![0x81, 0xff];
        huge.extend(u64::MAX.to_be_bytes());
        huge.extend([1, 2, 3, 4]);
        assert_eq!(decode_all(&mut FrameReader::new(100), &huge), Err(FrameError::TooLarge));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A small deterministic generator is enough to walk the decoder through random headers and splits.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut reader = FrameReader::new(64);
            for chunk in bytes.chunks(1 + (next() % 8) as usize) {
                if decode_all(&mut reader, chunk).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn server_frames_are_what_a_client_library_reads() {
        let frames = [
            OutFrame::Text(bytes::Bytes::from_static(b"{\"type\":\"hello\"}")),
            OutFrame::Text(bytes::Bytes::from(vec![b'a'; 300])),
            OutFrame::Text(bytes::Bytes::from(vec![b'b'; 70_000])),
            OutFrame::Ping,
            OutFrame::Pong(b"pp".to_vec()),
            OutFrame::Close { code: 4008, reason: "too slow" },
        ];
        let mut out = Vec::new();
        for frame in &frames {
            let before = out.len();
            frame.encode(&mut out);
            assert_eq!(out.len() - before, frame.encoded_len(), "{frame:?}");
        }
        let mut socket = tungstenite::protocol::frame::FrameSocket::new(Cursor::new(out));
        let mut read = Vec::new();
        while let Some(frame) = socket.read(None).expect("a valid frame") {
            read.push((frame.header().opcode, frame.payload().len()));
        }
        assert_eq!(
            read,
            vec![
                (OpCode::Data(Data::Text), 16),
                (OpCode::Data(Data::Text), 300),
                (OpCode::Data(Data::Text), 70_000),
                (OpCode::Control(Control::Ping), 0),
                (OpCode::Control(Control::Pong), 2),
                (OpCode::Control(Control::Close), 10),
            ]
        );
    }
}
