//! The connecting side's handshake (docs/PROTOCOL.md §4.2–§5).

use std::time::Instant;

use log::{debug, info};

use crate::auth::{Method, Step};
use crate::crypto::{derive_keys, Protection, RxProtector, TxProtector};
use crate::wire::msgr2::{
    Auth, AuthDone, AuthSetMethod, Frame, Ident, Reconnect, Start, AUTH_NONE, IDENT_INITIATOR,
    IDENT_LOSSY,
};

use super::super::event::{Error, Event};
use super::super::Mode;
use super::link::Phase;
use super::{our_banner, Connection, State};

impl Connection {
    /// The client's first flight: banner, AUTH_SET_METHOD and the first AUTH, without
    /// waiting for the server; with NONE also AUTH_DONE, IDENT and START/RECONNECT.
    pub(super) fn client_start(&mut self, now: Instant) -> Result<(), Error> {
        let banner = our_banner(&self.core.cfg);
        let method = self
            .preferred_method
            .filter(|m| self.core.cfg.auth.client_methods.iter().any(|c| c.0 == *m))
            .or_else(|| self.core.cfg.auth.client_methods.first().map(|m| m.0))
            .ok_or(Error::NoCommonAuthMethod {
                offered: Vec::new(),
            })?;
        if let Some(link) = &mut self.link {
            link.queue_banner(&banner);
        }
        self.client_set_method(method, now)
    }

    fn client_set_method(&mut self, method: u32, now: Instant) -> Result<(), Error> {
        let mut auth = self.core.cfg.auth.client_for(Method(method))?;
        let first = auth.start(&mut *self.core.rng);
        let done = method == AUTH_NONE;
        if let Some(link) = &mut self.link {
            link.method = method;
            link.client_auth = Some(auth);
            link.auth_complete = false;
            link.sent_auth_done = false;
            link.phase = Phase::ExpectAuth;
        }
        self.queue_frame(&Frame::AuthSetMethod(AuthSetMethod { method }))?;
        self.queue_frame(&Frame::Auth(Auth {
            payload: first.into(),
        }))?;
        if done {
            self.client_auth_complete(now)?;
        }
        Ok(())
    }

    /// The method finished on our side: derive keys, send AUTH_DONE, switch our
    /// direction to its protection, and pipeline IDENT and START/RECONNECT.
    fn client_auth_complete(&mut self, _now: Instant) -> Result<(), Error> {
        let mode = self.core.cfg.mode;
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        link.auth_complete = true;
        let keyed = link.method != AUTH_NONE;
        let (flags, signature) = if keyed {
            let session_key = link
                .client_auth
                .as_ref()
                .and_then(|a| a.session_key().map(<[u8]>::to_vec))
                .ok_or(Error::PeerMisbehaved(
                    "auth method finished without a session key",
                ))?;
            let t_c = link.finish_tx_hash();
            let t_s = link.rx_hash.as_ref().map_or([0u8; 32], |h| {
                let mut out = [0u8; 32];
                out.copy_from_slice(h.clone().finish().as_ref());
                out
            });
            let keys = derive_keys(&session_key, &t_c, &t_s);
            crate::crypto::log_keys(self.core.cfg.key_log.as_deref(), &keys, &t_c, &t_s);
            let flags = mode.flags();
            let sig = keys.auth_done_signature(true, flags);
            link.keys = Some(keys);
            (flags, sig)
        } else {
            if self.core.cfg.min_mode > Mode::Plain {
                return Err(Error::ModeRefused(format!(
                    "auth none cannot sign or encrypt, and this side requires {:?} mode",
                    self.core.cfg.min_mode
                )));
            }
            (0, [0u8; 32])
        };
        link.flags = flags;
        link.queue(
            &Frame::AuthDone(AuthDone { flags, signature }),
            &mut *self.core.rng,
        )?;
        link.sent_auth_done = true;
        if let (Some(keys), Some(p)) = (&link.keys, Protection::from_flags(flags)) {
            link.tx = TxProtector::new(p, &keys.c2s, self.core.cfg.max_frames_per_key);
        }
        self.client_queue_ident()
    }

