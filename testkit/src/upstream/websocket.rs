//! WebSocket echo: the HTTP/1.1 upgrade answered by hyper, then tokio-tungstenite on the
//! upgraded connection.
//!
//! hyper writes the `101` itself, so the server side of the RFC 6455 handshake is done here
//! (checking the key and deriving `sec-websocket-accept`) and tungstenite starts on the raw
//! upgraded stream with [`WebSocketStream::from_raw_socket`].

use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use super::respond::{ResponseBody, bad_request, empty, reply};
use super::server::Shared;

/// Whether the request asks to upgrade to WebSocket.
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade with `101` and spawns the echo session on the upgraded connection.
pub(super) fn accept(shared: &Shared, parts: &mut request::Parts) -> Response<ResponseBody> {
    let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY) else {
        return bad_request("websocket upgrade without sec-websocket-key");
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // HTTP/2 requests carry no upgrade (extended CONNECT is not supported here).
        return bad_request("websocket upgrade is only supported over HTTP/1.1");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let name = shared.name.clone();
    let session = tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => echo(&name, TokioIo::new(upgraded)).await,
            Err(error) => debug!(%name, %error, "websocket upgrade failed"),
        }
    });
    shared.track_upgrade(session.abort_handle());

    let mut response = reply(StatusCode::SWITCHING_PROTOCOLS, empty());
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::try_from(accept_key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Echoes text and binary messages until the peer closes. Pings are answered and closes
/// acknowledged by tungstenite itself.
async fn echo<S>(name: &str, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg) if msg.is_text() || msg.is_binary() => {
                if let Err(error) = ws.send(msg).await {
                    debug!(%name, %error, "websocket echo send failed");
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => {
                debug!(%name, %error, "websocket echo read failed");
                break;
            }
        }
    }
}
