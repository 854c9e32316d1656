//! The session's writer thread: connect when due, write what the state machine
//! produces, run its timers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use crate::proto::{Error as ProtoError, LinkId};
use crate::wire::transmit::Transmit;

use super::super::messenger::Inner;
use super::super::transport::{self, Transport};

use super::*;

/// The longest a parked writer sleeps without a timer due.
const MAX_PARK: Duration = Duration::from_secs(1);

/// The session's writer: connect when due, write what the state machine produces,
/// run its timers; until the session closes.
pub(crate) fn writer_loop(inner: Arc<Inner>, shared: Arc<ConnShared>) {
    let target = shared.target;
    let mut out = Transmit::new();
    loop {
        if inner.is_shutdown() || shared.is_closed() {
            // Flush nothing more; the links are shut by mark_down / shutdown.
            let links: Vec<Arc<LinkIo>> = shared
                .state
                .lock()
                .links
                .drain()
                .map(|(_, io)| io)
                .collect();
            for io in links {
                io.close();
            }
            session_ended(&inner, &shared);
            return;
        }
        let now = Instant::now();
        // Bytes are taken from the state machine and the link's write lock is taken
        // before the session lock is released, so that two threads (e.g. around an
        // adoption) can never write one link's bytes out of order.
        // The write lock is only *tried* while the session lock is held: a user thread
        // may be writing (see `ConnectionRef::send`), and waiting for it here would
        // block every other user of the session. If it is busy, that thread wakes us
        // when it is done.
        let mut io: Option<(LinkId, Arc<LinkIo>)> = None;
        let mut guard = None;
        let mut chunking = false;
        let (events, connect, deadline) = {
            let mut st = shared.state.lock();
            if st.proto.poll_timeout().is_some_and(|t| t <= now) {
                st.proto.handle_timeout(now);
            }
            let connect = std::mem::take(&mut st.connect_due);
            // Only take bytes for a link whose socket is attached: bytes taken with
            // nowhere to go would be lost.
            if let Some(link) = st.proto.link_id() {
                io = st.links.get(&link).cloned().map(|io| (link, io));
            }
            if let Some((link, lio)) = &io {
                guard = lio.write.try_lock();
                let has_pending = guard.as_ref().is_some_and(|w| !w.pending.is_empty());
                if guard.is_none() || !(st.proto.poll_transmit(*link, now, &mut out) || has_pending)
                {
                    guard = None;
                }
                chunking = guard.is_some() && st.proto.sending_chunked();
            }
            // Nothing to write and nothing to connect: the writer parks until the next
            // timer (at most a second); threads that change the state wake it only when
            // that matters (`ConnState::writer_needed`).
            let parks = guard.is_none() && !connect;
            let deadline = st
                .proto
                .poll_timeout()
                .map_or(now + MAX_PARK, |d| d.min(now + MAX_PARK));
            st.writer_parked_until = parks.then_some(deadline);
            (drain(&mut st.proto, &shared, true), connect, deadline)
        };
        if let (Some((link, _)), Some(mut w)) = (&io, guard.take()) {
            // (the lock was taken before the session lock was released: bytes go out in
            // the order they were produced)
            let len = out.len() as u64;
            let r = w.write_all(&mut out);
            drop(w);
            out.clear();
            if chunking {
                if let Some((_, lio)) = &io {
                    lio.bound_for_chunks(&inner.config, shared.id);
                }
            }
            if chunking && inner.config.chunk_yield {
                // Between two chunks of a large message: let the threads of small
                // messages run (see `Config::chunk_yield`). The write lock is released,
                // so a sender's inline write of a small message goes out now.
                std::thread::yield_now();
            }
            match r {
                Ok(()) => inner.stats.add_bytes_out(len),
                Err(e) => fail(
                    &inner,
                    &shared,
                    *link,
                    ProtoError::Transport(format!("write: {e}")),
                ),
            }
            handle_events(&inner, &shared, events);
            continue;
        }
        drop(guard);
        handle_events(&inner, &shared, events);
        out.clear();
        if connect {
            if let Some(addr) = target {
                do_connect(&inner, &shared, addr);
            }
            continue;
        }
        shared
            .wake
            .wait(deadline.saturating_duration_since(Instant::now()));
    }
}

fn do_connect(inner: &Arc<Inner>, shared: &Arc<ConnShared>, addr: SocketAddr) {
    let link = inner.next_link_id();
    inner
        .faults
        .for_connection(shared.id)
        .internal_delay("connect");
    let result = transport::connect(addr, inner.config.handshake_timeout, &inner.config)
        .and_then(Transport::new)
        .map_err(|e| e.to_string());
    let events = {
        let mut st = shared.state.lock();
        if let Some(m) = inner.method_cache.lock().get(&addr) {
            st.proto.set_preferred_method(Some(*m));
        }
        st.proto.start_link(link, Instant::now());
        drain(&mut st.proto, shared, true)
    };
    handle_events(inner, shared, events);
    match result {
        Ok(t) => attach_link(inner, shared, link, t),
        Err(e) => {
            info!("conn#{}: connect to {addr} failed: {e}", shared.id);
            fail(
                inner,
                shared,
                link,
                ProtoError::Transport(format!("connect to {addr}: {e}")),
            );
        }
    }
    shared.wake();
}
