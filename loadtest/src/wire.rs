//! A lean HTTP/1.1 client for the buyers' requests: keep-alive connections in a pool, requests
//! written as bytes, responses parsed with `httparse`.
//!
//! Why not `reqwest` here: at a million buyers the harness makes millions of small requests on
//! the same two cores as the server, Redis and PostgreSQL, and `reqwest` spent about as much CPU
//! per request as the server did (URL parsing, header maps, pool bookkeeping). The harness must
//! not be what limits the sale. Admin requests, which are few, still go through `reqwest`.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer: status, `Retry-After` in seconds if any, and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

/// One keep-alive connection and the bytes read past the last answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Keep-alive connections to the servers of one deployment: each request goes to the next
/// server in turn, as a load balancer spreads requests (not sticky: a buyer's next request may
/// reach another instance, which every instance must answer the same).
pub struct Wire {
    servers: Vec<Server>,
    next: AtomicUsize,
    /// `Host` header value (the first server's authority: the instances are one service).
    host: String,
}

/// One server's address and its idle connections.
struct Server {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    /// Refused a connection: passed over until then (a load balancer's passive health check).
    down_until: Mutex<Option<std::time::Instant>>,
}

/// How long a server that refused a connection is passed over before it is tried again.
const DOWN_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// A request being written: method, path and headers, then [`Request::body`].
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(b": ");
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        self
    }

    /// Ends the headers with the body's length and the body.
    pub fn body(mut self, body: &[u8]) -> Vec<u8> {
        if !body.is_empty() {
            self.bytes.extend_from_slice(b"content-type: application/json\r\n");
        }
        self.bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        self.bytes.extend_from_slice(body);
        self.bytes
    }
}

impl Wire {
    /// Connections to the servers at `bases` (`http://host:port`, no TLS; at least one).
    pub async fn new(bases: &[String]) -> anyhow::Result<Wire> {
        let mut servers = Vec::with_capacity(bases.len());
        let mut host = None;
        for base in bases {
            let authority = base.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{base}: only http:// URLs"))?;
            let authority = authority.trim_end_matches('/');
            let addr = tokio::net::lookup_host(authority)
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{authority}: no address"))?;
            host.get_or_insert_with(|| authority.to_owned());
            servers.push(Server { addr, idle: Mutex::new(Vec::new()), down_until: Mutex::new(None) });
        }
        let host = host.ok_or_else(|| anyhow::anyhow!("no server to send requests to"))?;
        Ok(Wire { servers, next: AtomicUsize::new(0), host })
    }

    /// A request line for `method` and `path`, with `Host`.
    pub fn request(&self, method: &str, path: &str) -> Request {
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(path.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        bytes.extend_from_slice(self.host.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        Request { bytes }
    }

    /// The server the next request goes to: the next in turn that has not refused a connection
    /// lately (when all have, the next in turn).
    fn pick(&self) -> &Server {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let now = std::time::Instant::now();
        (0..self.servers.len())
            .map(|k| &self.servers[(first + k) % self.servers.len()])
            .find(|server| server.down_until.lock().expect("never poisoned").is_none_or(|until| until <= now))
            .unwrap_or(&self.servers[first % self.servers.len()])
    }

    /// Sends `request` (from [`Request::body`]) to the next server and reads the answer. A
    /// kept-alive connection the server closed meanwhile is replaced and the request sent once
    /// more on a fresh one (every buyer request is safe to repeat: idempotency keys, payment
    /// references, tickets).
    pub async fn send(&self, request: &[u8]) -> io::Result<Answer> {
        let server = self.pick();
        let reused = server.idle.lock().expect("never poisoned").pop();
        if let Some(mut conn) = reused {
            if let Ok(answer) = exchange(&mut conn, request).await {
                server.idle.lock().expect("never poisoned").push(conn);
                return Ok(answer);
            }
        }
        let mut conn = server.connect().await?;
        let answer = exchange(&mut conn, request).await?;
        server.idle.lock().expect("never poisoned").push(conn);
        Ok(answer)
    }
}

impl Server {
    /// A new connection (Nagle off: requests are small and answered one at a time).
    async fn connect(&self) -> io::Result<Conn> {
        let stream = TcpStream::connect(self.addr).await.inspect_err(|_| {
            *self.down_until.lock().expect("never poisoned") = Some(std::time::Instant::now() + DOWN_FOR);
        })?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096) })
    }
}

/// Longest a request may take once written before the harness calls it failed: far beyond any
/// answer a live server gives, short enough that a hung one cannot hold a pool slot forever.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn exchange(conn: &mut Conn, request: &[u8]) -> io::Result<Answer> {
    let answered = async {
        conn.stream.write_all(request).await?;
        read_answer(conn).await
    };
    answered_in_time(answered).await
}

/// `answer`, or a time-out error once [`ANSWER_TIMEOUT`] has passed.
async fn answered_in_time<T>(answer: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 120 s")))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads more bytes into the buffer; end of stream is an error (the answer was incomplete).
async fn fill(conn: &mut Conn) -> io::Result<()> {
    let len = conn.buf.len();
    conn.buf.resize(len + 8192, 0);
    let n = conn.stream.read(&mut conn.buf[len..]).await?;
    conn.buf.truncate(len + n);
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(())
}

/// A response's status line and the headers the harness reads.
struct Head {
    status: u16,
    retry_after: Option<u64>,
    length: Option<usize>,
    chunked: bool,
}

/// Reads a response head, leaving the body's first bytes in the buffer.
async fn read_head(conn: &mut Conn) -> io::Result<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&conn.buf).map_err(|_| invalid("malformed response head"))? {
            httparse::Status::Complete(end) => {
                let mut head = Head {
                    status: response.code.ok_or_else(|| invalid("no status"))?,
                    retry_after: None,
                    length: None,
                    chunked: false,
                };
                for h in response.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        head.length = Some(value.parse::<usize>().map_err(|_| invalid("content-length"))?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        head.chunked = value.eq_ignore_ascii_case("chunked");
                    } else if h.name.eq_ignore_ascii_case("retry-after") {
                        head.retry_after = value.parse().ok();
                    }
                }
                conn.buf.drain(..end);
                return Ok(head);
            }
            httparse::Status::Partial => fill(conn).await?,
        }
    }
}

