//! One HTTP/1.1 or h2c client connection over `hyper::client::conn`.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tracing::debug;

use crate::task::Background;
use crate::wait::DEFAULT_TIMEOUT;

type BoxError = Box<dyn StdError + Send + Sync>;
type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// One client connection, HTTP/1.1 or h2c with prior knowledge.
///
/// Requests go out exactly as given, except that an HTTP/1.1 request without `host` gets
/// `host: <addr>`, and an HTTP/2 request with an origin-form URI (`/path`) gets scheme `http`
/// and the authority from its `host` header, or `<addr>`.
///
/// HTTP/1.1 sends one request at a time: a second [`send`](Self::send) waits until the
/// previous response body has been read to its end (or times out). HTTP/2 multiplexes.
/// Dropping the client closes the connection.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    sender: Sender,
    timeout: Duration,
    conn: Background,
}

#[derive(Debug)]
enum Sender {
    Http1(Mutex<http1::SendRequest<RequestBody>>),
    Http2(http2::SendRequest<RequestBody>),
}

/// Opens an HTTP/1.1 connection to `addr` (with upgrades enabled), within
/// [`DEFAULT_TIMEOUT`].
///
/// # Errors
///
/// Fails if the TCP connect or the handshake fails or times out.
pub async fn http1_client(addr: SocketAddr) -> anyhow::Result<Client> {
    let io = connect(addr).await?;
    let (sender, conn) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
    let conn = Background::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            debug!(%addr, %error, "client HTTP/1.1 connection ended with error");
        }
    });
    Ok(Client {
        addr,
        sender: Sender::Http1(Mutex::new(sender)),
        timeout: DEFAULT_TIMEOUT,
        conn,
    })
}

/// Opens an h2c connection (HTTP/2 with prior knowledge) to `addr`, within
/// [`DEFAULT_TIMEOUT`].
///
/// # Errors
///
/// Fails if the TCP connect or the HTTP/2 handshake fails or times out.
pub async fn h2c_client(addr: SocketAddr) -> anyhow::Result<Client> {
    let io = connect(addr).await?;
    let handshake = http2::handshake(TokioExecutor::new(), io);
    let (sender, conn) = tokio::time::timeout(DEFAULT_TIMEOUT, handshake)
        .await
        .context("HTTP/2 handshake timed out")?
        .context("HTTP/2 handshake")?;
    let conn = Background::spawn(async move {
        if let Err(error) = conn.await {
            debug!(%addr, %error, "client HTTP/2 connection ended with error");
        }
    });
    Ok(Client {
        addr,
        sender: Sender::Http2(sender),
        timeout: DEFAULT_TIMEOUT,
        conn,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TokioIo<TcpStream>> {
    let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(stream))
}

impl Client {
    /// Sets how long [`send`](Self::send) waits for the response head (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `HTTP_11` or `HTTP_2`.
    pub fn version(&self) -> Version {
        match self.sender {
            Sender::Http1(_) => Version::HTTP_11,
            Sender::Http2(_) => Version::HTTP_2,
        }
    }

    /// Whether the connection has ended (the peer closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.conn.is_finished()
    }

    /// Sends `req` and waits for the response head, within the client's timeout. The body is
    /// left to the caller (see [`crate::body`] for bounded readers).
    ///
    /// # Errors
    ///
    /// Fails if the connection cannot take the request, the exchange fails (reset, closed
    /// early), or the head does not arrive in time.
    pub async fn send<B>(&self, req: Request<B>) -> anyhow::Result<Response<Incoming>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let req = self.normalize(req.map(|b| b.map_err(Into::into).boxed_unsync()))?;
        let exchange = async {
            match &self.sender {
                Sender::Http1(sender) => {
                    let response = {
                        let mut sender = sender.lock().await;
                        sender
                            .ready()
                            .await
                            .context("HTTP/1.1 connection not ready")?;
                        sender.send_request(req)
                    };
                    response.await.context("HTTP/1.1 exchange")
                }
                Sender::Http2(sender) => {
                    let mut sender = sender.clone();
                    sender
                        .ready()
                        .await
                        .context("HTTP/2 connection not ready")?;
                    sender.send_request(req).await.context("HTTP/2 exchange")
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .with_context(|| format!("no response head within {:?}", self.timeout))?
    }

    /// Sends `GET path` with an empty body; as [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and if `path` is not a valid URI path.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response<Incoming>> {
        let req = Request::get(path)
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("building GET {path}"))?;
        self.send(req).await
    }

    fn normalize(&self, mut req: Request<RequestBody>) -> anyhow::Result<Request<RequestBody>> {
        match self.sender {
            Sender::Http1(_) => {
                if !req.headers().contains_key(HOST) {
                    let host = HeaderValue::try_from(self.addr.to_string())?;
                    req.headers_mut().insert(HOST, host);
                }
            }
            Sender::Http2(_) => {
                if req.uri().scheme().is_none() {
                    let authority = match req.headers().get(HOST) {
                        Some(host) => Authority::try_from(host.as_bytes())?,
                        None => Authority::try_from(self.addr.to_string())?,
                    };
                    let mut parts = req.uri().clone().into_parts();
                    parts.scheme = Some(Scheme::HTTP);
                    parts.authority = Some(authority);
                    *req.uri_mut() = Uri::from_parts(parts)?;
                }
                *req.version_mut() = Version::HTTP_2;
            }
        }
        Ok(req)
    }
}
