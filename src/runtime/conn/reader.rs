//! The reader thread of one link: read, feed the state machine, dispatch; and the
//! accept decision for incoming handshakes.

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use log::{debug, warn};

use crate::proto::accept::{decide, Decision};
use crate::proto::{Error as ProtoError, Event as ProtoEvent, LinkId};

use super::super::messenger::{session_key, Inner};
use super::super::transport::{ReadAppend, ReadHalf};

use super::*;

pub(super) fn spawn_reader(
    inner: &Arc<Inner>,
    shared: Arc<ConnShared>,
    link: LinkId,
    read: ReadHalf,
) {
    let inner2 = inner.clone();
    let name = format!("ms-read-{}", shared.id);
    let r = inner.spawn(name, move || reader_loop(inner2, shared, link, read));
    if let Err(e) = r {
        warn!("cannot start a reader thread: {e}");
    }
}

/// Reads up to this size go through the reader's scratch buffer.
const SCRATCH: usize = 64 * 1024;
/// Largest single read straight into a frame's buffer.
const MAX_DIRECT_READ: usize = 16 << 20;
/// Scratch size of a connection that has seen only small reads (see `reader_loop`).
const IDLE_READ: usize = 4096;

/// Read bytes, feed the state machine, act on its events; until the link dies.
fn reader_loop(inner: Arc<Inner>, mut shared: Arc<ConnShared>, link: LinkId, read: ReadHalf) {
    let mut reader = inner.faults.wrap_reader(read, link);
    let faults = inner.faults.for_connection(link);
    let mut buf = BytesMut::with_capacity(SCRATCH);
    // Small reads land in a buffer zeroed once and are copied (only the bytes read);
    // the rest of a large frame is read straight into `buf`'s memory.
    // An idle connection blocks in read() with its scratch buffer, which stays
    // resident: it starts at IDLE_READ and grows to SCRATCH the first time a read
    // fills it (so an idle connection costs 4 KiB here, not 64).
    let mut scratch = vec![0u8; IDLE_READ];
    let mut hint = SCRATCH;
    loop {
        let start = buf.len();
        let direct = hint > SCRATCH;
        let r = if direct {
            // The buffered head of the frame moves into a Vec (no copy while nobody
            // shares the buffer) and the kernel appends the rest of the frame to it,
            // into capacity that is never zeroed: a large frame's bytes are written
            // once.
            let mut v = Vec::from(std::mem::take(&mut buf));
            let r = reader.read_append(&mut v, hint.min(MAX_DIRECT_READ));
            buf = BytesMut::from(bytes::Bytes::from(v));
            r
        } else {
            reader.read(&mut scratch)
        };
        let n = match r {
            Ok(0) => {
                buf.truncate(start);
                // Bytes still buffered are an incomplete frame (or banner): say so.
                let why = match buf.len() {
                    0 => "peer closed the connection".to_string(),
                    n => format!("peer closed the connection in the middle of a frame ({n} bytes of it received)"),
                };
                fail(&inner, &shared, link, ProtoError::Transport(why));
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(e) => {
                buf.truncate(start);
                fail(&inner, &shared, link, ProtoError::Transport(e.to_string()));
                return;
            }
        };
        if !direct {
            buf.extend_from_slice(&scratch[..n]);
            if n == scratch.len() && scratch.len() < SCRATCH {
                scratch = vec![0u8; SCRATCH];
            }
        }
        inner.stats.add_bytes_in(n as u64);
        // ms_inject_delay_*: hold what was read before it is processed.
        faults.inject_delay("read");
        loop {
            let (events, still_ours, wake, chunked) = {
                let mut st = shared.state.lock();
                hint = st.proto.handle_input(link, &mut buf, Instant::now());
                let ours = st.proto.link_id() == Some(link);
                let wake = st.writer_need(st.proto.link_id());
                let chunked = ours && st.proto.receiving_chunked();
                if chunked {
                    if let Some(lio) = st.links.get(&link) {
                        lio.bound_for_chunks(&inner.config, shared.id);
                    }
                }
                (drain(&mut st.proto, &shared, true), ours, wake, chunked)
            };
            if wake == WriterNeed::Bytes {
                shared.wake();
            }
            let mut adopted = None;
            let mut batch = events;
            if let Some(i) = batch
                .events
                .iter()
                .position(|e| matches!(e, ProtoEvent::AcceptRequest(_)))
            {
                if let ProtoEvent::AcceptRequest(req) = batch.events.remove(i) {
                    adopted = Some(req);
                }
            }
            handle_events(&inner, &shared, batch);
            // A timer that moved earlier (a delayed ACK) needs the writer only if the
            // dispatcher did not answer: a reply carries the ACK with it.
            if wake == WriterNeed::Timer && shared.state.lock().writer_needed(Some(link)) {
                shared.wake();
            }
            if chunked && inner.config.chunk_yield {
                // In the middle of a chunked message: let the threads that carry small
                // messages run (the mirror of the writer's yield, `Config::chunk_yield`).
                std::thread::yield_now();
            }
            let adopted = adopted.and_then(|req| accept(&inner, &shared, link, req));
            let was_adopted = adopted.is_some();
            if let Some(existing) = adopted {
                // The link now belongs to the existing session; keep reading for it.
                shared = existing;
                if !buf.is_empty() {
                    continue;
                }
            }
            if !still_ours && !was_adopted && shared.state.lock().proto.link_id() != Some(link) {
                return;
            }
            break;
        }
        if shared.is_closed() && shared.state.lock().proto.link_id() != Some(link) {
            return;
        }
    }
}

pub(super) fn fail(inner: &Arc<Inner>, shared: &Arc<ConnShared>, link: LinkId, err: ProtoError) {
    // ms_inject_internal_delays: widen the race window around fault handling.
    inner.faults.for_connection(link).internal_delay("fault");
    let events = {
        let mut st = shared.state.lock();
        st.proto.link_failed(link, err, Instant::now());
        drain(&mut st.proto, shared, true)
    };
    handle_events(inner, shared, events);
    // Whatever happened, this socket is done.
    close_link(shared, link);
}

/// Decide an incoming handshake with the session table. Returns the existing session
/// if it adopted the link.
fn accept(
    inner: &Arc<Inner>,
    incoming: &Arc<ConnShared>,
    link: LinkId,
    req: crate::proto::AcceptRequest,
) -> Option<Arc<ConnShared>> {
    inner.faults.for_connection(link).internal_delay("accept");
    let now = Instant::now();
    let key = session_key(&req.peer_addr);
    let my_addr = inner.my_addr();
    let we_are_server = inner.proto.policies.get(req.peer_type).server;
    let mut table = inner.sessions.lock();
    let existing = table
        .get(&key)
        .filter(|e| !Arc::ptr_eq(e, incoming) && !e.is_closed())
        .cloned();
    let view = existing
        .as_ref()
        .and_then(|e| e.state.lock().proto.existing_view());
    let decision = decide(
        view.as_ref(),
        &req.attempt,
        &req.peer_addr,
        &my_addr,
        we_are_server,
    );
    debug!(
        "conn#{} accept {:?} from {}: {decision:?}",
        incoming.id, req.attempt, req.peer_addr
    );
    let mut adopted = None;
    let events = match (decision, existing) {
        (Decision::Adopt { reset }, Some(existing)) => {
            let (handoff, io) = {
                let mut st = incoming.state.lock();
                (st.proto.take_handoff(), st.links.remove(&link))
            };
            incoming.closed.store(true, Ordering::Release);
            incoming.wake();
            let events = {
                let mut st = existing.state.lock();
                if let (Some(h), Some(io)) = (handoff, io) {
                    st.links.insert(link, io);
                    st.proto.adopt(h, reset, now);
                }
                drain(&mut st.proto, &existing, true)
            };
            *existing.peer_hint.lock() = req.peer_addr;
            existing.wake();
            adopted = Some(existing.clone());
            drop(table);
            handle_events(inner, &existing, events);
            return adopted;
        }
        (Decision::Adopt { .. }, None) | (Decision::New, _) => {
            let mut st = incoming.state.lock();
            st.proto.decide_accept(Decision::New, now);
            *incoming.peer_hint.lock() = req.peer_addr;
            table.insert(key, incoming.clone());
            drain(&mut st.proto, incoming, true)
        }
        (other, _) => {
            let mut st = incoming.state.lock();
            st.proto.decide_accept(other, now);
            drain(&mut st.proto, incoming, true)
        }
    };
    drop(table);
    incoming.wake();
    handle_events(inner, incoming, events);
    adopted
}
