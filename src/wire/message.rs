//! The message: what users send and receive, in both protocols.
//!
//! A message is opaque to the messenger except for its header fields: a type code,
//! a priority, encoding versions, a transaction id, and three payload sections
//! (front, middle, data). Sequence numbers and the source name are assigned by the
//! protocol and are only meaningful on received messages.

use std::fmt;

use bytes::Bytes;

use super::types::EntityName;

/// Priorities used by Ceph (`CEPH_MSG_PRIO_*`); higher goes first.
pub mod priority {
    /// Background traffic.
    pub const LOW: u16 = 64;
    /// The default.
    pub const DEFAULT: u16 = 127;
    /// Control traffic such as monitor replies.
    pub const HIGH: u16 = 196;
    /// The most urgent (also used to replay unacknowledged messages first).
    pub const HIGHEST: u16 = 255;
}

/// One message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type (`CEPH_MSG_*`); opaque to the messenger.
    pub ty: u16,
    /// Priority in the sender's queue; see [`priority`].
    pub priority: u16,
    /// Encoding version of the payload.
    pub version: u16,
    /// Oldest version that can decode the payload.
    pub compat_version: u16,
    /// Transaction id, echoed by request/response protocols.
    pub tid: u64,
    /// Alignment hint for the data section.
    pub data_off: u16,
    /// The front section.
    pub front: Bytes,
    /// The middle section.
    pub middle: Bytes,
    /// The data section (bulk payload).
    pub data: Bytes,
    /// Sequence number within the session. Set by the protocol on receipt; ignored on send.
    pub seq: u64,
    /// The sender. Set by the protocol on receipt; ignored on send.
    pub src: EntityName,
}

impl Message {
    /// A message of type `ty` with the given front and default everything else.
    pub fn new(ty: u16, front: impl Into<Bytes>) -> Self {
        Message {
            ty,
            priority: priority::DEFAULT,
            version: 1,
            compat_version: 1,
            tid: 0,
            data_off: 0,
            front: front.into(),
            middle: Bytes::new(),
            data: Bytes::new(),
            seq: 0,
            src: EntityName::new(super::types::EntityType::ANY, u64::MAX),
        }
    }

    /// Set the data section.
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = data.into();
        self
    }

    /// Set the middle section.
    pub fn with_middle(mut self, middle: impl Into<Bytes>) -> Self {
        self.middle = middle.into();
        self
    }

    /// Set the priority.
    pub fn with_priority(mut self, priority: u16) -> Self {
        self.priority = priority;
        self
    }

    /// Set the transaction id.
    pub fn with_tid(mut self, tid: u64) -> Self {
        self.tid = tid;
        self
    }

    /// Total payload bytes (front + middle + data): what the byte throttles count.
    pub fn payload_len(&self) -> usize {
        self.front.len() + self.middle.len() + self.data.len()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("ty", &format_args!("0x{:x}", self.ty))
            .field("seq", &self.seq)
            .field("tid", &self.tid)
            .field("prio", &self.priority)
            .field("src", &self.src)
            .field("front", &self.front.len())
            .field("middle", &self.middle.len())
            .field("data", &self.data.len())
            .finish()
    }
}
