//! The user's handle on a session: send, mark down, query.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::proto::msgr2::State;
use crate::proto::{AnyConnection as ProtoConn, Mode};
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{EntityAddr, EntityType};

use super::super::messenger::Inner;
use super::super::Error;

use super::*;

/// Messages with at least this many payload bytes get their CRCs computed by the
/// sending thread (see [`ConnectionRef::send`]).
const CRC_AHEAD_MIN: usize = 16 * 1024;

/// A handle on one session with a peer: send messages, query state, mark down.
/// Cheap to clone; all clones refer to the same session.
#[derive(Clone)]
pub struct ConnectionRef {
    /// Process-unique id of the session (also seeds its fault injection).
    pub id: u64,
    /// The peer's address (as we connected to it, or as it advertised itself).
    pub peer: EntityAddr,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) msgr: Weak<Inner>,
}

impl PartialEq for ConnectionRef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ConnectionRef {}

impl std::fmt::Debug for ConnectionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}({})", self.id, self.peer)
    }
}

impl ConnectionRef {
    /// A handle that belongs to no messenger (for testing dispatchers): sends queue
    /// into a session that never connects.
    #[doc(hidden)]
    pub fn detached(id: u64, peer: EntityAddr) -> ConnectionRef {
        let cfg = crate::proto::ProtoConfig::new(
            crate::wire::types::EntityName::new(EntityType::CLIENT, id),
            crate::wire::types::AddrVec::default(),
        );
        let proto = ProtoConn::outgoing(
            Arc::new(cfg),
            Box::new(crate::crypto::SeededRng::new(id)),
            peer,
            EntityType::ANY,
            Instant::now(),
        );
        ConnectionRef {
            id,
            peer,
            shared: ConnShared::new(id, proto, peer, None),
            msgr: Weak::new(),
        }
    }

    /// Queue a message. Returns an error if the session is closed (marked down,
    /// refused, or a lossy session that failed).
    ///
    /// When the session's traffic is sparse (the previous send was a while ago) and
    /// nobody else is writing to the link, the calling thread writes the bytes itself
    /// with a non-blocking write, saving the hand-off to the writer thread (latency);
    /// otherwise, and for whatever the kernel does not take at once, the writer thread
    /// sends them in its next batch (throughput). `send` never blocks on the network.
    pub fn send(&self, mut msg: Message) -> Result<(), Error> {
        if let Some(tx) = self.shared.local.lock().as_ref() {
            return tx.send(msg).map_err(|_| Error::Shutdown);
        }
        let inner = self.msgr.upgrade();
        // A big message's section CRCs are computed here, on the sending thread and
        // without any lock, instead of by the writer thread while it could be writing
        // (a 1 MiB CRC takes as long as copying the bytes into the kernel). Only when
        // the frames will carry CRCs: plain mode.
        if msg.payload_len() >= CRC_AHEAD_MIN {
            if let Some(i) = inner.as_ref().filter(|i| i.proto.mode == Mode::Plain) {
                // Piece by piece at the chunk size: the CRCs the CHUNK frames carry if
                // the link chunks the message, combined into the data section's.
                msg.precompute_crcs(i.proto.chunk_size);
            }
        }
        let now = Instant::now();
        let mut out = Transmit::new();
        let mut io = None;
        let mut guard = None;
        let (events, wake) = {
            let mut st = self.shared.state.lock();
            st.proto.send(msg)?;
            // Sparse traffic on an idle pipe is written at once by this thread (latency):
            // nothing we sent is still unacknowledged (request/response: each reply
            // acknowledges the request) and no burst is under way. Streams are left to
            // the writer thread, which batches (throughput).
            let sparse = st.proto.session().unacked() == 0
                && st.last_send.map_or(true, |t| {
                    now.saturating_duration_since(t) >= INLINE_AFTER_IDLE
                });
            st.last_send = Some(now);
            if sparse {
                io = st.current_io();
                if let Some((link, lio)) = &io {
                    guard = inline::take(&mut st, *link, lio, now, &mut out);
                }
            }
            // Queued for the writer: wake it only if it is parked (a working writer
            // re-reads the queue before it parks).
            let queued_wake = guard.is_none() && st.writer_needed(st.proto.link_id());
            (drain(&mut st.proto, &self.shared, false), queued_wake)
        };
        // Never blocks: safe from dispatcher callbacks too.
        let wake = match (&io, guard) {
            (Some((link, lio)), Some(w)) => {
                inline::finish(&self.shared, inner.as_deref(), *link, lio, w, out)
            }
            _ => wake,
        };
        // The writer picks up whatever is left (and runs the timers).
        if wake {
            self.shared.wake();
        }
        if let Some(inner) = &inner {
            // Counted when queued: the writer sees bytes, not messages.
            inner.stats.msg_out();
            if !events.events.is_empty() {
                handle_events(inner, &self.shared, events);
            }
        }
        Ok(())
    }

    /// Close the session: nothing queued is sent, no reset is reported (Ceph's mark_down).
    pub fn mark_down(&self) {
        // The loopback connection: ends the local delivery thread; the (never
        // connected) session below is closed like any other.
        drop(self.shared.local.lock().take());
        let events = {
            let mut st = self.shared.state.lock();
            st.proto.mark_down(Instant::now());
            drain(&mut st.proto, &self.shared, false)
        };
        if let Some(inner) = self.msgr.upgrade() {
            handle_events(&inner, &self.shared, events);
            inner.forget(&self.shared);
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake();
    }

    /// From now on, a fault drops this session instead of reconnecting (Ceph's mark_disposable).
    pub fn mark_disposable(&self) {
        self.shared.state.lock().proto.mark_disposable();
    }

    /// Abort the chunked message with transaction id `tid` (structured-data extension,
    /// docs/PROTOCOL.md §7.5): if it is still queued it is dropped; if part of its data
    /// was sent, CHUNK_ABORT(`code`, `reason`) tells the peer to discard the part, and
    /// the connection stays open. A message already sent whole cannot be aborted.
    pub fn abort_send(
        &self,
        tid: u64,
        code: u32,
        reason: &str,
    ) -> crate::proto::msgr2::AbortOutcome {
        let outcome = self.shared.state.lock().proto.abort_send(tid, code, reason);
        self.shared.wake();
        outcome
    }

    /// True while the handshake is complete and the link is up.
    pub fn is_connected(&self) -> bool {
        if self.shared.local.lock().is_some() {
            return true;
        }
        self.shared.state.lock().proto.is_connected()
    }

    /// The session's state.
    pub fn state(&self) -> State {
        self.shared.state.lock().proto.state()
    }

    /// Ceph features negotiated with the peer.
    pub fn features(&self) -> u64 {
        self.shared.state.lock().proto.peer().features
    }

    /// The peer's entity type.
    pub fn peer_type(&self) -> EntityType {
        self.shared.state.lock().proto.peer().ty
    }

    /// When the last KEEPALIVE2_ACK arrived.
    pub fn last_keepalive_ack(&self) -> Option<Instant> {
        self.shared.state.lock().proto.last_keepalive_ack()
    }

    /// When the last KEEPALIVE2 arrived.
    pub fn last_keepalive(&self) -> Option<Instant> {
        self.shared.state.lock().proto.last_keepalive()
    }

    /// Messages queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.shared.state.lock().proto.session().queued()
    }

    /// Messages sent and not yet acknowledged by the peer.
    pub fn unacked(&self) -> usize {
        self.shared.state.lock().proto.session().unacked()
    }
}
