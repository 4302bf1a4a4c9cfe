//! The multiplexer's unit tests: queues, credit, budgets and stream ends,
//! driven without sockets.

use bytes::Bytes;
use http_body_util::BodyExt;

use super::*;
use crate::frame::{Frame, ResetCode};
use crate::protocol::{INITIAL_WINDOW, MAX_DATA_PAYLOAD, MAX_STREAMS};

fn decode(b: Bytes) -> Frame {
    Frame::decode(b).expect("own frames decode")
}

#[tokio::test]
async fn reading_returns_credit_and_sender_waits_for_it() {
    let (out, mut rx) = outbound();
    let table = StreamTable::new();
    let mut parts = table.open(1, Side::Opener, &out).expect("opens");
    // The peer may send a full window...
    for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_PAYLOAD) {
        table
            .dispatch(Frame::Data {
                stream: 1,
                data: Bytes::from(vec![7; MAX_DATA_PAYLOAD]),
            })
            .expect("within window");
    }
    // ...but not one byte more.
    assert_eq!(
        table.dispatch(Frame::Data {
            stream: 1,
            data: Bytes::from_static(b"x"),
        }),
        Err((1, ResetCode::FlowControl))
    );
    // Consuming half a window sends one CREDIT.
    for _ in 0..(CREDIT_BATCH as usize / MAX_DATA_PAYLOAD) {
        parts.body.frame().await.expect("data").expect("ok");
    }
    assert_eq!(
        decode(rx.try_recv().expect("credit queued")),
        Frame::Credit {
            stream: 1,
            bytes: CREDIT_BATCH
        }
    );
}

#[tokio::test]
async fn send_body_stops_at_window_until_credit() {
    let (out, mut rx) = outbound();
    let table = StreamTable::new();
    let parts = table.open(3, Side::Acceptor, &out).expect("opens");
    let body = http_body_util::Full::new(Bytes::from(vec![1u8; INITIAL_WINDOW as usize + 10]));
    let stream = parts.sender.clone();
    let sender = tokio::spawn(async move { stream.body(body, ResetCode::LocalError).await });
    let mut sent = 0;
    while sent < INITIAL_WINDOW as usize {
        match decode(rx.recv().await.ok().flatten().expect("frame")) {
            Frame::Data { data, .. } => sent += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sent, INITIAL_WINDOW as usize);
    assert!(rx.try_recv().is_none(), "nothing beyond the window");
    table
        .dispatch(Frame::Credit {
            stream: 3,
            bytes: 10,
        })
        .expect("credit ok");
    assert_eq!(
        decode(rx.recv().await.ok().flatten().expect("frame")),
        Frame::Data {
            stream: 3,
            data: Bytes::from(vec![1u8; 10])
        }
    );
    assert_eq!(
        decode(rx.recv().await.ok().flatten().expect("frame")),
        Frame::End { stream: 3 }
    );
    sender.await.expect("joins").expect("sent");
}

#[tokio::test]
async fn pings_are_answered_with_one_pong_per_write() {
    let (out, mut rx) = outbound();
    for nonce in 1..=100_000 {
        out.pong(nonce);
    }
    // However many PINGs came, one PONG (the newest) is queued.
    assert_eq!(
        decode(rx.try_recv().expect("pong")),
        Frame::Pong { nonce: 100_000 }
    );
    assert!(rx.try_recv().is_none());
    out.pong(7);
    assert_eq!(
        decode(rx.try_recv().expect("pong")),
        Frame::Pong { nonce: 7 }
    );
    assert!(!out.overflowed());
}

#[tokio::test]
async fn a_full_control_queue_ends_the_session_instead_of_growing() {
    let (out, mut rx) = outbound();
    let credit = Frame::Credit {
        stream: 1,
        bytes: 1,
    };
    for _ in 0..CONTROL_QUEUE_FRAMES {
        out.control(&credit);
    }
    assert!(!out.overflowed(), "a full queue is still within bounds");
    out.control(&credit);
    assert!(out.overflowed());
    assert!(rx.recv().await.is_err(), "the writer gives up");
}

#[tokio::test]
async fn a_reset_after_a_response_does_not_overtake_it() {
    let (out, mut rx) = outbound();
    let table = StreamTable::new();
    let parts = table.open(21, Side::Acceptor, &out).expect("opens");
    out.send(&Frame::End { stream: 21 }).await.expect("queued");
    // The guard's "stop sending" goes behind the END, not ahead of it.
    drop(parts);
    assert_eq!(
        decode(rx.try_recv().expect("end")),
        Frame::End { stream: 21 }
    );
    assert!(matches!(
        decode(rx.try_recv().expect("reset")),
        Frame::Reset { stream: 21, .. }
    ));
}

#[tokio::test]
async fn a_session_over_its_buffer_budget_resets_the_stream_furthest_behind() {
    let (out, _rx) = outbound();
    let table = StreamTable::new();
    let chunk = Bytes::from(vec![0u8; MAX_DATA_PAYLOAD]);
    let mut parts = Vec::new();
    for i in 0..(MAX_STREAMS as u32 - 1) {
        let id = 2 * i + 1;
        parts.push(table.open(id, Side::Acceptor, &out).expect("opens"));
        for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_PAYLOAD) {
            let data = Frame::Data {
                stream: id,
                data: chunk.clone(),
            };
            if let Err((victim, code)) = table.dispatch(data) {
                // The first stream never read anything: it goes first.
                assert_eq!((victim, code), (1, ResetCode::Cancel));
                assert!(table.buffered() <= SESSION_BUFFER_BUDGET);
                let first = &mut parts[0].body;
                assert_eq!(
                    first.frame().await.expect("an error").expect_err("reset"),
                    StreamError::Reset(ResetCode::Cancel)
                );
                // Dropping bodies gives their bytes back.
                drop(parts);
                assert_eq!(table.buffered(), 0);
                return;
            }
        }
        if id != 1 {
            // Every other reader keeps up a little.
            let body = &mut parts.last_mut().expect("just opened").body;
            body.frame().await.expect("a chunk").expect("data");
        }
    }
    panic!("{MAX_STREAMS} streams did not cross the budget");
}

