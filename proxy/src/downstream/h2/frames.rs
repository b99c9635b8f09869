//! Handling of each frame type the client sends (RFC 9113 §6): stream and connection errors,
//! flow control, the limits against floods.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};

use super::request::Fields;
use super::{
    Body, ConnError, Connection, MAX_EMPTY_FRAMES, Reader, State, Stream, conn_error, stream,
};
use crate::error::ProxyError;
use crate::forward;
use crate::http2::frame::{self, Head, Reason, flag, kind, setting};

impl Connection {
    pub(super) fn on_frame(
        &self,
        reader: &mut Reader,
        head: Head,
        payload: Bytes,
    ) -> Result<(), ConnError> {
        if let Some((stream, ..)) = &reader.block
            && (head.kind != kind::CONTINUATION || head.stream != *stream)
        {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "a header block interrupted by another frame",
            ));
        }
        let empty = payload.is_empty();
        match head.kind {
            kind::DATA => self.on_data(head, payload)?,
            kind::HEADERS => self.on_headers(reader, head, payload)?,
            kind::CONTINUATION => self.on_continuation(reader, head, &payload)?,
            kind::PRIORITY => self.on_priority(head, &payload)?,
            kind::RST_STREAM => self.on_reset(head, &payload)?,
            kind::SETTINGS => self.on_settings(head, &payload)?,
            kind::PUSH_PROMISE => {
                return Err(conn_error(
                    Reason::PROTOCOL_ERROR,
                    "PUSH_PROMISE from a client",
                ));
            }
            kind::PING => self.on_ping(head, &payload)?,
            kind::GOAWAY => self.on_goaway(head)?,
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload)?,
            _ => {} // unknown frame types are ignored (RFC 9113 §4.1)
        }
        let carries_nothing = empty
            && ((head.kind == kind::DATA && !head.has(flag::END_STREAM))
                || head.kind == kind::CONTINUATION && !head.has(flag::END_HEADERS));
        if carries_nothing {
            reader.empty_frames += 1;
            if reader.empty_frames > MAX_EMPTY_FRAMES {
                return Err(conn_error(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many empty frames",
                ));
            }
        } else if head.kind == kind::DATA || head.kind == kind::HEADERS {
            reader.empty_frames = 0;
        }
        Ok(())
    }

    fn on_data(&self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let data = frame::unpadded(head, &payload)
            .ok_or_else(|| conn_error(Reason::PROTOCOL_ERROR, "padding longer than the frame"))?;
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        let len = payload.len();
        state.recv_window -= len as i64;
        if state.recv_window < 0 {
            return Err(conn_error(
                Reason::FLOW_CONTROL_ERROR,
                "DATA past the connection window",
            ));
        }
        if head.stream > state.last_stream {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        let padding = len - data.len();
        let Some(stream) = state.stream(head.stream) else {
            // A stream that ended, maybe reset by this side while the client was still
            // sending: ignored (RFC 9113 §5.1), its bytes given back to the window.
            state.give_back_connection(len);
            return Ok(());
        };
        if stream.recv_closed {
            state.give_back_connection(len);
            return self.local_reset(state, head.stream, Reason::STREAM_CLOSED);
        }
        stream.recv_window -= len as i64;
        if stream.recv_window < 0 {
            state.give_back_connection(len);
            return self.local_reset(state, head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        let end = head.has(flag::END_STREAM);
        let data_len = data.len() as u64;
        let length_ok = match &mut stream.expected {
            Some(expected) => match expected.checked_sub(data_len) {
                Some(left) => {
                    *expected = left;
                    !end || left == 0
                }
                None => false,
            },
            None => true,
        };
        if !length_ok {
            state.give_back_connection(len);
            return self.local_reset(state, head.stream, Reason::PROTOCOL_ERROR);
        }
        if !data.is_empty() {
            stream.chunks.push_back(payload.slice(data));
        }
        stream.recv_closed = end;
        if let Some(waker) = stream.body_waker.take() {
            waker.wake();
        }
        // Padding is read at once.
        stream.recv_unacked += u32::try_from(padding).unwrap_or(0);
        state.give_back_connection(padding);
        if end {
            state.remove_if_done(head.stream);
        }
        Ok(())
    }

    fn on_headers(&self, reader: &mut Reader, head: Head, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let range = frame::unpadded(head, &payload)
            .ok_or_else(|| conn_error(Reason::PROTOCOL_ERROR, "padding longer than the frame"))?;
        let mut start = range.start;
        if head.has(flag::PRIORITY) {
            if range.len() < 5 {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            start += 5;
        }
        let fragment = payload.slice(start..range.end);
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            self.on_header_block(reader, head.stream, end_stream, &fragment)
        } else {
            let mut block = BytesMut::with_capacity(fragment.len() * 2);
            block.extend_from_slice(&fragment);
            reader.block = Some((head.stream, end_stream, block));
            Ok(())
        }
    }

    fn on_continuation(
        &self,
        reader: &mut Reader,
        head: Head,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        let Some((stream, end_stream, mut block)) = reader.block.take() else {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        // The encoded block of a list at the limit is at most about its size; a client that
        // sends far more is flooding (CVE-2024-27316 and kin).
        if block.len() + payload.len()
            > self.shared.limits.max_header_list.saturating_mul(2) + 16_384
        {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "header block too large",
            ));
        }
        block.extend_from_slice(payload);
        if head.has(flag::END_HEADERS) {
            self.on_header_block(reader, stream, end_stream, &block.freeze())
        } else {
            reader.block = Some((stream, end_stream, block));
            Ok(())
        }
    }

    /// A complete header block: a new request, or the trailers of one.
    fn on_header_block(
        &self,
        reader: &mut Reader,
        id: u32,
        end_stream: bool,
        block: &Bytes,
    ) -> Result<(), ConnError> {
        let limits = self.shared.limits;
        let spare = self.shared.state.borrow_mut().spare_maps.pop();
        let mut fields = Fields::new(limits, spare);
        let Reader { decoder, names, .. } = reader;
        decoder
            .decode(block, &mut |name, value, sensitive| {
                fields.field(names, name, value, sensitive)
            })
            .map_err(|_| conn_error(Reason::COMPRESSION_ERROR, "undecodable header block"))?;
        let mut guard = self.shared.state.borrow_mut();
        let state = &mut *guard;
        if let Some(stream) = state.stream(id) {
            // Trailers.
            if stream.recv_closed {
                return self.local_reset(state, id, Reason::STREAM_CLOSED);
            }
            if !end_stream || fields.pseudo_seen || fields.malformed.is_some() || fields.too_large {
                return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
            }
            stream.trailers = Some(fields.headers);
            stream.recv_closed = true;
            if let Some(waker) = stream.body_waker.take() {
                waker.wake();
            }
            state.remove_if_done(id);
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "HEADERS on a server stream",
            ));
        }
        if id <= state.last_stream {
            // A stream that ended, maybe reset by this side: ignored (RFC 9113 §5.1).
            return Ok(());
        }
        state.last_stream = id;
        if state.going_away {
            // Past the GOAWAY's last stream: not taken (the client may retry it elsewhere).
            return Ok(());
        }
        if state.streams.len() >= limits.max_streams as usize {
            frame::put_reset(&mut state.out.tail, id, Reason::REFUSED_STREAM);
            self.shared.conn.stats.http2_proxy_resets.inc();
            state.wake_writer();
            return Ok(());
        }
        if let Some(reason) = fields.malformed {
            tracing::debug!(stream = id, reason, "malformed HTTP/2 request");
            return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
        }
        let expected = fields.content_length;
        if end_stream && expected.is_some_and(|n| n > 0) {
            return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
        }
        let request = if fields.too_large {
            Err(ProxyError::BadRequestHead {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason: "request header fields too large",
            })
        } else {
            match fields.request(Body::new(&self.shared, id, expected)) {
                Ok(request) => Ok(request),
                Err(reason) => {
                    tracing::debug!(stream = id, reason, "malformed HTTP/2 request");
                    return self.local_reset(state, id, Reason::PROTOCOL_ERROR);
                }
            }
        };
        let send_window = state.peer_initial_window;
        state
            .streams
            .push(Stream::new(id, send_window, expected, end_stream));
        drop(guard);
        let task = match request {
            Ok(request) => {
                let head_request = request.method() == Method::HEAD;
                let exchange = forward::handle(
                    Rc::clone(&self.shared.conn),
                    request,
                    self.shared.busy.enter(),
                );
                // Boxed: the task is made by moving its future twice, and the exchange's is
                // most of it.
                tokio::task::spawn_local(stream::respond(
                    Rc::clone(&self.shared),
                    id,
                    Box::pin(exchange),
                    head_request,
                ))
            }
            Err(err) => {
                tracing::debug!(stream = id, error = %err, "bad HTTP/2 request head");
                let conn = &self.shared.conn;
                if conn.worker.metrics {
                    conn.stats.unrouted[crate::metrics::status_class(err.status().as_u16())].inc();
                }
                let response = forward::error_response(&err, Version::HTTP_2);
                tokio::task::spawn_local(stream::respond(
                    Rc::clone(&self.shared),
                    id,
                    std::future::ready(Ok(response)),
                    false,
                ))
            }
        };
        let mut state = self.shared.state.borrow_mut();
        match state.stream(id) {
            Some(stream) => stream.task = Some(task),
            None => task.abort(),
        }
        Ok(())
    }

    /// Resets a stream for the client's error; too many such resets end the connection.
    fn local_reset(&self, state: &mut State, id: u32, reason: Reason) -> Result<(), ConnError> {
        state.reset(id, reason);
        self.shared.conn.stats.http2_proxy_resets.inc();
        state.local_resets += 1;
        if state.local_resets > self.shared.limits.max_local_resets {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "too many stream errors",
            ));
        }
        Ok(())
    }

    fn on_priority(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            let mut state = self.shared.state.borrow_mut();
            return self.local_reset(&mut state, head.stream, Reason::FRAME_SIZE_ERROR);
        }
        Ok(()) // priorities are not followed (RFC 9113 §5.3.2 deprecates them)
    }

    fn on_reset(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
        }
        if payload.len() != 4 {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "RST_STREAM not 4 bytes",
            ));
        }
        let reason = Reason(u32::from_be_bytes([
            payload[0], payload[1], payload[2], payload[3],
        ]));
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        if head.stream > state.last_stream {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(index) = state.streams.iter().position(|s| s.id == head.stream) else {
            return Ok(());
        };
        let mut stream = state.streams.swap_remove(index);
        if !stream.send_closed {
            state.client_resets += 1;
            self.shared.conn.stats.http2_client_resets.inc();
        }
        state.forget(&mut stream, reason);
        if state.client_resets > self.shared.limits.max_client_resets {
            return Err(conn_error(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset",
            ));
        }
        Ok(())
    }

    fn on_settings(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            ));
        }
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        for (id, value) in frame::settings(payload) {
            match id {
                setting::HEADER_TABLE_SIZE => state.encoder.peer_table_size_changed(),
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(conn_error(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH not 0 or 1",
                    ));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    let delta = value - state.peer_initial_window;
                    state.peer_initial_window = value;
                    for stream in &mut state.streams {
                        stream.send_window += delta;
                        if stream.send_window > frame::MAX_WINDOW {
                            return Err(conn_error(
                                Reason::FLOW_CONTROL_ERROR,
                                "stream window too large",
                            ));
                        }
                        if delta > 0
                            && let Some(waker) = stream.send_waker.take()
                        {
                            waker.wake();
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..1 << 24).contains(&value) {
                        return Err(conn_error(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    state.peer_max_frame = value as usize;
                }
                _ => {}
            }
        }
        frame::put_settings_ack(&mut state.out.tail);
        state.wake_writer();
        Ok(())
    }

    fn on_ping(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "PING on a stream"));
        }
        let Ok(data) = <[u8; 8]>::try_from(payload) else {
            return Err(conn_error(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes"));
        };
        if !head.has(flag::ACK) {
            let mut state = self.shared.state.borrow_mut();
            frame::put_ping_ack(&mut state.out.tail, data);
            state.wake_writer();
        }
        Ok(())
    }

    fn on_goaway(&self, head: Head) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
        }
        // The client opens no more streams: those open finish, then the connection closes.
        self.graceful_shutdown();
        Ok(())
    }

    fn on_window_update(&self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        let Ok(bytes) = <[u8; 4]>::try_from(payload) else {
            return Err(conn_error(
                Reason::FRAME_SIZE_ERROR,
                "WINDOW_UPDATE not 4 bytes",
            ));
        };
        let increment = i64::from(u32::from_be_bytes(bytes) & 0x7fff_ffff);
        let mut state = self.shared.state.borrow_mut();
        let state = &mut *state;
        if head.stream == 0 {
            if increment == 0 {
                return Err(conn_error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            state.send_window += increment;
            if state.send_window > frame::MAX_WINDOW {
                return Err(conn_error(
                    Reason::FLOW_CONTROL_ERROR,
                    "connection window too large",
                ));
            }
            state.wake_blocked();
            return Ok(());
        }
        if head.stream > state.last_stream {
            return Err(conn_error(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(stream) = state.stream(head.stream) else {
            return Ok(()); // a stream that ended
        };
        if increment == 0 {
            return self.local_reset(state, head.stream, Reason::PROTOCOL_ERROR);
        }
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            return self.local_reset(state, head.stream, Reason::FLOW_CONTROL_ERROR);
        }
        if let Some(waker) = stream.send_waker.take() {
            waker.wake();
        }
        Ok(())
    }
}
