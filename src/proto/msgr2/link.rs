//! Per-transport state of an msgr2 connection: the deframer, the two protection
//! directions, the pre-auth transcripts and the handshake phase.

use std::time::Instant;

use bytes::Bytes;
use ring::digest;

use crate::auth::{ClientAuth, ServerAuth};
use crate::crypto::{Protection, Random, RxProtector, SessionKeys, TxProtector};
use crate::wire::msgr2::{Banner, Deframer, Frame, Ident, Limits};
use crate::wire::transmit::Transmit;

use super::super::event::{AcceptRequest, Error, LinkId};

/// Which end of the TCP connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We connected.
    Client,
    /// We accepted.
    Server,
}

/// What the link waits for next (docs/PROTOCOL.md §4–§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Client: the server's AUTH, AUTH_BAD_METHOD, or (after we sent ours) AUTH_DONE.
    ExpectAuth,
    /// Client: AUTH_METHODS right after AUTH_BAD_METHOD.
    ExpectMethods,
    /// Client: IDENT (or a refusal) after both AUTH_DONEs.
    ExpectIdent,
    /// Client: START, RECONNECT_OK or a reconnect refusal.
    ExpectSessionReply,
    /// Server: AUTH_SET_METHOD (every other frame is discarded after AUTH_BAD_METHOD).
    ExpectSetMethod,
    /// Server: the client's next AUTH.
    ExpectClientAuth,
    /// Server: the client's AUTH_DONE.
    ExpectAuthDone,
    /// Server: the client's IDENT.
    ExpectClientIdent,
    /// Server: START or RECONNECT.
    ExpectStartOrReconnect,
    /// Server: waiting for the shell's session-table decision.
    AwaitDecision,
    /// Messages flow.
    Open,
}

impl Phase {
    /// What we wait for, in words (for errors).
    pub fn expected(self) -> &'static str {
        match self {
            Phase::ExpectAuth => "AUTH, AUTH_BAD_METHOD or AUTH_DONE",
            Phase::ExpectMethods => "AUTH_METHODS",
            Phase::ExpectIdent => "IDENT",
            Phase::ExpectSessionReply => "START or a RECONNECT reply",
            Phase::ExpectSetMethod => "AUTH_SET_METHOD",
            Phase::ExpectClientAuth => "AUTH",
            Phase::ExpectAuthDone => "AUTH_DONE",
            Phase::ExpectClientIdent => "IDENT",
            Phase::ExpectStartOrReconnect => "START or RECONNECT",
            Phase::AwaitDecision => "nothing (deciding)",
            Phase::Open => "MSG, ACK, KEEPALIVE2 or CLOSE",
        }
    }
}

/// One transport's protocol state.
pub struct Link {
    pub(crate) id: LinkId,
    pub(crate) role: Role,
    pub(crate) phase: Phase,
    pub(crate) deframer: Deframer,
    pub(crate) rx: RxProtector,
    pub(crate) tx: TxProtector,
    pub(crate) out: Transmit,
    /// SHA-256 of what we sent before our AUTH_DONE (docs/PROTOCOL.md §4.5).
    pub(crate) tx_hash: Option<digest::Context>,
    /// SHA-256 of what the peer sent before its AUTH_DONE.
    pub(crate) rx_hash: Option<digest::Context>,
    pub(crate) peer_banner: Option<Banner>,
    pub(crate) protocol_features: u64,
    pub(crate) method: u32,
    pub(crate) client_auth: Option<Box<dyn ClientAuth>>,
    pub(crate) server_auth: Option<Box<dyn ServerAuth>>,
    pub(crate) auth_complete: bool,
    pub(crate) keys: Option<SessionKeys>,
    pub(crate) flags: u64,
    pub(crate) sent_auth_done: bool,
    pub(crate) bad_method_seen: bool,
    pub(crate) peer_ident: Option<Ident>,
    pub(crate) ident_sent: bool,
    pub(crate) pending: Option<AcceptRequest>,
    pub(crate) resume_msg_seq: u64,
    pub(crate) retries: u32,
    pub(crate) started: Instant,
    pub(crate) last_rx: Instant,
    pub(crate) last_keepalive_tx: Instant,
    pub(crate) keepalive_ack_due: Option<crate::wire::types::Timespec>,
    /// Chunked messages being sent on this link (docs/PROTOCOL.md §7.6).
    pub(crate) chunk_tx: super::chunk::ChunkTx,
    /// The chunked message being received on this link (§7.4).
    pub(crate) chunk_rx: super::chunk::ChunkRx,
}

