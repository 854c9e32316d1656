//! The message-exchange phase (docs/PROTOCOL.md §6, §7): receiving MSG, CHUNK,
//! CHUNK_ABORT, ACK and keepalives, and filling transmit batches, interleaving the
//! chunks of a large message with other frames when the structured-data extension
//! is negotiated.

use std::time::Instant;

use log::{debug, info};

use crate::crypto::Protection;
use crate::wire::msgr2::{
    Ack, Chunk, ChunkAbort, Frame, Keepalive2, Keepalive2Ack, Msg, MAX_CHUNK_ABORT_MESSAGE,
    MAX_CHUNK_LEN, MSG_FLAG_CHUNKED, PROTO_FEATURE_STRUCTURED,
};

use super::super::event::{Error, Event};
use super::chunk::{ChunkError, ChunkOutcome, InTransfer, OutTransfer};
use super::link::Link;
use super::Connection;

/// What [`Connection::abort_send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The message was still queued: it was removed and nothing of it was sent.
    Dequeued,
    /// Part of its data was sent: CHUNK_ABORT is queued and the peer discards the part.
    Aborted,
    /// No queued or in-flight message has that tid (it was sent completely, or never existed).
    NotFound,
}

impl Connection {
    pub(super) fn exchange_frame(&mut self, frame: Frame, now: Instant) -> Result<(), Error> {
        match frame {
            Frame::Msg(msg) => self.on_msg(msg),
            Frame::Chunk(chunk) => self.on_chunk(chunk),
            Frame::ChunkAbort(abort) => self.on_chunk_abort(abort),
            Frame::Ack(Ack { seq }) => {
                self.core.session.handle_ack(seq);
                Ok(())
            }
            Frame::Keepalive2(Keepalive2 { stamp }) => {
                self.core.last_keepalive = Some(now);
                if let Some(link) = &mut self.link {
                    link.keepalive_ack_due = Some(stamp);
                }
                Ok(())
            }
            Frame::Keepalive2Ack(_) => {
                self.core.last_keepalive_ack = Some(now);
                Ok(())
            }
            other => Err(Error::UnexpectedFrame {
                tag: other.tag(),
                expected: "MSG, CHUNK, CHUNK_ABORT, ACK, KEEPALIVE2 or CLOSE",
            }),
        }
    }

