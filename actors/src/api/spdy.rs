//! The part of SPDY/3.1 that Kubernetes' port-forward protocol uses, server side: frames in
//! and out, and header blocks compressed with zlib and SPDY's preset dictionary (one
//! compression context per direction for the whole connection, as the protocol requires).
//!
//! kubectl (client-go's spdystream) opens streams with SYN_STREAM and expects a SYN_REPLY,
//! sends DATA with FIN to half-close, RST_STREAM to abort and PING to check the connection;
//! it keeps no flow-control windows, so neither do we (WINDOW_UPDATE and SETTINGS are read and
//! ignored).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// SPDY's header dictionary (the SPDY/3 specification's, 1,423 bytes).
const DICTIONARY: &[u8] = include_bytes!("spdy-dictionary.bin");

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (SPDY's length field is 24 bits).
const MAX_FRAME: usize = 0xff_ffff;

/// A frame as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A new stream from the client, with its headers (names lower-cased).
    SynStream {
        /// Its id.
        stream: u32,
        /// Its headers.
        headers: Vec<(String, String)>,
        /// Whether the client sends nothing on it.
        fin: bool,
    },
    /// The client ends (`fin`) or writes to a stream.
    Data {
        /// The stream.
        stream: u32,
        /// The bytes.
        data: Vec<u8>,
        /// The client's last frame on it.
        fin: bool,
    },
    /// The client aborts a stream.
    Reset {
        /// The stream.
        stream: u32,
    },
    /// A liveness check, to be answered with the same id.
    Ping(u32),
    /// The client is going away.
    GoAway,
    /// Something to read past (SETTINGS, WINDOW_UPDATE, HEADERS, replies).
    Other,
}

/// Why a connection's bytes cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A frame is not SPDY/3.
    #[error("not a SPDY/3 frame: {0}")]
    Malformed(&'static str),
    /// A header block does not decompress.
    #[error("a SPDY header block does not decompress: {0}")]
    Compression(String),
}

/// Reads frames from a connection's bytes and writes frames for it.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
    buffer: Vec<u8>,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_headers(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let short = SpdyError::Malformed("header block cut short");
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let slice = block
            .get(at..at + n)
            .ok_or(SpdyError::Malformed("header block cut short"))?;
        at += n;
        Ok(slice)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| short)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let mut text = || -> Result<String, SpdyError> {
            let len = u32::from_be_bytes(
                take(4)?
                    .try_into()
                    .map_err(|_| SpdyError::Malformed("header length"))?,
            ) as usize;
            Ok(String::from_utf8_lossy(take(len)?).into_owned())
        };
        let name = text()?.to_ascii_lowercase();
        let value = text()?;
        headers.push((name, value));
    }
    Ok(headers)
}

