//! Session state that outlives any one TCP connection: sequence numbers, the
//! priority out-queue, and the queue of sent-but-unacknowledged messages that a
//! lossless session replays after a reconnect (docs/PROTOCOL.md §5.1).
//!
//! Both protocols (msgr2 and v1) use this type, so their lossless guarantees are
//! the same code.

use std::collections::{BTreeMap, VecDeque};

use crate::wire::message::Message;

/// What to do with a received message, by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// The next message in order: deliver it.
    Deliver,
    /// Already delivered (seq ≤ in_seq): drop it silently (a replay after reconnect).
    Duplicate,
    /// Deliver, but messages were skipped (seq > in_seq + 1). Only a lossy peer may do this.
    Gap {
        /// The first sequence number that never arrived.
        missing_from: u64,
    },
}

/// Messages waiting to be sent, highest priority first and FIFO within one priority.
#[derive(Debug, Default)]
struct OutQueue {
    by_priority: BTreeMap<u16, VecDeque<Message>>,
    len: usize,
    bytes: usize,
}

impl OutQueue {
    fn push(&mut self, msg: Message) {
        self.len += 1;
        self.bytes += msg.payload_len();
        self.by_priority
            .entry(msg.priority)
            .or_default()
            .push_back(msg);
    }

    fn pop(&mut self) -> Option<Message> {
        let mut entry = self.by_priority.last_entry()?;
        let msg = entry.get_mut().pop_front();
        if entry.get().is_empty() {
            entry.remove();
        }
        if let Some(m) = &msg {
            self.len -= 1;
            self.bytes -= m.payload_len();
        }
        msg
    }

    fn push_front(&mut self, msg: Message) {
        self.len += 1;
        self.bytes += msg.payload_len();
        self.by_priority
            .entry(msg.priority)
            .or_default()
            .push_front(msg);
    }

    fn remove_tid(&mut self, tid: u64) -> Option<Message> {
        for q in self.by_priority.values_mut() {
            if let Some(pos) = q.iter().position(|m| m.tid == tid) {
                let m = q.remove(pos)?;
                self.len -= 1;
                self.bytes -= m.payload_len();
                self.by_priority.retain(|_, q| !q.is_empty());
                return Some(m);
            }
        }
        None
    }

    fn clear(&mut self) -> usize {
        let n = self.len;
        self.by_priority.clear();
        self.len = 0;
        self.bytes = 0;
        n
    }
}

/// One session with a peer.
#[derive(Debug)]
pub struct Session {
    /// Our cookie: chosen at random when the session is created, kept across reconnects.
    pub cookie: u64,
    /// The peer's cookie (0 until known).
    pub peer_cookie: u64,
    /// How many connections this session has had (0 until the first one succeeds).
    pub connect_seq: u64,
    /// Our global_seq for the current connection attempt.
    pub global_seq: u64,
    /// The highest global_seq seen from the peer.
    pub peer_global_seq: u64,
    /// A lossy session keeps no replay queue.
    pub lossy: bool,
    out_seq: u64,
    in_seq: u64,
    in_seq_acked: u64,
    queue: OutQueue,
    /// Sent and not yet acknowledged, in sequence order (lossless only).
    sent: VecDeque<Message>,
    /// Sent before the last fault and not known to be acknowledged; resent first.
    replay: VecDeque<Message>,
}

impl Session {
    /// A fresh session.
    pub fn new(cookie: u64, lossy: bool) -> Self {
        Session {
            cookie,
            peer_cookie: 0,
            connect_seq: 0,
            global_seq: 0,
            peer_global_seq: 0,
            lossy,
            out_seq: 0,
            in_seq: 0,
            in_seq_acked: 0,
            queue: OutQueue::default(),
            sent: VecDeque::new(),
            replay: VecDeque::new(),
        }
    }

    /// Queue a message for sending.
    pub fn queue(&mut self, msg: Message) {
        self.queue.push(msg);
    }

    /// True if anything waits to be (re)sent.
    pub fn has_outgoing(&self) -> bool {
        !self.replay.is_empty() || self.queue.len > 0
    }

    /// Messages queued (not counting replays).
    pub fn queued(&self) -> usize {
        self.queue.len
    }