/// Most RETRY answers one link accepts before it gives up (a misbehaving peer
/// must not keep us in a loop).
pub const MAX_RETRIES_PER_LINK: u32 = 16;

impl Link {
    /// A link in its first phase. `check_crcs`: compare received CRCs
    /// ([`ProtoConfig::crc`](crate::proto::ProtoConfig::crc)).
    pub(crate) fn new(
        id: LinkId,
        role: Role,
        limits: Limits,
        check_crcs: bool,
        now: Instant,
    ) -> Self {
        let mut deframer = Deframer::new(limits);
        deframer.set_check_crcs(check_crcs);
        Link {
            id,
            role,
            phase: match role {
                Role::Client => Phase::ExpectAuth,
                Role::Server => Phase::ExpectSetMethod,
            },
            deframer,
            rx: RxProtector::plain(),
            tx: TxProtector::plain(),
            out: Transmit::new(),
            tx_hash: Some(digest::Context::new(&digest::SHA256)),
            rx_hash: Some(digest::Context::new(&digest::SHA256)),
            peer_banner: None,
            protocol_features: 0,
            method: 0,
            client_auth: None,
            server_auth: None,
            auth_complete: false,
            keys: None,
            flags: 0,
            sent_auth_done: false,
            bad_method_seen: false,
            peer_ident: None,
            ident_sent: false,
            pending: None,
            resume_msg_seq: 0,
            retries: 0,
            started: now,
            last_rx: now,
            last_keepalive_tx: now,
            keepalive_ack_due: None,
            chunk_tx: Default::default(),
            chunk_rx: Default::default(),
        }
    }

    /// Queue our banner (hashed into the transcript).
    pub(crate) fn queue_banner(&mut self, banner: &Banner) {
        let mut v = Vec::with_capacity(Banner::MAX_LEN);
        banner.encode(&mut v);
        if let Some(h) = &mut self.tx_hash {
            h.update(&v);
        }
        self.out.push_copy(&v);
    }

    /// Queue a frame in the form this direction currently uses. Plain frames sent
    /// before the keys exist are hashed into the transcript.
    pub(crate) fn queue(&mut self, frame: &Frame, rng: &mut dyn Random) -> Result<(), Error> {
        if self.tx.protection() == Protection::Plain {
            if let Some(h) = &mut self.tx_hash {
                let mut v = Vec::new();
                frame.encode(&mut v);
                h.update(&v);
                self.out.push_copy(&v);
                return Ok(());
            }
        }
        // §3.4: the last frame a key may protect is reserved for CLOSE(REKEY), so the
        // peer learns why the link ends instead of seeing a bare EOF.
        if self.tx.remaining_frames() <= 1 && !matches!(frame, Frame::Close(_)) {
            return Err(Error::KeysExhausted);
        }
        self.tx
            .seal(frame, rng, &mut self.out)
            .map_err(|_| Error::KeysExhausted)
    }

    /// Hash received wire bytes into the peer's transcript (while it is kept).
    pub(crate) fn hash_rx(&mut self, raw: &Bytes) {
        if let Some(h) = &mut self.rx_hash {
            h.update(raw);
        }
    }

    /// The SHA-256 so far of what we sent, ending our transcript.
    pub(crate) fn finish_tx_hash(&mut self) -> [u8; 32] {
        finish(self.tx_hash.take())
    }

    /// The SHA-256 so far of what the peer sent, ending its transcript.
    pub(crate) fn finish_rx_hash(&mut self) -> [u8; 32] {
        finish(self.rx_hash.take())
    }

    /// The times the session's timers need (see [`crate::proto::core::LinkClock`]).
    pub(crate) fn clock(&self) -> crate::proto::core::LinkClock {
        crate::proto::core::LinkClock {
            open: self.is_open(),
            started: self.started,
            last_rx: self.last_rx,
            last_keepalive_tx: self.last_keepalive_tx,
        }
    }

    /// True if the link is past the handshake.
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }
}

fn finish(ctx: Option<digest::Context>) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(ctx) = ctx {
        out.copy_from_slice(ctx.finish().as_ref());
    }
    out
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("method", &self.method)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}