impl Codec {
    /// A codec for one connection.
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Setting the dictionary on a fresh stream cannot fail.
        let _ = deflate.set_dictionary(DICTIONARY);
        Self {
            inflate: Decompress::new(true),
            deflate,
            buffer: Vec::new(),
        }
    }

    /// Takes bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame read, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let length = (u32_at(&self.buffer, 4) & 0x00ff_ffff) as usize;
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buffer.drain(..8 + length).collect();
        let flags = frame[4];
        let payload = &frame[8..];
        if frame[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream: u32_at(&frame, 0) & 0x7fff_ffff,
                data: payload.to_vec(),
                fin: flags & FLAG_FIN != 0,
            }));
        }
        let version = u16::from_be_bytes([frame[0] & 0x7f, frame[1]]);
        if version != VERSION {
            return Err(SpdyError::Malformed("version is not 3"));
        }
        let kind = u16::from_be_bytes([frame[2], frame[3]]);
        let stream = || {
            if payload.len() < 4 {
                Err(SpdyError::Malformed("control frame too short"))
            } else {
                Ok(u32_at(payload, 0) & 0x7fff_ffff)
            }
        };
        Ok(Some(match kind {
            1 => {
                if payload.len() < 10 {
                    return Err(SpdyError::Malformed("SYN_STREAM too short"));
                }
                let block = self.inflate_block(&payload[10..])?;
                Frame::SynStream {
                    stream: stream()?,
                    headers: read_headers(&block)?,
                    fin: flags & FLAG_FIN != 0,
                }
            }
            2 | 8 => {
                // SYN_REPLY and HEADERS carry a header block: it must still pass through the
                // decompressor, which keeps one context for the connection.
                if payload.len() >= 4 {
                    self.inflate_block(&payload[4..])?;
                }
                Frame::Other
            }
            3 => Frame::Reset { stream: stream()? },
            6 => Frame::Ping(stream()?),
            7 => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match result {
                Err(error) if error.needs_dictionary().is_some() => self
                    .inflate
                    .set_dictionary(DICTIONARY)
                    .map(|_| ())
                    .map_err(|e| SpdyError::Compression(e.to_string()))?,
                Err(error) => return Err(SpdyError::Compression(error.to_string())),
                Ok(Status::StreamEnd) => break,
                // All read, and the output had room to spare: nothing is pending.
                Ok(_) if input.is_empty() && out.len() < out.capacity() => break,
                Ok(_) => {}
            }
            if out.len() > MAX_FRAME {
                return Err(SpdyError::Malformed("header block too large"));
            }
        }
        Ok(out)
    }

    fn deflate_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend((headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            plain.extend((name.len() as u32).to_be_bytes());
            plain.extend(name.as_bytes());
            plain.extend((value.len() as u32).to_be_bytes());
            plain.extend(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used..];
            // Done once everything went in and the flush had room to finish.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }

    /// A SYN_STREAM opening `stream` with `headers` (what a client sends; `shipshape
    /// port-forward` is one).
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.deflate_block(headers);
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend(0u32.to_be_bytes());
        payload.extend([0, 0]);
        payload.extend(block);
        control(1, 0, &payload)
    }

    /// A SYN_REPLY accepting `stream` (with no headers, as the kubelet's reply has).
    pub fn reply(&mut self, stream: u32) -> Vec<u8> {
        let block = self.deflate_block(&[]);
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend(block);
        control(2, 0, &payload)
    }

    /// A PING answering the client's.
    pub fn ping(id: u32) -> Vec<u8> {
        control(6, 0, &id.to_be_bytes())
    }

    /// A RST_STREAM aborting `stream` (status CANCEL).
    pub fn reset(stream: u32) -> Vec<u8> {
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend(5u32.to_be_bytes());
        control(3, 0, &payload)
    }

    /// DATA on `stream`; `fin` ends our side of it. Longer data is split into frames.
    pub fn data(stream: u32, data: &[u8], fin: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 8);
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(MAX_FRAME).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            out.extend((stream & 0x7fff_ffff).to_be_bytes());
            let flags = if fin && i == last { FLAG_FIN } else { 0 };
            out.extend(((u32::from(flags) << 24) | chunk.len() as u32).to_be_bytes());
            out.extend(chunk);
        }
        out
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend((0x8000 | VERSION).to_be_bytes());
    out.extend(kind.to_be_bytes());
    out.extend(((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    out.extend(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_data_pings_and_resets_read_back_across_split_reads() {
        let mut client = Codec::new();
        let mut server = Codec::new();
        let mut wire = Vec::new();
        wire.extend(client.syn_stream(
            1,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        ));
        // A second block uses the same compression context (and so the same dictionary).
        wire.extend(client.syn_stream(
            3,
            &[("streamType", "data"), ("port", "8080"), ("requestID", "0")],
        ));
        wire.extend(Codec::data(3, b"GET / HTTP/1.0\r\n\r\n", false));
        wire.extend(Codec::data(1, b"", true));
        wire.extend(Codec::ping(7));
        wire.extend(Codec::reset(3));
        // Bytes arrive in pieces, as WebSocket messages or TCP reads cut them.
        let mut frames = Vec::new();
        for piece in wire.chunks(5) {
            server.feed(piece);
            while let Some(frame) = server.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            [
                Frame::SynStream {
                    stream: 1,
                    headers: vec![
                        ("streamtype".into(), "error".into()),
                        ("port".into(), "8080".into()),
                        ("requestid".into(), "0".into())
                    ],
                    fin: false
                },
                Frame::SynStream {
                    stream: 3,
                    headers: vec![
                        ("streamtype".into(), "data".into()),
                        ("port".into(), "8080".into()),
                        ("requestid".into(), "0".into())
                    ],
                    fin: false
                },
                Frame::Data {
                    stream: 3,
                    data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
                    fin: false
                },
                Frame::Data {
                    stream: 1,
                    data: vec![],
                    fin: true
                },
                Frame::Ping(7),
                Frame::Reset { stream: 3 },
            ]
        );
        // Our replies decompress on the other side.
        let mut reader = Codec::new();
        reader.feed(&server.reply(1));
        reader.feed(&server.reply(3));
        assert_eq!(reader.next_frame().unwrap(), Some(Frame::Other));
        assert_eq!(reader.next_frame().unwrap(), Some(Frame::Other));
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut codec = Codec::new();
        codec.feed(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]);
        assert!(codec.next_frame().is_err());
        let mut codec = Codec::new();
        let mut frame = control(1, 0, &[0; 10]);
        frame.extend([1, 2, 3]);
        let length = (frame.len() - 8) as u32;
        frame[5..8].copy_from_slice(&length.to_be_bytes()[1..]);
        codec.feed(&frame);
        assert!(codec.next_frame().is_err());
    }
}
