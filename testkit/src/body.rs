//! Deterministic streaming bodies and bounded readers for checking them.
//!
//! Byte `i` of every pattern body is [`pattern_byte(i)`](pattern_byte), so a receiver can
//! verify a body of any size by length and [`checksum`](crate::checksum()) alone, without
//! either side holding the whole body. The pattern has period 251 (prime), so no two 64 KiB
//! chunks are equal and a duplicated, dropped or reordered chunk changes the checksum.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::checksum::Checksum;
use crate::wait::DEFAULT_TIMEOUT;

/// Size of each data frame a [`PatternBody`] yields (the last one may be shorter).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Byte `i` of the deterministic pattern.
pub fn pattern_byte(i: u64) -> u8 {
    // `as u8` keeps the low bits on purpose: 251 < 256, and the second term only varies the
    // pattern between 64 KiB blocks.
    ((i % 251) as u8) ^ ((i / CHUNK_SIZE as u64) as u8)
}

/// Fills `buf` with the pattern starting at byte `offset`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    for (i, b) in (offset..).zip(buf.iter_mut()) {
        *b = pattern_byte(i);
    }
}

/// The checksum of the first `len` bytes of the pattern, computed in bounded memory.
pub fn pattern_checksum(len: u64) -> u64 {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(CHUNK_SIZE as u64) as usize;
        fill_pattern(offset, &mut buf[..n]);
        sum.update(&buf[..n]);
        offset += n as u64;
    }
    sum.value()
}

/// A body of `len` pattern bytes, produced one [`CHUNK_SIZE`] frame at a time.
///
/// Its size hint is exact, so HTTP/1.1 sends it with `content-length`.
#[derive(Debug)]
pub struct PatternBody {
    offset: u64,
    len: u64,
}

/// A [`PatternBody`] of `len` bytes.
pub fn pattern_body(len: u64) -> PatternBody {
    PatternBody { offset: 0, len }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let left = self.len - self.offset;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = left.min(CHUNK_SIZE as u64) as usize;
        let mut chunk = BytesMut::zeroed(n);
        fill_pattern(self.offset, &mut chunk);
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}

/// What a body delivered: its length, checksum and trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySummary {
    /// Bytes of data received.
    pub len: u64,
    /// [`Checksum`] value of the data.
    pub checksum: u64,
    /// Trailers, if a trailers frame arrived.
    pub trailers: Option<HeaderMap>,
}

/// Reads `body` to the end without keeping it, within [`DEFAULT_TIMEOUT`].
///
/// # Errors
///
/// Fails if the body errors (for example the peer reset the stream) or does not end within
/// the timeout.
pub async fn summarize_body<B>(body: B) -> anyhow::Result<BodySummary>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut sum = Checksum::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| anyhow::Error::from_boxed(e.into()))?;
            match frame.into_data() {
                Ok(mut data) => {
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        let n = chunk.len();
                        sum.update(chunk);
                        data.advance(n);
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        Ok(BodySummary {
            len: sum.len(),
            checksum: sum.value(),
            trailers,
        })
    };
    tokio::time::timeout(DEFAULT_TIMEOUT, read)
        .await
        .context("body did not end in time")?
}

/// Reads `body` to the end and returns its length and checksum, within [`DEFAULT_TIMEOUT`].
///
/// # Errors
///
/// As [`summarize_body`].
pub async fn read_body_checksum<B>(body: B) -> anyhow::Result<(u64, u64)>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let summary = summarize_body(body).await?;
    Ok((summary.len, summary.checksum))
}

/// Reads `body` into memory, within [`DEFAULT_TIMEOUT`]. For small bodies.
///
/// # Errors
///
/// As [`summarize_body`].
pub async fn read_body_bytes<B>(body: B) -> anyhow::Result<Bytes>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let collected = tokio::time::timeout(DEFAULT_TIMEOUT, body.collect())
        .await
        .context("body did not end in time")?
        .map_err(|e| anyhow::Error::from_boxed(e.into()))?;
    Ok(collected.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum;

    fn pattern_vec(len: u64) -> Vec<u8> {
        (0..len).map(pattern_byte).collect()
    }

    #[tokio::test]
    async fn pattern_body_streams_exact_chunks() {
        let len = 2 * CHUNK_SIZE as u64 + 10;
        let mut body = pattern_body(len);
        assert_eq!(body.size_hint().exact(), Some(len));
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            sizes.push(data.len());
            all.extend_from_slice(&data);
        }
        assert_eq!(sizes, [CHUNK_SIZE, CHUNK_SIZE, 10]);
        assert_eq!(all, pattern_vec(len));
    }

    #[tokio::test]
    async fn read_body_checksum_matches_pattern_checksum() {
        for len in [0, 1, 250, 251, CHUNK_SIZE as u64, 3 * CHUNK_SIZE as u64 + 7] {
            let (got_len, sum) = read_body_checksum(pattern_body(len)).await.unwrap();
            assert_eq!(got_len, len);
            assert_eq!(sum, pattern_checksum(len), "len {len}");
            assert_eq!(sum, checksum(&pattern_vec(len)), "len {len}");
        }
    }

    #[test]
    fn chunks_differ() {
        let chunk = CHUNK_SIZE as u64;
        let first: Vec<u8> = (0..chunk).map(pattern_byte).collect();
        let second: Vec<u8> = (chunk..2 * chunk).map(pattern_byte).collect();
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn summary_keeps_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", "1".parse().unwrap());
        let body = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hi"))),
            Ok(Frame::trailers(trailers.clone())),
        ]));
        let summary = summarize_body(body).await.unwrap();
        assert_eq!(summary.len, 2);
        assert_eq!(summary.checksum, checksum(b"hi"));
        assert_eq!(summary.trailers, Some(trailers));
    }
}
