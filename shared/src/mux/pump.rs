//! Copies a body or an upgraded connection into a stream as DATA frames
//! under its credit, and a stream's bytes out to an upgraded connection.

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{InboundBody, StreamError, StreamSender};
use crate::frame::{Frame, ResetCode};
use crate::protocol::MAX_DATA_PAYLOAD;

impl StreamSender {
    /// Sends `body` as DATA frames under the stream's credit, then END.
    /// Trailers are not carried. On a body error the stream is reset with
    /// `on_error`, behind the DATA already sent.
    pub async fn body<B>(&self, body: B, on_error: ResetCode) -> Result<(), StreamError>
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    self.reset(on_error, e.to_string()).await;
                    return Err(StreamError::Body(e.to_string()));
                }
            };
            if let Ok(data) = frame.into_data() {
                self.data(data).await?;
            }
        }
        self.end().await
    }

    /// Sends everything `reader` yields (an upgraded connection) as DATA,
    /// then END at EOF.
    pub async fn io<R: AsyncRead + Unpin>(&self, mut reader: R) -> Result<(), StreamError> {
        let mut buf = vec![0u8; MAX_DATA_PAYLOAD];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| StreamError::Body(e.to_string()))?;
            if n == 0 {
                return self.end().await;
            }
            self.data(Bytes::copy_from_slice(&buf[..n])).await?;
        }
    }

    async fn data(&self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(MAX_DATA_PAYLOAD));
            self.reserve(piece.len()).await?;
            self.send(&Frame::Data {
                stream: self.id(),
                data: piece,
            })
            .await?;
        }
        Ok(())
    }
}

/// Writes the peer's bytes to `writer` (an upgraded connection) and shuts
/// its write side down at END.
pub async fn recv_io<W: AsyncWrite + Unpin>(
    body: InboundBody,
    mut writer: W,
) -> Result<(), StreamError> {
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            writer
                .write_all(&data)
                .await
                .map_err(|e| StreamError::Body(e.to_string()))?;
        }
    }
    writer
        .shutdown()
        .await
        .map_err(|e| StreamError::Body(e.to_string()))
}
