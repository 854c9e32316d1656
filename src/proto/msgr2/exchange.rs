//! The message-exchange phase (docs/PROTOCOL.md §6): receiving MSG, ACK and
//! keepalives, and filling transmit batches.

use std::time::Instant;

use log::debug;

use crate::crypto::Protection;
use crate::wire::msgr2::{Ack, Frame, Keepalive2, Keepalive2Ack, Msg};

use super::super::event::{Error, Event};
use super::super::session::Incoming;
use super::Connection;

impl Connection {
    pub(super) fn exchange_frame(&mut self, frame: Frame, now: Instant) -> Result<(), Error> {
        match frame {
            Frame::Msg(msg) => self.on_msg(msg),
            Frame::Ack(Ack { seq }) => {
                self.session.handle_ack(seq);
                Ok(())
            }
            Frame::Keepalive2(Keepalive2 { stamp }) => {
                self.last_keepalive = Some(now);
                if let Some(link) = &mut self.link {
                    link.keepalive_ack_due = Some(stamp);
                }
                Ok(())
            }
            Frame::Keepalive2Ack(_) => {
                self.last_keepalive_ack = Some(now);
                Ok(())
            }
            other => Err(Error::UnexpectedFrame {
                tag: other.tag(),
                expected: "MSG, ACK, KEEPALIVE2 or CLOSE",
            }),
        }
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
        self.session.handle_ack(msg.header.ack_seq);
        let seq = msg.header.seq;
        match self.session.receive(seq) {
            Incoming::Deliver => {}
            Incoming::Duplicate => {
                debug!("[{}] dropping duplicate message seq {seq}", self.peer.addr);
                return Ok(());
            }
            Incoming::Gap { missing_from } => {
                if !self.session.lossy {
                    return Err(Error::PeerMisbehaved(
                        "message sequence gap on a lossless session",
                    ));
                }
                debug!(
                    "[{}] messages {missing_from}..{seq} skipped by a lossy peer",
                    self.peer.addr
                );
            }
        }
        let message = msg.into_message();
        self.peer.name = Some(message.src);
        self.events.push_back(Event::Message(message));
        Ok(())
    }

    /// Put what is due into the link's transmit buffer: a keepalive ack, a keepalive,
    /// messages (each carrying the latest ack), and an ACK if no message carried it.
    pub(super) fn fill_transmit(&mut self, now: Instant) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        if !link.is_open() {
            return Ok(());
        }
        if let Some(stamp) = link.keepalive_ack_due.take() {
            link.queue(
                &Frame::Keepalive2Ack(Keepalive2Ack { stamp }),
                &mut *self.rng,
            )?;
        }
        if let Some(iv) = self.cfg.keepalive_interval {
            if now >= link.last_keepalive_tx + iv {
                link.last_keepalive_tx = now;
                let stamp = crate::wire::types::Timespec::from_duration(
                    now.saturating_duration_since(self.epoch),
                );
                link.queue(&Frame::Keepalive2(Keepalive2 { stamp }), &mut *self.rng)?;
            }
        }
        let crc = self.cfg.crc && link.tx.protection() == Protection::Plain;
        let budget = self.cfg.max_batch_bytes;
        while link.out.len() < budget {
            let Some(msg) = self.session.next_outgoing() else {
                break;
            };
            let ack = self.session.take_ack();
            let frame = Frame::Msg(Msg::from_message(&msg, msg.seq, ack, self.cfg.name, crc));
            link.queue(&frame, &mut *self.rng)?;
        }
        if self.session.ack_pending() && !self.session.lossy {
            let seq = self.session.take_ack();
            link.queue(&Frame::Ack(Ack { seq }), &mut *self.rng)?;
        }
        Ok(())
    }
}