#[tokio::test]
async fn dropping_guard_unblocks_a_waiting_sender() {
    let (out, _rx) = outbound();
    let table = StreamTable::new();
    let parts = table.open(5, Side::Acceptor, &out).expect("opens");
    let window = parts.sender.clone();
    window
        .reserve(INITIAL_WINDOW as usize)
        .await
        .expect("full window");
    let waiting = tokio::spawn(async move { window.reserve(1).await });
    drop(parts.guard);
    assert!(waiting.await.expect("joins").is_err());
    assert!(table.is_empty());
}

#[tokio::test]
async fn dropping_guard_resets_a_peer_still_sending() {
    let (out, mut rx) = outbound();
    let table = StreamTable::new();
    // The peer's body is still open: it must be told to stop, or it
    // would wait for credit forever.
    let parts = table.open(11, Side::Acceptor, &out).expect("opens");
    drop(parts);
    assert!(matches!(
        decode(rx.try_recv().expect("reset queued")),
        Frame::Reset {
            stream: 11,
            code: ResetCode::Cancel,
            ..
        }
    ));
    // After the peer's END there is nothing to stop.
    let parts = table.open(13, Side::Acceptor, &out).expect("opens");
    table.dispatch(Frame::End { stream: 13 }).expect("end ok");
    drop(parts);
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn dropped_unfinished_body_resets_the_peer() {
    let (out, mut rx) = outbound();
    let table = StreamTable::new();
    let parts = table.open(9, Side::Opener, &out).expect("opens");
    drop(parts.body);
    assert!(matches!(
        decode(rx.try_recv().expect("reset queued")),
        Frame::Reset {
            stream: 9,
            code: ResetCode::Cancel,
            ..
        }
    ));
}

#[tokio::test]
async fn session_loss_fails_bodies_and_heads() {
    let (out, _rx) = outbound();
    let table = StreamTable::new();
    let mut parts = table.open(2, Side::Opener, &out).expect("opens");
    table.close_all();
    assert_eq!(
        parts
            .body
            .frame()
            .await
            .expect("an error")
            .expect_err("fails"),
        StreamError::SessionClosed
    );
    assert!(parts.head.take().expect("head wanted").await.is_err());
}
