//! The reply lane of a link (lane 0: replies and control frames), written straight to its QUIC
//! stream when it can be.
//!
//! A reply is written by the task that sends it when the lane's writer is idle (its stream
//! parked here) and nothing is queued before it: no hand-off to the writer task, so no thread
//! wake-up. Otherwise (the writer is busy, the stream would block, or frames wait) it is queued
//! and the writer woken, as on the other lanes.
//!
//! While a link's reading task still has complete frames buffered, replies sent from inside it
//! (by handlers run inline) are *held back*: queued without waking anyone, then written together
//! when the reader has run out of buffered frames ([`Held::flush`]), so a burst of requests is
//! answered in one write, as the writer's batching did. A held frame is never lost: the reader
//! flushes before it waits for more bytes and when it ends, whatever the reason; and any other
//! sender that finds frames queued wakes the writer, which writes them all.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use tokio::sync::Notify;

use super::link::open_frames_stream;
use crate::NodeId;

/// Largest batch written at once.
const BATCH: usize = 256 * 1024;

pub(crate) struct ReplyLane {
    peer: NodeId,
    state: Mutex<State>,
    wake: Notify,
    /// The link's count of bytes queued towards the peer (for its outbound limit).
    queued: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    /// Frames waiting for the writer (or held back by a reader), oldest first.
    frames: VecDeque<Vec<u8>>,
    /// The lane's stream while its writer is idle; `None` while the writer writes, or before it
    /// opened one.
    idle: Option<quinn::SendStream>,
    /// The connection (stable id) whose writer serves the lane now.
    writer: Option<usize>,
    /// Room for a batch written by a flush, kept from flush to flush.
    batch: Vec<u8>,
}