    /// True if the current link negotiated the structured-data extension (§7.1).
    fn structured(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.protocol_features & PROTO_FEATURE_STRUCTURED != 0)
    }

    fn on_msg(&mut self, msg: Msg) -> Result<(), Error> {
        let protected = self
            .link
            .as_ref()
            .is_some_and(|l| l.rx.protection() != Protection::Plain);
        if protected && msg.header.flags & crate::wire::msgr2::MSG_FLAG_CRC != 0 {
            return Err(Error::PeerMisbehaved("CRC flag set on a protected MSG"));
        }
        // The deframer has checked the CRCs (plain) or that they are zero (protected).
        self.core.session.handle_ack(msg.header.ack_seq);
        if msg.header.flags & MSG_FLAG_CHUNKED != 0 {
            return self.on_chunked_msg(msg);
        }
        self.deliver(msg)
    }

    /// §7.3: a CHUNKED MSG starts a transfer; its data follows in CHUNK frames.
    fn on_chunked_msg(&mut self, msg: Msg) -> Result<(), Error> {
        if !self.structured() {
            return Err(Error::Chunk(ChunkError::NotNegotiated));
        }
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let xid = msg.header.seq;
        if let Some(cur) = &link.chunk_rx.current {
            return Err(Error::Chunk(ChunkError::AlreadyInFlight {
                current: cur.xid,
                xid,
            }));
        }
        if xid <= link.chunk_rx.last_xid {
            return Err(Error::Chunk(ChunkError::BadXid { xid }));
        }
        link.chunk_rx.last_xid = xid;
        link.chunk_rx.current = Some(InTransfer::new(msg).map_err(Error::Chunk)?);
        Ok(())
    }

    /// §7.4: NBD's rules; the chunk that completes the message carries its seq.
    fn on_chunk(&mut self, chunk: Chunk) -> Result<(), Error> {
        if !self.structured() {
            return Err(Error::Chunk(ChunkError::NotNegotiated));
        }
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let t = match &mut link.chunk_rx.current {
            Some(t) if t.xid == chunk.xid => t,
            _ => return Err(Error::Chunk(ChunkError::UnknownTransfer { xid: chunk.xid })),
        };
        match t.accept(&chunk).map_err(Error::Chunk)? {
            ChunkOutcome::Partial => Ok(()),
            ChunkOutcome::Complete(msg) => {
                link.chunk_rx.current = None;
                self.deliver(*msg)
            }
        }
    }

    /// §7.5: discard the partial message and report it; the connection stays open.
    fn on_chunk_abort(&mut self, abort: ChunkAbort) -> Result<(), Error> {
        if !self.structured() {
            return Err(Error::Chunk(ChunkError::NotNegotiated));
        }
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        match link.chunk_rx.current.take() {
            Some(t) if t.xid == abort.xid => {
                let (received, total) = t.progress();
                info!(
                    "[{}] peer aborted chunked message tid {} after {received} of {total} bytes: code {} {:?}",
                    self.core.peer.addr, t.tid(), abort.code, abort.message
                );
                self.core.events.push_back(Event::ChunkedAborted {
                    tid: t.tid(),
                    code: abort.code,
                    message: abort.message,
                    received,
                    total,
                });
                Ok(())
            }
            _ => Err(Error::Chunk(ChunkError::UnknownTransfer { xid: abort.xid })),
        }
    }

    /// Sequence check and delivery of a complete message (§5.1, §7.4).
    fn deliver(&mut self, msg: Msg) -> Result<(), Error> {
        if !self.core.check_incoming_seq(msg.header.seq)? {
            return Ok(());
        }
        if self.ack_due.is_none() {
            self.ack_due = Some(self.last_rx_time() + self.core.cfg.ack_delay);
        }
        let message = msg.into_message();
        self.core.peer.name = Some(message.src);
        self.core.events.push_back(Event::Message(message));
        Ok(())
    }

    /// Abort sending the message with this `tid` (§7.5). A queued message is removed; a
    /// chunked message in flight ends with CHUNK_ABORT(`code`, `reason`) and the peer
    /// discards its partial data; the connection stays open. A message sent completely
    /// (or a replay, which the peer may already have) cannot be aborted.
    pub fn abort_send(&mut self, tid: u64, code: u32, reason: &str) -> AbortOutcome {
        if let Some(link) = &mut self.link {
            let tx = &mut link.chunk_tx;
            if let Some(pos) = tx.deferred.iter().position(|m| m.tid == tid) {
                tx.deferred.remove(pos);
                return AbortOutcome::Dequeued;
            }
            if tx
                .active
                .as_ref()
                .is_some_and(|t| t.msg.tid == tid && !t.replay)
            {
                let Some(t) = tx.active.take() else {
                    return AbortOutcome::NotFound;
                };
                let mut message = reason.to_string();
                truncate_utf8(&mut message, MAX_CHUNK_ABORT_MESSAGE as usize);
                let frame = Frame::ChunkAbort(ChunkAbort {
                    xid: t.xid,
                    code,
                    message,
                });
                if let Err(e) = link.queue(&frame, &mut *self.core.rng) {
                    debug!("[{}] cannot queue CHUNK_ABORT: {e}", self.core.peer.addr);
                }
                return AbortOutcome::Aborted;
            }
        }
        match self.core.session.remove_queued(tid) {
            Some(_) => AbortOutcome::Dequeued,
            None => AbortOutcome::NotFound,
        }
    }

    /// A link is going away: messages that did not complete on it go back to the front
    /// of the queue, to be sent again from the start on the next link (§7.7).
    pub(super) fn return_unfinished(&mut self, link: &mut Link) {
        if let Some(t) = link.chunk_rx.current.take() {
            let (received, total) = t.progress();
            debug!(
                "[{}] link {} closed: partial data discarded ({})",
                self.core.peer.addr,
                link.id,
                ChunkError::Incomplete {
                    xid: t.xid,
                    received,
                    total
                }
            );
        }
        let msgs = link.chunk_tx.take_unfinished();
        if !msgs.is_empty() {
            debug!(
                "[{}] {} chunked message(s) unfinished on link {}: requeued",
                self.core.peer.addr,
                msgs.len(),
                link.id
            );
            self.core.session.requeue_front(msgs);
        }
    }

    /// Put what is due into the link's transmit buffer: a keepalive ack, a keepalive,
    /// messages (each carrying the latest ack) interleaved round-robin with the chunks
    /// of one chunked message (§7.6), and an ACK if no message carried it.
    pub(super) fn fill_transmit(&mut self, now: Instant) -> Result<(), Error> {
        let structured = self.structured();
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        if !link.is_open() {
            return Ok(());
        }
        if let Some(stamp) = link.keepalive_ack_due.take() {
            link.queue(
                &Frame::Keepalive2Ack(Keepalive2Ack { stamp }),
                &mut *self.core.rng,
            )?;
        }
        if let Some(iv) = self.core.cfg.keepalive_interval {
            if now >= link.last_keepalive_tx + iv {
                link.last_keepalive_tx = now;
                let stamp = crate::wire::types::Timespec::from_duration(
                    now.saturating_duration_since(self.core.epoch),
                );
                link.queue(
                    &Frame::Keepalive2(Keepalive2 { stamp }),
                    &mut *self.core.rng,
                )?;
            }
        }
        // A plain MSG always carries its CRCs (§6.1); `cfg.crc` only governs checking them.
        let crc = link.tx.protection() == Protection::Plain;
        let chunk_size = if structured {
            self.core
                .cfg
                .chunk_size
                .min(MAX_CHUNK_LEN as usize)
                .min(self.core.cfg.limits.max_data as usize)
        } else {
            0
        };
        let budget = self.core.cfg.max_batch_bytes;
        let name = self.core.cfg.name;
        // §7.6: at most one chunk per transmit batch, so a message queued now waits for at
        // most one chunk (plus what the socket holds), never for the rest of a big message.
        let mut chunk_sent = false;
        while link.out.len() < budget {
            let mut progressed = false;
            // One message per round: replays strictly in order (no overtaking while a
            // replayed chunked message is in flight), then new ones.
            let next = if self.core.session.has_replay() {
                if link.chunk_tx.active.is_none() {
                    self.core.session.next_replay().map(|m| (m, true))
                } else {
                    None
                }
            } else if link.chunk_tx.active.is_none() && !link.chunk_tx.deferred.is_empty() {
                link.chunk_tx.deferred.pop_front().map(|m| (m, false))
            } else {
                self.core.session.pop_queued().map(|m| (m, false))
            };
            if let Some((mut msg, replay)) = next {
                progressed = true;
                if chunk_size > 0 && msg.data.len() > chunk_size {
                    if link.chunk_tx.active.is_some() {
                        link.chunk_tx.deferred.push_back(msg);
                    } else {
                        let ack = self.core.session.take_ack();
                        let xid = link.chunk_tx.next_xid();
                        let frame = Frame::Msg(Msg::chunked(&msg, xid, ack, name, crc));
                        link.queue(&frame, &mut *self.core.rng)?;
                        link.chunk_tx.active = Some(OutTransfer {
                            xid,
                            msg,
                            replay,
                            next_offset: 0,
                        });
                    }
                } else {
                    if !replay {
                        self.core.session.commit(&mut msg);
                    }
                    let ack = self.core.session.take_ack();
                    let frame = Frame::Msg(Msg::from_message(&msg, msg.seq, ack, name, crc));
                    link.queue(&frame, &mut *self.core.rng)?;
                }
            }
            // Then the batch's one chunk of the message in flight.
            if let (Some(t), false) = (&mut link.chunk_tx.active, chunk_sent) {
                progressed = true;
                chunk_sent = true;
                let total = t.msg.data.len() as u64;
                let start = t.next_offset;
                let end = (start + chunk_size as u64).min(total);
                let last = end == total;
                let seq = if !last {
                    0
                } else if t.replay {
                    t.msg.seq
                } else {
                    // §7.6: a new message gets its sequence number with its last chunk.
                    self.core.session.commit(&mut t.msg);
                    t.msg.seq
                };
                let data = t.msg.data.slice(start as usize..end as usize);
                let frame = Frame::Chunk(Chunk {
                    xid: t.xid,
                    offset: start,
                    seq,
                    // §7.2: each plain chunk carries its own CRC, so checking costs one
                    // chunk's worth of time per chunk, never a whole data section at once.
                    crc: if link.tx.protection() == Protection::Plain {
                        // Remembered by `send` (one pass on the sending thread) when
                        // the chunk is one of the pieces it computed.
                        t.msg.data_crc(start as usize, end as usize)
                    } else {
                        0
                    },
                    data,
                });
                t.next_offset = end;
                if last {
                    link.chunk_tx.active = None;
                }
                link.queue(&frame, &mut *self.core.rng)?;
            }
            if !progressed {
                break;
            }
        }
        // A standalone ACK only when due (docs/PROTOCOL.md §5.1): enough unacknowledged
        // messages, or the ack delay passed; otherwise it rides on the next MSG.
        let due = !self.core.session.lossy
            && self.core.session.ack_pending()
            && (self.core.session.unacked_in() >= self.core.cfg.ack_every
                || self.ack_due.is_some_and(|t| now >= t));
        if due {
            let seq = self.core.session.take_ack();
            link.queue(&Frame::Ack(Ack { seq }), &mut *self.core.rng)?;
        }
        if !self.core.session.ack_pending() {
            self.ack_due = None;
        }
        Ok(())
    }
}

/// Cut `s` to at most `max` bytes on a character boundary.
fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
