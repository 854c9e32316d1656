//! Per-session state of a v1 connection, kept apart from the connection so a
//! session table can hand it from one connection to the next (docs/PROTOCOL.md §10.7).

use std::collections::VecDeque;

use crate::wire::message::Message;

/// Sequence numbers and the replay queue of one session.
#[derive(Debug, Clone, Default)]
pub struct V1Session {
    /// Sequence number of the last message we sent (messages are numbered from 1).
    pub out_seq: u64,
    /// Sequence number of the last message we received and delivered.
    pub in_seq: u64,
    /// Sent but not yet acknowledged messages (lossless sessions only), oldest first,
    /// each with the sequence number it was sent with.
    pub sent: VecDeque<(u64, Message)>,
    /// Connections made in this session; 0 before the first one succeeds.
    pub connect_seq: u32,
    /// Our connection counter (`global_seq`) used in connect attempts.
    pub global_seq: u32,
    /// The peer's global_seq from its last accepted connect (server side).
    pub peer_global_seq: u32,
}

impl V1Session {
    /// A fresh session.
    pub fn new() -> Self {
        V1Session::default()
    }

    /// Forget everything that belongs to the session (a session reset): sequence
    /// numbers, the replay queue and connect_seq. `global_seq` survives: it counts
    /// connections, not sessions.
    pub fn reset(&mut self) {
        self.out_seq = 0;
        self.in_seq = 0;
        self.sent.clear();
        self.connect_seq = 0;
        self.peer_global_seq = 0;
    }

    /// The peer has every message up to `seq`: drop them from the replay queue.
    pub fn ack(&mut self, seq: u64) {
        while self.sent.front().is_some_and(|(s, _)| *s <= seq) {
            self.sent.pop_front();
        }
    }

    /// The next outgoing sequence number.
    pub fn next_out_seq(&mut self) -> u64 {
        self.out_seq += 1;
        self.out_seq
    }

    /// Raise our global_seq above `at_least` (RETRY_GLOBAL) and return it.
    pub fn bump_global_seq(&mut self, at_least: u32) -> u32 {
        self.global_seq = self.global_seq.max(at_least).wrapping_add(1);
        self.global_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_trims_the_replay_queue_and_reset_clears_it() {
        let mut s = V1Session::new();
        for _ in 0..3 {
            let seq = s.next_out_seq();
            s.sent.push_back((seq, Message::new(1, vec![])));
        }
        s.ack(2);
        assert_eq!(s.sent.iter().map(|(q, _)| *q).collect::<Vec<_>>(), vec![3]);
        s.global_seq = 4;
        s.connect_seq = 2;
        s.reset();
        assert_eq!(
            (
                s.out_seq,
                s.in_seq,
                s.connect_seq,
                s.sent.len(),
                s.global_seq
            ),
            (0, 0, 0, 0, 4)
        );
        assert_eq!(s.bump_global_seq(10), 11);
        assert_eq!(s.bump_global_seq(3), 12);
    }
}