    fn client_queue_ident(&mut self) -> Result<(), Error> {
        let ident = self.our_ident();
        self.queue_frame(&Frame::Ident(ident))?;
        if let Some(link) = &mut self.link {
            link.ident_sent = true;
        }
        self.client_queue_session_frame()
    }

    /// START for a new session, RECONNECT to resume one.
    fn client_queue_session_frame(&mut self) -> Result<(), Error> {
        let frame = if self.core.session.connect_seq == 0 {
            Frame::Start(Start {
                flags: 0,
                global_seq: self.core.session.global_seq,
            })
        } else {
            Frame::Reconnect(Reconnect {
                cookie: self.core.session.peer_cookie,
                global_seq: self.core.session.global_seq,
                connect_seq: self.core.session.connect_seq,
                msg_seq: self.core.session.in_seq(),
            })
        };
        self.queue_frame(&frame)
    }

    pub(super) fn client_frame(&mut self, frame: Frame, now: Instant) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let phase = link.phase;
        match (phase, frame) {
            (Phase::ExpectAuth, Frame::AuthBadMethod(bad)) => {
                if link.bad_method_seen {
                    return Err(Error::PeerMisbehaved(
                        "a second AUTH_BAD_METHOD on one connection",
                    ));
                }
                if bad.method != link.method {
                    return Err(Error::PeerMisbehaved(
                        "AUTH_BAD_METHOD names a method we did not choose",
                    ));
                }
                debug!(
                    "[{}] server refused auth method 0x{:x}",
                    self.core.peer.addr, bad.method
                );
                link.bad_method_seen = true;
                link.phase = Phase::ExpectMethods;
                Ok(())
            }
            (Phase::ExpectMethods, Frame::AuthMethods(m)) => {
                let pick = self.core.cfg.auth.pick_client_method(&m.methods);
                match pick {
                    Some(method) => {
                        info!(
                            "[{}] falling back to auth method 0x{:x}",
                            self.core.peer.addr, method.0
                        );
                        self.client_set_method(method.0, now)
                    }
                    None => Err(Error::NoCommonAuthMethod { offered: m.methods }),
                }
            }
            (Phase::ExpectAuth, Frame::Auth(a)) if !link.auth_complete => {
                let Some(auth) = &mut link.client_auth else {
                    return Err(Error::PeerMisbehaved("AUTH before AUTH_SET_METHOD"));
                };
                match auth.handle(&a.payload)? {
                    Step::Send(p) => self.queue_frame(&Frame::Auth(Auth { payload: p.into() })),
                    Step::Wait => Ok(()),
                    Step::SendAndDone(p) => {
                        self.queue_frame(&Frame::Auth(Auth { payload: p.into() }))?;
                        self.client_auth_complete(now)
                    }
                    Step::Done => self.client_auth_complete(now),
                }
            }
            (Phase::ExpectAuth, Frame::AuthDone(done)) if link.sent_auth_done => {
                if done.flags != link.flags {
                    return Err(Error::PeerMisbehaved(
                        "server AUTH_DONE flags differ from ours",
                    ));
                }
                match &link.keys {
                    Some(keys) => {
                        if !keys.verify_auth_done(false, done.flags, &done.signature) {
                            return Err(Error::PeerMisbehaved(
                                "server AUTH_DONE signature does not verify (transcript altered or wrong key)",
                            ));
                        }
                        if let Some(p) = Protection::from_flags(done.flags) {
                            link.rx =
                                RxProtector::new(p, &keys.s2c, self.core.cfg.max_frames_per_key);
                        }
                    }
                    None if done.signature == [0u8; 32] && done.flags == 0 => {}
                    None => {
                        return Err(Error::PeerMisbehaved(
                            "AUTH_DONE with flags or signature under auth none",
                        ))
                    }
                }
                link.rx_hash = None;
                link.tx_hash = None;
                link.phase = Phase::ExpectIdent;
                Ok(())
            }
            (Phase::ExpectIdent, Frame::Ident(ident)) => self.client_on_ident(ident),
            (Phase::ExpectIdent, Frame::IdentMissingFeatures(m)) => {
                Err(Error::MissingFeatures { missing: m.missing })
            }
            (Phase::ExpectIdent, Frame::IdentBadProtocol(b)) => Err(Error::BadProtocolVersion {
                ours: self.core.cfg.protocol_version,
                theirs: b.protocol_version,
            }),
            (Phase::ExpectIdent, Frame::ReconnectWait) => {
                info!(
                    "[{}] lost the connection race; waiting for the peer's connection",
                    self.core.peer.addr
                );
                self.core.state = State::Wait;
                Err(Error::Transport(
                    "connection race lost (RECONNECT_WAIT)".into(),
                ))
            }
            (Phase::ExpectSessionReply, frame) => self.client_session_reply(frame, now),
            (Phase::Open, frame) => self.exchange_frame(frame, now),
            (phase, frame) => Err(Error::UnexpectedFrame {
                tag: frame.tag(),
                expected: phase.expected(),
            }),
        }
    }

    fn client_on_ident(&mut self, ident: Ident) -> Result<(), Error> {
        let ours_required = self.core.cfg.features_required | self.core.policy.features_required;
        let we_lack = ident.features_required & !self.core.cfg.features_supported;
        if we_lack != 0 {
            return Err(Error::MissingFeatures { missing: we_lack });
        }
        let they_lack = ours_required & !ident.features_supported;
        if they_lack != 0 {
            return Err(Error::MissingFeatures { missing: they_lack });
        }
        let lossy = ident.flags & IDENT_LOSSY != 0;
        if lossy != self.core.session.lossy {
            info!(
                "[{}] server decides the session is {}; our policy said {}",
                self.core.peer.addr,
                if lossy { "lossy" } else { "lossless" },
                if self.core.session.lossy {
                    "lossy"
                } else {
                    "lossless"
                }
            );
            self.core.session.lossy = lossy;
            self.core.policy.lossy = lossy;
        }
        if !lossy && ident.flags & IDENT_INITIATOR == 0 && self.core.policy.server {
            return Err(Error::PolicyMismatch(
                "lossless session where neither side reconnects",
            ));
        }
        self.core.peer.features = self.core.cfg.features_supported & ident.features_supported;
        self.core.peer.ty = ident.entity_type;
        self.core.peer.addrs = ident.addrs.clone();
        if let Some(link) = &mut self.link {
            link.peer_ident = Some(ident);
            link.phase = Phase::ExpectSessionReply;
        }
        Ok(())
    }

    fn client_session_reply(&mut self, frame: Frame, now: Instant) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let server_cookie = link.peer_ident.as_ref().map_or(0, |i| i.cookie);
        match frame {
            Frame::Start(start) => {
                self.core.session.connect_seq = 1;
                self.core.session.peer_global_seq = start.global_seq;
                self.core.session.peer_cookie = server_cookie;
                self.client_open(false, now);
                Ok(())
            }
            Frame::ReconnectOk(ok) => {
                self.core.session.requeue_sent();
                self.core.session.discard_acked_replays(ok.msg_seq);
                self.core.session.connect_seq += 1;
                self.core.session.peer_global_seq = ok.global_seq;
                self.client_open(true, now);
                Ok(())
            }
            Frame::ReconnectRetrySession(r) => {
                link.retries += 1;
                if link.retries > super::link::MAX_RETRIES_PER_LINK {
                    return Err(Error::PeerMisbehaved("too many RECONNECT_RETRY answers"));
                }
                self.core.session.connect_seq = r.connect_seq.max(self.core.session.connect_seq);
                self.client_queue_session_frame()
            }
            Frame::ReconnectRetryGlobal(r) => {
                link.retries += 1;
                if link.retries > super::link::MAX_RETRIES_PER_LINK {
                    return Err(Error::PeerMisbehaved("too many RECONNECT_RETRY answers"));
                }
                self.core.session.global_seq = self.core.cfg.global_seq.next(r.global_seq);
                self.client_queue_session_frame()
            }
            Frame::ReconnectReset => {
                self.core.peer_reset_our_session();
                self.client_queue_session_frame()
            }
            other => Err(Error::UnexpectedFrame {
                tag: other.tag(),
                expected: Phase::ExpectSessionReply.expected(),
            }),
        }
    }

    fn client_open(&mut self, resumed: bool, now: Instant) {
        if let Some(link) = &mut self.link {
            link.phase = Phase::Open;
            link.last_keepalive_tx = now;
        }
        self.core.opened(Event::Connected { resumed });
    }
}
