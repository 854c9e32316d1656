//! One v1 link of a session: what it waits for next ([`Phase`]), its bytes out, its
//! clocks and what the handshake learned.

use core::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

use crate::proto::core::LinkClock;
use crate::proto::event::{AcceptRequest, LinkId};
use crate::proto::msgr2::Role;
use crate::wire::transmit::Transmit;
use crate::wire::types::{EntityAddr, Timespec};
use crate::wire::v1::frame::HEADER_LEN;
use crate::wire::v1::{features, ConnectMsg, ConnectReply, Frame, RawMsg, Tag};
use crate::wire::{Codec, WriteLe};

/// What a v1 link waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Client: banner, server address, our address as seen.
    ExpectServerHello,
    /// Client: `connect_reply`.
    ExpectConnectReply,
    /// Client: the server's le64 in_seq after a SEQ reply.
    ExpectSeq,
    /// Server: the client banner.
    ExpectBanner,
    /// Server: the client's address.
    ExpectClientAddr,
    /// Server: `connect`.
    ExpectConnect,
    /// Server: waiting for the shell's decision.
    AwaitDecision,
    /// Server: the client's le64 in_seq after our SEQ reply.
    ExpectPeerSeq,
    /// Messages flow.
    Open,
}

impl Phase {
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::ExpectServerHello => "waiting for the server banner and addresses",
            Phase::ExpectConnectReply => "waiting for connect_reply",
            Phase::ExpectSeq => "waiting for the server's in_seq after SEQ",
            Phase::ExpectBanner => "waiting for the client banner",
            Phase::ExpectClientAddr => "waiting for the client address",
            Phase::ExpectConnect => "waiting for connect",
            Phase::AwaitDecision => "deciding",
            Phase::ExpectPeerSeq => "waiting for the client's in_seq after SEQ",
            Phase::Open => "open",
        }
    }
}

/// One v1 transport's protocol state.
pub(super) struct V1Link {
    pub(super) id: LinkId,
    pub(super) role: Role,
    pub(super) phase: Phase,
    pub(super) inbuf: BytesMut,
    pub(super) out: Transmit,
    pub(super) started: Instant,
    pub(super) last_rx: Instant,
    pub(super) last_keepalive_tx: Instant,
    pub(super) keepalive_ack_due: Option<Timespec>,
    /// Negotiated features (ours & theirs), once the connect exchange is done.
    pub(super) features: u64,
    /// Server: the socket's peer address (fills a blank client IP).
    pub(super) socket_peer: Option<SocketAddr>,
    /// Server: the client's advertised address.
    pub(super) peer_addr: Option<EntityAddr>,
    /// Server: the connect being decided.
    pub(super) connect: Option<ConnectMsg>,
    pub(super) pending: Option<AcceptRequest>,
    /// Client: the reply whose SEQ trailer we wait for.
    pub(super) reply: Option<ConnectReply>,
    pub(super) retries: u32,
    /// Client: our address as the server saw it (its hello).
    pub(super) addr_seen: Option<EntityAddr>,
    /// The handshake ended with the SEQ exchange.
    pub(super) seq_exchange: bool,
    /// The owner asked for a keepalive ([`V1SessionConn::send_keepalive`]).
    pub(super) keepalive_requested: bool,
}

impl V1Link {
    pub(super) fn new(id: LinkId, role: Role, now: Instant) -> Self {
        V1Link {
            id,
            role,
            phase: match role {
                Role::Client => Phase::ExpectServerHello,
                Role::Server => Phase::ExpectBanner,
            },
            inbuf: BytesMut::new(),
            out: Transmit::new(),
            started: now,
            last_rx: now,
            last_keepalive_tx: now,
            keepalive_ack_due: None,
            features: 0,
            socket_peer: None,
            peer_addr: None,
            connect: None,
            pending: None,
            reply: None,
            retries: 0,
            addr_seen: None,
            seq_exchange: false,
            keepalive_requested: false,
        }
    }

    pub(super) fn clock(&self) -> LinkClock {
        LinkClock {
            open: self.is_open(),
            started: self.started,
            last_rx: self.last_rx,
            last_keepalive_tx: self.last_keepalive_tx,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub(super) fn with_sig(&self) -> bool {
        self.features & features::MSG_AUTH != 0
    }

    pub(super) fn push<T: Codec>(&mut self, v: &T) {
        let mut b = Vec::new();
        v.encode(&mut b);
        self.out.push_copy(&b);
    }

    pub(super) fn push_frame(&mut self, f: &Frame) {
        let mut b = Vec::new();
        f.encode(&mut b);
        self.out.push_copy(&b);
    }

    /// A MSG frame without copying the payload sections.
    pub(super) fn push_msg(&mut self, raw: &RawMsg) {
        let mut head = Vec::with_capacity(1 + HEADER_LEN);
        head.put_u8(Tag::MSG.0);
        raw.header.encode(&mut head);
        self.out.push_copy(&head);
        for section in [&raw.front, &raw.middle, &raw.data] {
            if !section.is_empty() {
                self.out.push_shared(section.clone());
            }
        }
        let mut foot = Vec::with_capacity(raw.footer.len());
        raw.footer.encode(&mut foot);
        self.out.push_copy(&foot);
    }
}

impl std::fmt::Debug for V1Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1Link")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}
