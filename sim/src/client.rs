//! A small RESP client for the simulated clients: one connection, one request at a
//! time, every step under a simulated-time timeout (madsim's TCP never reports a
//! dead or clogged peer by itself). It speaks through `shoal_net::resp` and flushes
//! after every request, because simulated TCP sends only on flush.

use bytes::BytesMut;
use shoal_net::resp::{decode_reply, encode_request, Reply};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Unparsed reply bytes a connection may buffer before it is dropped.
const INPUT_BUFFER_MAX_BYTES: usize = 16 << 20;
const READ_CHUNK_BYTES: usize = 16 << 10;

/// Why a request got no reply. After any of these the connection is unusable and
/// the request's outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    Timeout,
    /// The peer closed the connection.
    Closed,
    Io(String),
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => write!(f, "timed out"),
            CallError::Closed => write!(f, "connection closed"),
            CallError::Io(e) => write!(f, "i/o error: {e}"),
            CallError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

pub struct RespConn {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl RespConn {
    pub async fn connect(addr: SocketAddr, timeout_ms: u64) -> Result<RespConn, CallError> {
        let stream =
            match tokio::time::timeout(Duration::from_millis(timeout_ms), TcpStream::connect(addr))
                .await
            {
                Err(_) => return Err(CallError::Timeout),
                Ok(Err(e)) => return Err(CallError::Io(e.to_string())),
                Ok(Ok(stream)) => stream,
            };
        Ok(RespConn {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK_BYTES),
            output: BytesMut::with_capacity(READ_CHUNK_BYTES),
        })
    }

    /// Send one request and wait for its reply.
    pub async fn call(&mut self, args: &[&[u8]], timeout_ms: u64) -> Result<Reply, CallError> {
        match tokio::time::timeout(Duration::from_millis(timeout_ms), self.call_inner(args)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout),
        }
    }

    async fn call_inner(&mut self, args: &[&[u8]]) -> Result<Reply, CallError> {
        self.output.clear();
        encode_request(args, &mut self.output);
        self.stream
            .write_all(&self.output)
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        self.stream
            .flush()
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        loop {
            match decode_reply(&mut self.input) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(CallError::Protocol(e.to_string())),
            }
            if self.input.len() > INPUT_BUFFER_MAX_BYTES {
                return Err(CallError::Protocol(format!(
                    "reply larger than {INPUT_BUFFER_MAX_BYTES} bytes"
                )));
            }
            self.input.reserve(READ_CHUNK_BYTES);
            let read = self
                .stream
                .read_buf(&mut self.input)
                .await
                .map_err(|e| CallError::Io(e.to_string()))?;
            if read == 0 {
                return Err(CallError::Closed);
            }
        }
    }
}

/// The error code of an error reply: its first word (`IOERR`, `READONLY`, ...).
pub fn error_code(message: &str) -> &str {
    message.split_whitespace().next().unwrap_or("")
}
