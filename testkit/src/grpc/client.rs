//! A client for `strait.test.Echo` over a tonic [`Channel`].

use bytes::Bytes;
use http::Uri;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::{IntoRequest, IntoStreamingRequest, Response, Status, Streaming};

use super::codec::BytesCodec;
use super::server::{BIDI, CLIENT_STREAM, SERVER_STREAM, UNARY};
use crate::wait::DEFAULT_TIMEOUT;

/// Calls the four `strait.test.Echo` methods; see the [module docs](super) for what they do.
///
/// Each call waits for the channel to be ready first. The channel built by
/// [`connect`](Self::connect) bounds connecting and each call by [`DEFAULT_TIMEOUT`] (a call
/// over time fails with `CANCELLED`/`DEADLINE_EXCEEDED`).
#[derive(Debug, Clone)]
pub struct EchoClient {
    inner: Grpc<Channel>,
}

impl EchoClient {
    /// Connects to `uri` (`http://host:port`, h2c).
    ///
    /// # Errors
    ///
    /// Fails if `uri` is unusable or the connection cannot be established in time.
    pub async fn connect(uri: Uri) -> anyhow::Result<Self> {
        let channel = Endpoint::from(uri)
            .connect_timeout(DEFAULT_TIMEOUT)
            .timeout(DEFAULT_TIMEOUT)
            .connect()
            .await?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps a channel built by the test (to set `origin`, timeouts, or connect lazily).
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            inner: Grpc::new(channel),
        }
    }

    /// Calls `Unary`.
    ///
    /// # Errors
    ///
    /// The call's status when it is not `OK`, or `UNAVAILABLE` if the channel is not ready.
    pub async fn unary(&mut self, req: impl IntoRequest<Bytes>) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        self.inner
            .unary(req.into_request(), path(UNARY), BytesCodec)
            .await
    }

    /// Calls `ServerStream`; the response streams the copies.
    ///
    /// # Errors
    ///
    /// As [`unary`](Self::unary), for the response head.
    pub async fn server_stream(
        &mut self,
        req: impl IntoRequest<Bytes>,
    ) -> Result<Response<Streaming<Bytes>>, Status> {
        self.ready().await?;
        self.inner
            .server_streaming(req.into_request(), path(SERVER_STREAM), BytesCodec)
            .await
    }

    /// Calls `ClientStream` with the messages of `req`.
    ///
    /// # Errors
    ///
    /// As [`unary`](Self::unary).
    pub async fn client_stream(
        &mut self,
        req: impl IntoStreamingRequest<Message = Bytes>,
    ) -> Result<Response<Bytes>, Status> {
        self.ready().await?;
        self.inner
            .client_streaming(
                req.into_streaming_request(),
                path(CLIENT_STREAM),
                BytesCodec,
            )
            .await
    }

    /// Calls `Bidi`; echoes stream back while `req` is still sending.
    ///
    /// # Errors
    ///
    /// As [`unary`](Self::unary), for the response head.
    pub async fn bidi(
        &mut self,
        req: impl IntoStreamingRequest<Message = Bytes>,
    ) -> Result<Response<Streaming<Bytes>>, Status> {
        self.ready().await?;
        self.inner
            .streaming(req.into_streaming_request(), path(BIDI), BytesCodec)
            .await
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }
}

fn path(method: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(method)
}