impl ReplyLane {
    pub(crate) fn new(peer: NodeId, queued: Arc<AtomicUsize>) -> ReplyLane {
        ReplyLane {
            peer,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            queued,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the state half-changed in a way that
        // matters (frames are whole), so a poisoned lock is used as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a frame's bytes (already counted in `queued`): straight to the stream when the
    /// writer is idle and nothing waits before it, else queued for the writer. A frame sent from
    /// a reader that still has frames buffered is held back until it flushes.
    pub(crate) fn send(self: &Arc<Self>, mut bytes: Vec<u8>) {
        if hold(self) {
            self.state().frames.push_back(bytes);
            return;
        }
        let mut state = self.state();
        if state.frames.is_empty()
            && let Some(stream) = state.idle.as_mut()
        {
            match write_now(stream, &bytes) {
                Some(Ok(written)) => {
                    self.queued.fetch_sub(written, Ordering::AcqRel);
                    if written == bytes.len() {
                        return;
                    }
                    bytes.drain(..written);
                }
                Some(Err(err)) => {
                    self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                    tracing::debug!(peer = %self.peer, error = %err, bytes = bytes.len(), "lost frames: write failed");
                    state.idle = None;
                    return;
                }
                None => {}
            }
        }
        state.frames.push_back(bytes);
        drop(state);
        self.wake.notify_one();
    }

    /// Writes what is queued straight to the stream if the writer is idle; wakes the writer for
    /// whatever is left.
    fn flush(&self) {
        let mut state = self.state();
        if state.frames.is_empty() {
            return;
        }
        let State {
            frames,
            idle,
            batch,
            ..
        } = &mut *state;
        if let Some(stream) = idle.as_mut() {
            batch.clear();
            while batch.len() < BATCH
                && let Some(frame) = frames.pop_front()
            {
                batch.extend_from_slice(&frame);
            }
            match write_now(stream, batch) {
                Some(Ok(written)) => {
                    self.queued.fetch_sub(written, Ordering::AcqRel);
                    if written < batch.len() {
                        frames.push_front(batch[written..].to_vec());
                    }
                }
                Some(Err(err)) => {
                    self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                    tracing::debug!(peer = %self.peer, error = %err, bytes = batch.len(), "lost frames: write failed");
                    *idle = None;
                }
                None => frames.push_front(batch.clone()),
            }
            if batch.capacity() > 2 * BATCH {
                *batch = Vec::new();
            }
        }
        let left = !frames.is_empty();
        drop(state);
        if left {
            self.wake.notify_one();
        }
    }

    /// Drops the frames queued while no connection writes them; returns how many.
    pub(crate) fn discard_queued(&self) -> usize {
        let mut state = self.state();
        if state.writer.is_some() {
            return 0;
        }
        let dropped = state.frames.len();
        for frame in state.frames.drain(..) {
            self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        }
        dropped
    }
}

/// Polls one write once: `None` if it would wait (the no-op waker it registered is replaced by
/// the writer's at its next poll).
fn write_now(
    stream: &mut quinn::SendStream,
    bytes: &[u8],
) -> Option<Result<usize, quinn::WriteError>> {
    stream.write(bytes).now_or_never()
}

/// Clears the lane's writer when its task ends (finished, failed or aborted with its
/// connection), unless a newer connection's writer took over already.
struct WriterGuard {
    lane: Arc<ReplyLane>,
    conn: usize,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let mut state = self.lane.state();
        if state.writer == Some(self.conn) {
            state.writer = None;
            state.idle = None;
        }
    }
}

/// Writes the reply lane's queued frames to one stream of `conn`, batching them; between
/// batches the stream is parked in the lane, for senders to write to directly.
pub(crate) async fn write_replies(conn: quinn::Connection, lane: Arc<ReplyLane>) {
    let id = conn.stable_id();
    {
        let mut state = lane.state();
        state.writer = Some(id);
        state.idle = None;
    }
    let _guard = WriterGuard {
        lane: lane.clone(),
        conn: id,
    };
    let mut stream: Option<quinn::SendStream> = None;
    let mut batch: Vec<u8> = Vec::new();
    loop {
        loop {
            {
                let mut state = lane.state();
                if state.writer != Some(id) {
                    return;
                }
                if !state.frames.is_empty() {
                    if stream.is_none() {
                        stream = state.idle.take();
                    }
                    if batch.capacity() > 2 * BATCH {
                        batch = Vec::new();
                    }
                    batch.clear();
                    while batch.len() < BATCH
                        && let Some(frame) = state.frames.pop_front()
                    {
                        batch.extend_from_slice(&frame);
                    }
                    break;
                }
                if let Some(parked) = stream.take() {
                    state.idle = Some(parked);
                }
            }
            lane.wake.notified().await;
        }
        lane.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let send = match &mut stream {
            Some(send) => send,
            None => match open_frames_stream(&conn).await {
                Ok(send) => stream.insert(send),
                Err(err) => {
                    tracing::debug!(peer = %lane.peer, error = %err, bytes = batch.len(), "lost frames: no stream");
                    return;
                }
            },
        };
        if let Err(err) = send.write_all(&batch).await {
            tracing::debug!(peer = %lane.peer, error = %err, bytes = batch.len(), "lost frames: write failed");
            return;
        }
    }
}

thread_local! {
    /// The reply lanes a reading task held frames back on, while it delivers a frame with more
    /// complete frames buffered after it (`None` otherwise).
    static HOLDING: RefCell<Option<Vec<Arc<ReplyLane>>>> = const { RefCell::new(None) };
}

/// Whether a frame for `lane` sent now is held back (and if so, notes the lane to flush).
fn hold(lane: &Arc<ReplyLane>) -> bool {
    HOLDING.with(|holding| match holding.borrow_mut().as_mut() {
        Some(lanes) => {
            if !lanes.iter().any(|held| Arc::ptr_eq(held, lane)) {
                lanes.push(lane.clone());
            }
            true
        }
        None => false,
    })
}

/// The reply lanes one reading task holds frames back on. Flushed when the reader has no
/// complete frame left in its buffer, and when it is dropped (the stream ended, or the task
/// was aborted), so a held frame is always written or failed.
#[derive(Default)]
pub(crate) struct Held(Vec<Arc<ReplyLane>>);

impl Held {
    /// Runs `deliver` (synchronous: no await while held) with replies sent inside it held back.
    pub(crate) fn holding<R>(&mut self, deliver: impl FnOnce() -> R) -> R {
        let lanes = std::mem::take(&mut self.0);
        let outer = HOLDING.with(|holding| holding.replace(Some(lanes)));
        let result = deliver();
        self.0 = HOLDING
            .with(|holding| holding.replace(outer))
            .unwrap_or_default();
        result
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes (or hands to their writers) the frames held back.
    pub(crate) fn flush(&mut self) {
        for lane in self.0.drain(..) {
            lane.flush();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Whether `buffered` starts with a whole frame (its length prefix and all its bytes).
pub(crate) fn frame_complete(buffered: &[u8]) -> bool {
    match buffered.first_chunk::<4>() {
        Some(len) => buffered.len() - 4 >= u32::from_be_bytes(*len) as usize,
        None => false,
    }
}
