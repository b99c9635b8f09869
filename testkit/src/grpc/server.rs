//! The `strait.test.Echo` service and a server running it on loopback.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Uri};
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, BoxStream, Service};
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService,
    UnaryService,
};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use super::codec::BytesCodec;
use crate::task::Background;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "strait.test.Echo";
/// Path of the unary method.
pub const UNARY: &str = "/strait.test.Echo/Unary";
/// Path of the server-streaming method.
pub const SERVER_STREAM: &str = "/strait.test.Echo/ServerStream";
/// Path of the client-streaming method.
pub const CLIENT_STREAM: &str = "/strait.test.Echo/ClientStream";
/// Path of the bidirectional-streaming method.
pub const BIDI: &str = "/strait.test.Echo/Bidi";

/// The status a `fail` message gets: `FAILED_PRECONDITION`, message `told to fail`, details
/// `detail-bytes`.
pub fn fail_status() -> Status {
    Status::with_details(
        Code::FailedPrecondition,
        "told to fail",
        Bytes::from_static(b"detail-bytes"),
    )
}

/// A running gRPC echo server (h2c on `127.0.0.1`). Dropping it stops the server.
#[derive(Debug)]
pub struct GrpcEcho {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    _serve: Background,
}

impl GrpcEcho {
    /// Starts a server named `grpc`; as [`start_named`](Self::start_named).
    ///
    /// # Panics
    ///
    /// As [`start_named`](Self::start_named).
    pub async fn start() -> Self {
        Self::start_named("grpc").await
    }

    /// Binds `127.0.0.1:0` and serves [`EchoService`] on the current runtime; `name` is sent
    /// in the `x-upstream` header.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime, if `name` is not a valid header value, or if binding
    /// a loopback port fails.
    pub async fn start_named(name: &str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding 127.0.0.1:0 for a gRPC server");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let service = EchoService::new(name);
        let calls = service.calls.clone();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = Server::builder().add_service(service);
        let serve = Background::spawn(async move {
            if let Err(error) = router.serve_with_incoming(incoming).await {
                debug!(%addr, %error, "gRPC server stopped");
            }
        });
        Self {
            addr,
            calls,
            _serve: serve,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, for [`EchoClient::connect`](super::EchoClient::connect).
    pub fn uri(&self) -> Uri {
        Uri::try_from(format!("http://{}", self.addr)).expect("a socket address forms a valid URI")
    }

    /// How many calls have arrived (any method, counted when the request head arrives).
    pub fn calls_seen(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The `strait.test.Echo` service as a tower service, for
/// [`Server::add_service`](tonic::transport::Server::add_service).
#[derive(Debug, Clone)]
pub struct EchoService {
    name: HeaderValue,
    calls: Arc<AtomicUsize>,
}

impl EchoService {
    /// A service that sends `x-upstream: <name>`.
    ///
    /// # Panics
    ///
    /// Panics if `name` is not a valid header value.
    pub fn new(name: &str) -> Self {
        Self {
            name: HeaderValue::try_from(name)
                .expect("a gRPC server name must be a valid header value"),
            calls: Arc::default(),
        }
    }
}

impl NamedService for EchoService {
    const NAME: &'static str = SERVICE_NAME;
}

impl Service<http::Request<Body>> for EchoService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let name = self.name.clone();
        let echo = req.headers().get("x-echo").cloned();
        Box::pin(async move {
            let mut grpc = Grpc::new(BytesCodec);
            let mut response = match req.uri().path() {
                UNARY => grpc.unary(Unary, req).await,
                SERVER_STREAM => grpc.server_streaming(ServerStream, req).await,
                CLIENT_STREAM => grpc.client_streaming(ClientStream, req).await,
                BIDI => grpc.streaming(Bidi, req).await,
                _ => Status::unimplemented("strait.test.Echo has no such method").into_http(),
            };
            response.headers_mut().insert("x-upstream", name);
            if let Some(value) = echo {
                response = with_echo(response, value);
            }
            Ok(response)
        })
    }
}

/// Adds `x-echo` to the headers and `x-echo-trailer` to the trailers, or to the headers when
/// the response is trailers-only (it already carries `grpc-status`).
fn with_echo(mut response: http::Response<Body>, value: HeaderValue) -> http::Response<Body> {
    response.headers_mut().insert("x-echo", value.clone());
    if response.headers().contains_key("grpc-status") {
        response.headers_mut().insert("x-echo-trailer", value);
        return response;
    }
    let mut extra = HeaderMap::new();
    extra.insert("x-echo-trailer", value);
    response.map(|body| Body::new(body.with_trailers(ready(Some(Ok(extra))))))
}

// One type per method, as tonic's generated code does: `Grpc` drives each through its
// method-kind trait.

#[derive(Debug, Clone, Copy)]
struct Unary;

impl UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let msg = req.into_inner();
        ready(if msg == "fail" {
            Err(fail_status())
        } else {
            Ok(Response::new(msg))
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct ServerStream;

impl ServerStreamingService<Bytes> for ServerStream {
    type Response = Bytes;
    type ResponseStream = BoxStream<Bytes>;
    type Future = Ready<Result<Response<BoxStream<Bytes>>, Status>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let msg = req.into_inner();
        let copies = msg.first().copied().unwrap_or(0);
        let stream = stream::iter(std::iter::repeat_n(msg, copies.into()).map(Ok));
        ready(Ok(Response::new(Box::pin(stream))))
    }
}

#[derive(Debug, Clone, Copy)]
struct ClientStream;

impl ClientStreamingService<Bytes> for ClientStream {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        let mut messages = req.into_inner();
        Box::pin(async move {
            let mut all = BytesMut::new();
            while let Some(msg) = messages.message().await? {
                all.extend_from_slice(&msg);
            }
            Ok(Response::new(all.freeze()))
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bidi;

impl StreamingService<Bytes> for Bidi {
    type Response = Bytes;
    type ResponseStream = BoxStream<Bytes>;
    type Future = Ready<Result<Response<BoxStream<Bytes>>, Status>>;

    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        // Echo until the client ends, a read fails, or a `fail` message: the last two end
        // the call with that status.
        let echoes = stream::unfold(Some(req.into_inner()), |messages| async move {
            let mut messages = messages?;
            match messages.next().await? {
                Ok(msg) if msg == "fail" => Some((Err(fail_status()), None)),
                Ok(msg) => Some((Ok(msg), Some(messages))),
                Err(status) => Some((Err(status), None)),
            }
        });
        ready(Ok(Response::new(Box::pin(echoes))))
    }
}