    /// Payload bytes queued (not counting replays).
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes
    }

    /// Sent messages not yet acknowledged (including those waiting for replay).
    pub fn unacked(&self) -> usize {
        self.sent.len() + self.replay.len()
    }

    /// The next message to put on the wire with its sequence number: replays first (they
    /// keep their numbers), then the queue (each gets the next number). A lossless
    /// session keeps a copy until the peer acknowledges it.
    pub fn next_outgoing(&mut self) -> Option<Message> {
        if let Some(msg) = self.replay.pop_front() {
            if !self.lossy {
                self.sent.push_back(msg.clone());
            }
            return Some(msg);
        }
        let mut msg = self.queue.pop()?;
        self.out_seq += 1;
        msg.seq = self.out_seq;
        if !self.lossy {
            // Cloning a Message clones reference-counted buffers, not payload bytes.
            self.sent.push_back(msg.clone());
        }
        Some(msg)
    }

    /// True if sent-but-unacknowledged messages wait to be resent (docs/PROTOCOL.md §7.7).
    pub fn has_replay(&self) -> bool {
        !self.replay.is_empty()
    }

    /// The next replay (it keeps its sequence number), tracked as sent again.
    pub fn next_replay(&mut self) -> Option<Message> {
        let msg = self.replay.pop_front()?;
        if !self.lossy {
            self.sent.push_back(msg.clone());
        }
        Some(msg)
    }

    /// The next queued message, without a sequence number yet: a chunked message gets
    /// its number only when its last chunk is sent (docs/PROTOCOL.md §7.6).
    pub fn pop_queued(&mut self) -> Option<Message> {
        self.queue.pop()
    }

    /// Give `msg` the next sequence number and (lossless) track it until acknowledged.
    pub fn commit(&mut self, msg: &mut Message) {
        self.out_seq += 1;
        msg.seq = self.out_seq;
        if !self.lossy {
            self.sent.push_back(msg.clone());
        }
    }

    /// Put messages that never completed on a link back at the front of the queue, in
    /// the given order (they are sent again from the start, docs/PROTOCOL.md §7.7).
    pub fn requeue_front(&mut self, msgs: Vec<Message>) {
        for m in msgs.into_iter().rev() {
            self.queue.push_front(m);
        }
    }

    /// Remove the first queued (never transmitted) message with this tid.
    pub fn remove_queued(&mut self, tid: u64) -> Option<Message> {
        self.queue.remove_tid(tid)
    }

    /// The peer acknowledged everything up to `seq`.
    pub fn handle_ack(&mut self, seq: u64) {
        while self.sent.front().is_some_and(|m| m.seq <= seq) {
            self.sent.pop_front();
        }
        while self.replay.front().is_some_and(|m| m.seq <= seq) {
            self.replay.pop_front();
        }
    }

    /// Classify a received sequence number and, if it is to be delivered, record it.
    pub fn receive(&mut self, seq: u64) -> Incoming {
        if seq <= self.in_seq {
            return Incoming::Duplicate;
        }
        let expected = self.in_seq + 1;
        self.in_seq = seq;
        if seq == expected {
            Incoming::Deliver
        } else {
            Incoming::Gap {
                missing_from: expected,
            }
        }
    }

    /// Highest sequence number received.
    pub fn in_seq(&self) -> u64 {
        self.in_seq
    }

    /// Highest sequence number sent.
    pub fn out_seq(&self) -> u64 {
        self.out_seq
    }

    /// True if the peer has not been told about everything we received.
    pub fn ack_pending(&self) -> bool {
        self.in_seq > self.in_seq_acked
    }

    /// How many received messages the peer has not been told about.
    pub fn unacked_in(&self) -> u64 {
        self.in_seq.saturating_sub(self.in_seq_acked)
    }

    /// Record that `in_seq` has been (or is being) acknowledged to the peer; returns it.
    pub fn take_ack(&mut self) -> u64 {
        self.in_seq_acked = self.in_seq;
        self.in_seq
    }

    /// After a fault: everything sent but unacknowledged goes back in front, to be
    /// resent in order with its original numbers. Lossy sessions drop it instead.
    pub fn requeue_sent(&mut self) {
        if self.lossy {
            self.sent.clear();
            return;
        }
        while let Some(m) = self.sent.pop_back() {
            self.replay.push_front(m);
        }
        // The peer will learn our in_seq again in the resume handshake.
        self.in_seq_acked = 0;
    }

    /// On resume: the peer has everything up to `peer_in_seq`; forget those.
    pub fn discard_acked_replays(&mut self, peer_in_seq: u64) {
        self.handle_ack(peer_in_seq);
        self.in_seq_acked = self.in_seq;
    }

    /// Forget everything (a session reset): queues, replays and sequence numbers.
    /// Returns how many messages were dropped.
    pub fn reset(&mut self, new_cookie: u64) -> usize {
        let queued = self.queue.clear();
        queued + self.reset_keep_queue(new_cookie)
    }

    /// A reset in which messages that were never transmitted survive into the new
    /// session (docs/PROTOCOL.md §5.1): only sent-but-unacknowledged messages, whose
    /// fate is unknown, are dropped. Returns how many were dropped.
    pub fn reset_keep_queue(&mut self, new_cookie: u64) -> usize {
        let dropped = self.sent.len() + self.replay.len();
        self.sent.clear();
        self.replay.clear();
        self.out_seq = 0;
        self.in_seq = 0;
        self.in_seq_acked = 0;
        self.connect_seq = 0;
        self.peer_cookie = 0;
        self.cookie = new_cookie;
        dropped
    }

    /// Drop queued messages that were never sent (lossy fault, mark_down).
    pub fn discard_queue(&mut self) -> usize {
        self.queue.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::priority;

    fn msg(tag: u8, prio: u16) -> Message {
        Message::new(1, vec![tag]).with_priority(prio)
    }

    #[test]
    fn higher_priority_first_fifo_within() {
        let mut s = Session::new(1, false);
        s.queue(msg(1, priority::DEFAULT));
        s.queue(msg(2, priority::HIGH));
        s.queue(msg(3, priority::DEFAULT));
        s.queue(msg(4, priority::HIGH));
        let order: Vec<(u8, u64)> = std::iter::from_fn(|| s.next_outgoing())
            .map(|m| (m.front[0], m.seq))
            .collect();
        assert_eq!(order, vec![(2, 1), (4, 2), (1, 3), (3, 4)]);
    }

    #[test]
    fn replay_keeps_numbers_and_skips_acknowledged() {
        let mut s = Session::new(1, false);
        for i in 0..5 {
            s.queue(msg(i, priority::DEFAULT));
        }
        for _ in 0..3 {
            s.next_outgoing();
        }
        s.handle_ack(1);
        assert_eq!(s.unacked(), 2);
        s.requeue_sent();
        s.discard_acked_replays(2);
        let seqs: Vec<u64> = std::iter::from_fn(|| s.next_outgoing())
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, vec![3, 4, 5]);
    }

    #[test]
    fn lossy_sessions_keep_nothing() {
        let mut s = Session::new(1, true);
        s.queue(msg(1, priority::DEFAULT));
        s.next_outgoing();
        s.requeue_sent();
        assert!(!s.has_outgoing());
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn duplicates_and_gaps() {
        let mut s = Session::new(1, false);
        assert_eq!(s.receive(1), Incoming::Deliver);
        assert_eq!(s.receive(1), Incoming::Duplicate);
        assert_eq!(s.receive(4), Incoming::Gap { missing_from: 2 });
        assert_eq!(s.in_seq(), 4);
        assert!(s.ack_pending());
        assert_eq!(s.take_ack(), 4);
        assert!(!s.ack_pending());
    }

    #[test]
    fn remote_reset_keeps_untransmitted_messages() {
        let mut s = Session::new(1, false);
        s.queue(msg(1, priority::DEFAULT));
        s.next_outgoing();
        s.queue(msg(2, priority::DEFAULT));
        s.requeue_sent();
        assert_eq!(s.reset_keep_queue(5), 1);
        let m = s.next_outgoing().unwrap();
        assert_eq!(
            (m.front[0], m.seq),
            (2, 1),
            "renumbered from 1 in the new session"
        );
    }

    #[test]
    fn reset_forgets_everything() {
        let mut s = Session::new(1, false);
        s.queue(msg(1, priority::DEFAULT));
        s.queue(msg(2, priority::DEFAULT));
        s.next_outgoing();
        s.receive(1);
        assert_eq!(s.reset(9), 2);
        assert_eq!((s.in_seq(), s.out_seq(), s.cookie), (0, 0, 9));
        assert!(!s.has_outgoing());
    }
}
