//! The accepting side's handshake (docs/PROTOCOL.md §4.2–§5.2).

use std::time::Instant;

use bytes::Bytes;
use log::{debug, info};

use crate::auth::{Method, Step};
use crate::crypto::{derive_keys, Protection, RxProtector, TxProtector};
use crate::wire::msgr2::{
    Auth, AuthBadMethod, AuthDone, AuthMethods, Frame, IdentBadProtocol, IdentMissingFeatures,
    ReconnectOk, ReconnectRetryGlobal, ReconnectRetrySession, Start, AUTH_NONE,
};
use crate::wire::types::{AddrType, EntityAddr};

use super::super::accept::{Attempt, Decision};
use super::super::event::{AcceptRequest, Error, Event, Initiator};
use super::super::session::Session;
use super::super::Mode;
use super::link::Phase;
use super::{Connection, LinkHandoff};

impl Connection {
    pub(super) fn server_frame(
        &mut self,
        frame: Frame,
        _raw: Bytes,
        now: Instant,
    ) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        match (link.phase, frame) {
            (Phase::ExpectSetMethod, Frame::AuthSetMethod(m)) => self.server_set_method(m.method),
            // After AUTH_BAD_METHOD every other frame is discarded until AUTH_SET_METHOD
            // (they were pipelined for the refused method). Only plain frames can
            // arrive here: the client has not completed a keyed AUTH_DONE.
            (Phase::ExpectSetMethod, other) if link.bad_method_seen => {
                debug!(
                    "[{}] discarding {:?} after AUTH_BAD_METHOD",
                    self.core.peer.addr,
                    other.tag()
                );
                if let Frame::AuthDone(_) = other {
                    // The discarded AUTH_DONE is part of the transcript (docs/PROTOCOL.md §4.5).
                    link.hash_rx(&_raw);
                }
                Ok(())
            }
            (Phase::ExpectClientAuth, Frame::Auth(a)) => {
                let Some(auth) = &mut link.server_auth else {
                    return Err(Error::PeerMisbehaved("AUTH before AUTH_SET_METHOD"));
                };
                match auth.handle(&a.payload, &mut *self.core.rng) {
                    Ok(Step::Send(p)) => self.queue_frame(&Frame::Auth(Auth { payload: p.into() })),
                    Ok(Step::Wait) => Ok(()),
                    Ok(Step::SendAndDone(p)) => {
                        self.queue_frame(&Frame::Auth(Auth { payload: p.into() }))?;
                        self.server_auth_complete();
                        Ok(())
                    }
                    Ok(Step::Done) => {
                        self.server_auth_complete();
                        Ok(())
                    }
                    Err(e) => Err(Error::Auth(e)),
                }
            }
            (Phase::ExpectAuthDone, Frame::AuthDone(done)) => self.server_auth_done(done),
            (Phase::ExpectClientIdent, Frame::Ident(ident)) => {
                if ident.protocol_version != self.core.cfg.protocol_version {
                    self.queue_frame(&Frame::IdentBadProtocol(IdentBadProtocol {
                        protocol_version: self.core.cfg.protocol_version,
                    }))?;
                    return Err(Error::BadProtocolVersion {
                        ours: self.core.cfg.protocol_version,
                        theirs: ident.protocol_version,
                    });
                }
                let policy = self.core.cfg.policies.get(ident.entity_type);
                let required = self.core.cfg.features_required | policy.features_required;
                let missing = required & !ident.features_supported;
                if missing != 0 {
                    self.queue_frame(&Frame::IdentMissingFeatures(IdentMissingFeatures {
                        missing,
                    }))?;
                    return Err(Error::MissingFeatures { missing });
                }
                self.core.policy = policy;
                self.core.peer.ty = ident.entity_type;
                self.core.peer.addrs = ident.addrs.clone();
                self.core.peer.addr = ident
                    .addrs
                    .0
                    .first()
                    .copied()
                    .unwrap_or(EntityAddr::blank(AddrType::NONE, 0));
                self.core.peer.features =
                    self.core.cfg.features_supported & ident.features_supported;
                if let Some(link) = &mut self.link {
                    link.peer_ident = Some(ident);
                    link.phase = Phase::ExpectStartOrReconnect;
                }
                Ok(())
            }
            (Phase::ExpectStartOrReconnect, Frame::Start(start)) => {
                self.server_request(
                    Attempt {
                        global_seq: start.global_seq,
                        resume: None,
                    },
                    0,
                );
                Ok(())
            }
            (Phase::ExpectStartOrReconnect, Frame::Reconnect(r)) => {
                let attempt = Attempt {
                    global_seq: r.global_seq,
                    resume: Some((r.cookie, r.connect_seq)),
                };
                self.server_request(attempt, r.msg_seq);
                Ok(())
            }
            (Phase::Open, frame) => self.exchange_frame(frame, now),
            (phase, frame) => Err(Error::UnexpectedFrame {
                tag: frame.tag(),
                expected: phase.expected(),
            }),
        }
    }

    fn server_set_method(&mut self, method: u32) -> Result<(), Error> {
        let allowed = self
            .core
            .cfg
            .auth
            .server_methods
            .iter()
            .any(|m| m.0 == method);
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        link.method = method;
        if !allowed {
            let ours = &self.core.cfg.auth.server_methods;
            let methods: Vec<u32> = ours.iter().map(|m| m.0).collect();
            if link.bad_method_seen {
                return Err(Error::NoCommonAuthMethod { offered: methods });
            }
            link.bad_method_seen = true;
            self.queue_frame(&Frame::AuthBadMethod(AuthBadMethod { method }))?;
            self.queue_frame(&Frame::AuthMethods(AuthMethods { methods }))?;
            return Ok(());
        }
        let auth = self.core.cfg.auth.server_for(Method(method))?;
        if let Some(link) = &mut self.link {
            link.server_auth = Some(auth);
            link.phase = Phase::ExpectClientAuth;
        }
        Ok(())
    }

    fn server_auth_complete(&mut self) {
        if let Some(link) = &mut self.link {
            link.auth_complete = true;
            link.phase = Phase::ExpectAuthDone;
        }
    }

    fn server_auth_done(&mut self, done: AuthDone) -> Result<(), Error> {
        let min_mode = self.core.cfg.min_mode;
        let max_frames = self.core.cfg.max_frames_per_key;
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let Some(mode) = Mode::from_flags(done.flags) else {
            return Err(Error::PeerMisbehaved("invalid AUTH_DONE flags"));
        };
        let keyed = link.method != AUTH_NONE;
        if keyed {
            let session_key = link
                .server_auth
                .as_ref()
                .and_then(|a| a.session_key().map(<[u8]>::to_vec))
                .ok_or(Error::PeerMisbehaved(
                    "auth method finished without a session key",
                ))?;
            let t_c = link.finish_rx_hash();
            let t_s = link.finish_tx_hash();
            let keys = derive_keys(&session_key, &t_c, &t_s);
            if !keys.verify_auth_done(true, done.flags, &done.signature) {
                return Err(Error::PeerMisbehaved(
                    "client AUTH_DONE signature does not verify (transcript altered or wrong key)",
                ));
            }
            crate::crypto::log_keys(self.core.cfg.key_log.as_deref(), &keys, &t_c, &t_s);
            link.keys = Some(keys);
        } else {
            if done.flags != 0 || done.signature != [0u8; 32] {
                return Err(Error::PeerMisbehaved(
                    "AUTH_DONE with flags or signature under auth none",
                ));
            }
            link.rx_hash = None;
            link.tx_hash = None;
        }
        if mode < min_mode {
            // fail_link sends CLOSE(MODE_REQUIRED) with this text (once).
            let message = format!("server requires {min_mode:?} mode; client asked for {mode:?}");
            return Err(Error::ModeRefused(message));
        }
        link.flags = done.flags;
        let sig = link
            .keys
            .as_ref()
            .map_or([0u8; 32], |k| k.auth_done_signature(false, done.flags));
        if let (Some(keys), Some(p)) = (&link.keys, Protection::from_flags(done.flags)) {
            link.rx = RxProtector::new(p, &keys.c2s, max_frames);
        }
        link.queue(
            &Frame::AuthDone(AuthDone {
                flags: done.flags,
                signature: sig,
            }),
            &mut *self.core.rng,
        )?;
        link.sent_auth_done = true;
        if let (Some(keys), Some(p)) = (&link.keys, Protection::from_flags(done.flags)) {
            link.tx = TxProtector::new(p, &keys.s2c, max_frames);
        }
        link.phase = Phase::ExpectClientIdent;
        Ok(())
    }

    fn server_request(&mut self, attempt: Attempt, msg_seq: u64) {
        let Some(link) = &mut self.link else { return };
        let Some(ident) = &link.peer_ident else {
            return;
        };
        let request = AcceptRequest {
            peer_type: ident.entity_type,
            peer_addrs: ident.addrs.clone(),
            peer_addr: self.core.peer.addr,
            peer_cookie: ident.cookie,
            attempt,
        };
        link.pending = Some(request.clone());
        link.resume_msg_seq = msg_seq;
        link.phase = Phase::AwaitDecision;
        self.core.events.push_back(Event::AcceptRequest(request));
    }

    fn server_queue_ident(&mut self) -> Result<(), Error> {
        let already = self.link.as_ref().is_some_and(|l| l.ident_sent);
        if !already {
            let ident = self.our_ident();
            self.queue_frame(&Frame::Ident(ident))?;
            if let Some(link) = &mut self.link {
                link.ident_sent = true;
            }
        }
        Ok(())
    }

    /// [`Decision::New`]: this incoming connection becomes a new session.
    pub(super) fn server_accept_new(&mut self, now: Instant) -> Result<(), Error> {
        let Some(request) = self.link.as_mut().and_then(|l| l.pending.take()) else {
            return Err(Error::PeerMisbehaved("internal: no pending accept request"));
        };
        if request.attempt.resume.is_some() {
            return Err(Error::PeerMisbehaved(
                "internal: New decided for a resume attempt",
            ));
        }
        let cookie = crate::proto::core::random_cookie(&mut *self.core.rng);
        self.core.session = Session::new(cookie, self.core.policy.lossy);
        self.server_start_session(&request, now)
    }

    fn server_start_session(&mut self, request: &AcceptRequest, now: Instant) -> Result<(), Error> {
        self.core.session.peer_cookie = request.peer_cookie;
        self.core.session.connect_seq = 1;
        self.core.session.peer_global_seq = request.attempt.global_seq;
        self.core.session.global_seq = self.core.cfg.global_seq.next(0);
        self.server_queue_ident()?;
        let start = Start {
            flags: 0,
            global_seq: self.core.session.global_seq,
        };
        self.queue_frame(&Frame::Start(start))?;
        self.server_open(false, now);
        Ok(())
    }

    fn server_open(&mut self, resumed: bool, now: Instant) {
        if let Some(link) = &mut self.link {
            link.phase = Phase::Open;
            link.last_keepalive_tx = now;
        }
        self.core.opened(Event::Accepted { resumed });
    }

    /// A refusal: RETRY_SESSION, RETRY_GLOBAL, RESET (after our IDENT) or WAIT.
    pub(super) fn server_refuse(&mut self, decision: Decision, _now: Instant) -> Result<(), Error> {
        if let Some(link) = &mut self.link {
            link.pending = None;
            link.phase = Phase::ExpectStartOrReconnect;
        }
        match decision {
            Decision::Wait => {
                self.queue_frame(&Frame::ReconnectWait)?;
                return Err(Error::Transport(
                    "told the peer to wait: our connection wins the race".into(),
                ));
            }
            Decision::RetrySession(connect_seq) => {
                self.server_queue_ident()?;
                self.queue_frame(&Frame::ReconnectRetrySession(ReconnectRetrySession {
                    connect_seq,
                }))?;
            }
            Decision::RetryGlobal(global_seq) => {
                self.server_queue_ident()?;
                self.queue_frame(&Frame::ReconnectRetryGlobal(ReconnectRetryGlobal {
                    global_seq,
                }))?;
            }
            Decision::Reset => {
                self.server_queue_ident()?;
                self.queue_frame(&Frame::ReconnectReset)?;
            }
            Decision::New | Decision::Adopt { .. } => {}
        }
        Ok(())
    }

    /// [`Decision::Adopt`] on the existing session: take over the incoming link.
    pub(super) fn server_adopt(
        &mut self,
        handoff: LinkHandoff,
        reset: bool,
        now: Instant,
    ) -> Result<(), Error> {
        let LinkHandoff { link, request } = handoff;
        if let Some(old) = self.link.take() {
            self.push_link_closed(
                old,
                Error::Transport("replaced by the peer's new connection".into()),
                Initiator::Peer,
            );
        }
        if reset {
            self.core.reset_for_adopted_link();
        }
        if let Some(ident) = &link.peer_ident {
            self.core.peer.ty = ident.entity_type;
            self.core.peer.addrs = ident.addrs.clone();
            self.core.peer.features = self.core.cfg.features_supported & ident.features_supported;
        }
        let msg_seq = link.resume_msg_seq;
        self.link = Some(link);
        match request.attempt.resume {
            Some((_, connect_seq)) if !reset => {
                info!(
                    "[{}] resuming session (connect_seq {connect_seq})",
                    self.core.peer.addr
                );
                self.core.session.requeue_sent();
                self.core.session.discard_acked_replays(msg_seq);
                self.core.session.connect_seq = connect_seq + 1;
                self.core.session.peer_global_seq = request.attempt.global_seq;
                self.server_queue_ident()?;
                let ok = ReconnectOk {
                    msg_seq: self.core.session.in_seq(),
                    global_seq: self.core.cfg.global_seq.next(0),
                };
                self.queue_frame(&Frame::ReconnectOk(ok))?;
                self.server_open(true, now);
                Ok(())
            }
            _ => self.server_start_session(&request, now),
        }
    }
}