/// Reads a whole body as `head` announces it.
async fn read_body(conn: &mut Conn, head: &Head) -> io::Result<Vec<u8>> {
    if head.chunked {
        let mut body = Vec::new();
        while let Some(chunk) = read_chunk(conn).await? {
            body.extend_from_slice(&chunk);
        }
        return Ok(body);
    }
    let length = head.length.unwrap_or(0);
    while conn.buf.len() < length {
        fill(conn).await?;
    }
    Ok(conn.buf.drain(..length).collect())
}

async fn read_answer(conn: &mut Conn) -> io::Result<Answer> {
    let head = read_head(conn).await?;
    let body = read_body(conn, &head).await?;
    Ok(Answer { status: head.status, retry_after: head.retry_after, body })
}

/// The next chunk of a chunked body; `None` after the last (empty) one.
async fn read_chunk(conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
    let (start, size) = loop {
        match httparse::parse_chunk_size(&conn.buf).map_err(|_| invalid("chunk size"))? {
            httparse::Status::Complete((start, size)) => break (start, usize::try_from(size).unwrap_or(usize::MAX)),
            httparse::Status::Partial => fill(conn).await?,
        }
    };
    // The chunk and its CRLF.
    while conn.buf.len() < start + size + 2 {
        fill(conn).await?;
    }
    if conn.buf[start + size..start + size + 2] != *b"\r\n" {
        return Err(invalid("chunk not followed by CRLF"));
    }
    let chunk = conn.buf[start..start + size].to_vec();
    conn.buf.drain(..start + size + 2);
    Ok((size > 0).then_some(chunk))
}

/// A Server-Sent Events stream on a connection of its own (a stream holds its connection for as
/// long as it lasts, so it never takes one of the pool's).
pub struct EventStream {
    conn: Conn,
    chunked: bool,
    /// Body bytes read and not yet split into events.
    pending: Vec<u8>,
}

/// One event: its name (`message` when unnamed) and its data.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

impl Wire {
    /// Sends `request` on a new connection and, when the answer is 200, returns the event
    /// stream; otherwise the answer.
    pub async fn open_stream(&self, request: &[u8]) -> io::Result<Result<EventStream, Answer>> {
        let mut conn = self.pick().connect().await?;
        conn.stream.write_all(request).await?;
        let head = answered_in_time(read_head(&mut conn)).await?;
        if head.status != 200 {
            let body = read_body(&mut conn, &head).await?;
            return Ok(Err(Answer { status: head.status, retry_after: head.retry_after, body }));
        }
        Ok(Ok(EventStream { conn, chunked: head.chunked, pending: Vec::new() }))
    }
}

impl EventStream {
    /// The next event with data (comments and keep-alives skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> io::Result<Option<Event>> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let mut event = Event { name: "message".to_owned(), data: String::new() };
                for line in String::from_utf8_lossy(&block).lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        name.trim_start().clone_into(&mut event.name);
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                    }
                }
                if event.data.is_empty() {
                    continue;
                }
                return Ok(Some(event));
            }
            if self.chunked {
                match read_chunk(&mut self.conn).await? {
                    Some(chunk) => self.pending.extend_from_slice(&chunk),
                    None => return Ok(None),
                }
            } else {
                match fill(&mut self.conn).await {
                    Ok(()) => self.pending.append(&mut self.conn.buf),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next canned answer.
    async fn canned(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let n = socket.read(&mut chunk).await.unwrap();
                    seen.extend_from_slice(&chunk[..n]);
                }
                socket.write_all(answer).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_sized_and_chunked_answers_on_one_connection() {
        let base = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let wire = Wire::new(&[base]).await.unwrap();
        let first = wire.send(&wire.request("GET", "/a").body(b"")).await.unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"hello"[..]));
        let second = wire.send(&wire.request("POST", "/b").header("x", "y").body(b"{}")).await.unwrap();
        assert_eq!((second.status, second.retry_after, second.body.as_slice()), (429, Some(3), &b"abcde"[..]));
        let third = wire.send(&wire.request("GET", "/c").body(b"")).await.unwrap();
        assert_eq!((third.status, third.body.len()), (204, 0));
        assert_eq!(wire.servers[0].idle.lock().unwrap().len(), 1, "one connection, kept alive throughout");
    }

    #[tokio::test]
    async fn reads_server_sent_events_across_chunks_skipping_keep_alives() {
        let base = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
              16\r\nevent: queue\ndata: {\"a\r\n4\r\n\":1}\r\n2\r\n\n\n\r\n3\r\n:\n\n\r\n\
              18\r\nevent: queue\ndata: two\n\n\r\n0\r\n\r\n",
        ])
        .await;
        let wire = Wire::new(&[base]).await.unwrap();
        let mut events = wire.open_stream(&wire.request("GET", "/events").body(b"")).await.unwrap().unwrap();
        let first = events.next().await.unwrap().unwrap();
        assert_eq!((first.name.as_str(), first.data.as_str()), ("queue", "{\"a\":1}"));
        let second = events.next().await.unwrap().unwrap();
        assert_eq!(second.data, "two");
        assert!(events.next().await.unwrap().is_none(), "the stream ended");
    }
}
