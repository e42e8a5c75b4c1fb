//! Raw HTTP/1.1 over a TCP stream, one connection per request.
//!
//! An HTTP client library would tidy the request first: resolve `..`,
//! re-escape the path, refuse a duplicate header, frame the body its own
//! way. Writing the bytes by hand sends exactly what the case says, and
//! reading them back by hand sees exactly what the gateway answered,
//! including a connection it closed without answering.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::generate::Case;

/// A final (non-1xx) response.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lower case), or empty.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

impl Case {
    /// The request as it goes on the wire.
    pub(crate) fn wire(&self, host: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.path.len() + self.body.len() + 512);
        out.extend_from_slice(
            format!("{} {} HTTP/1.1\r\nhost: {host}\r\n", self.method, self.path).as_bytes(),
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        match &self.chunks {
            Some(sizes) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                let mut rest = self.body.as_slice();
                for &n in sizes {
                    let (chunk, tail) = rest.split_at(n);
                    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            None => {
                if !self.body.is_empty() || self.method == "POST" {
                    out.extend_from_slice(
                        format!("content-length: {}\r\n", self.body.len()).as_bytes(),
                    );
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.body);
            }
        }
        out
    }
}

/// Sends `request` on a fresh connection and reads the final response.
/// `head` says the response has no body whatever its headers say.
pub(crate) async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    head: bool,
) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    exchange_on(&mut stream, request, head).await
}

/// Sends `request` on an open connection and reads the final response,
/// leaving the connection open for another.
pub(crate) async fn exchange_on(
    stream: &mut TcpStream,
    request: &[u8],
    head: bool,
) -> Result<Answer, String> {
    // A server may answer (413, say) and close before reading everything;
    // what matters is the answer, so a failed write is only reported when
    // no answer follows.
    let wrote = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let eof = match stream.read(&mut chunk).await {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) => {
                return Err(format!(
                    "reading the answer: {e}{}",
                    wrote.as_ref().err().map_or(String::new(), |w| format!(
                        " (writing the request failed too: {w})"
                    ))
                ));
            }
        };
        if let Some(answer) = parse(&mut buf, head, eof)? {
            return Ok(answer);
        }
        if eof {
            return Err(if buf.is_empty() {
                "the connection closed without an answer".to_owned()
            } else {
                format!(
                    "the connection closed in the middle of the answer after {} bytes: {}",
                    buf.len(),
                    buf.escape_ascii()
                )
            });
        }
    }
}

/// A complete final response from the front of `buf`, dropping any 1xx
/// before it; `None` while more bytes are needed.
fn parse(buf: &mut Vec<u8>, head: bool, eof: bool) -> Result<Option<Answer>, String> {
    loop {
        let Some(end) = find(buf, b"\r\n\r\n") else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body_start = end + 4;
        if (100..200).contains(&status) {
            buf.drain(..body_start);
            continue;
        }
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let rest = &buf[body_start..];
        let body = if head || status == 204 || status == 304 {
            Some(Vec::new())
        } else if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = value("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("a content-length that is not a number: {len:?}"))?;
            (rest.len() >= len).then(|| rest[..len].to_vec())
        } else {
            eof.then(|| rest.to_vec())
        };
        return Ok(body.map(|body| Answer {
            status,
            headers,
            body,
        }));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of a complete chunked message, `None` if it is not complete yet.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("a chunk size that is not hex: {line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            return Ok(find(rest, b"\r\n").map(|_| body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
