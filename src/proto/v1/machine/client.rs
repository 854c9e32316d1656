//! The client half of the v1 handshake: the server's hello, `connect` and its
//! retries, the reply tags, the SEQ exchange, and opening the session.

use super::*;

impl V1SessionConn {
    pub(super) fn client_on_hello(
        &mut self,
        server: EntityAddr,
        seen: EntityAddr,
    ) -> Result<(), Error> {
        trace!(
            "[{}] v1 hello: server {server}, we are {seen}",
            self.core.peer.addr
        );
        // Our own address: the one we listen on or, unbound, blank with our nonce (the
        // messenger keys such a session by nonce), or if asked the IP the server saw
        // with our port and nonce (Ceph's learned address).
        let mut mine = legacy(my_addr(&self.core.cfg));
        if mine.is_blank() && self.learn_addr {
            if let Some(sa) = seen.addr {
                let port = mine.addr.map_or(0, |a| a.port());
                mine.addr = Some(SocketAddr::new(sa.ip(), port));
            }
        }
        let mut b = Vec::with_capacity(136);
        mine.encode_legacy(&mut b);
        if let Some(link) = &mut self.link {
            link.out.push_copy(&b);
            link.peer_addr = Some(server);
            link.addr_seen = Some(seen);
        }
        self.client_send_connect();
        Ok(())
    }

    pub(super) fn our_features(&self) -> u64 {
        self.core.cfg.features_supported
    }

    pub(super) fn client_send_connect(&mut self) {
        let c = ConnectMsg {
            features: self.our_features(),
            host_type: u32::from(self.core.cfg.name.ty.0),
            global_seq: self.core.session.global_seq as u32,
            connect_seq: self.core.session.connect_seq as u32,
            protocol_version: self.protocol_version(self.core.peer.ty, true),
            authorizer_protocol: 0,
            flags: if self.core.policy.lossy {
                CONNECT_FLAG_LOSSY
            } else {
                0
            },
            authorizer: Vec::new(),
        };
        trace!(
            "[{}] v1 connect gseq {} cseq {}",
            self.core.peer.addr,
            c.global_seq,
            c.connect_seq
        );
        if let Some(link) = &mut self.link {
            link.push(&c);
            link.phase = Phase::ExpectConnectReply;
        }
    }

    pub(super) fn client_retry(&mut self) -> Result<(), Error> {
        if let Some(link) = &mut self.link {
            link.retries += 1;
            if link.retries > MAX_RETRIES_PER_LINK {
                return Err(Error::PeerMisbehaved("too many v1 connect retries"));
            }
        }
        self.client_send_connect();
        Ok(())
    }

    pub(super) fn client_on_reply(
        &mut self,
        reply: ConnectReply,
        now: Instant,
    ) -> Result<(), Error> {
        trace!(
            "[{}] v1 connect_reply {} gseq {} cseq {}",
            self.core.peer.addr,
            reply.tag,
            reply.global_seq,
            reply.connect_seq
        );
        match reply.tag {
            Tag::READY => {
                self.client_open(&reply, now);
                Ok(())
            }
            Tag::SEQ => {
                if let Some(link) = &mut self.link {
                    link.reply = Some(reply);
                    link.phase = Phase::ExpectSeq;
                }
                Ok(())
            }
            Tag::FEATURES => Err(Error::MissingFeatures {
                missing: reply.features & !self.our_features(),
            }),
            Tag::BADPROTOVER => Err(Error::BadProtocolVersion {
                ours: self.protocol_version(self.core.peer.ty, true),
                theirs: reply.protocol_version,
            }),
            Tag::BADAUTHORIZER => Err(Error::Auth(crate::auth::AuthError::Malformed(
                "the v1 peer refused our (empty) authorizer (BADAUTHORIZER)",
            ))),
            Tag::RESETSESSION => {
                self.core.peer_reset_our_session();
                self.client_retry()
            }
            Tag::RETRY_SESSION => {
                self.core.session.connect_seq =
                    u64::from(reply.connect_seq).max(self.core.session.connect_seq);
                self.client_retry()
            }
            Tag::RETRY_GLOBAL => {
                self.core.session.global_seq =
                    self.core.cfg.global_seq.next(u64::from(reply.global_seq));
                self.client_retry()
            }
            Tag::WAIT => {
                info!(
                    "[{}] v1: lost the connection race; waiting for the peer's connection",
                    self.core.peer.addr
                );
                self.core.state = State::Wait;
                Err(Error::Transport("connection race lost (WAIT)".into()))
            }
            tag => Err(Error::Legacy(format!("unexpected connect_reply tag {tag}"))),
        }
    }

    pub(super) fn client_on_seq(&mut self, peer_in_seq: u64, now: Instant) {
        self.core.session.requeue_sent();
        self.core.session.discard_acked_replays(peer_in_seq);
        let in_seq = self.core.session.in_seq();
        let reply = self.link.as_mut().and_then(|l| {
            let mut b = Vec::with_capacity(8);
            b.put_le64(in_seq);
            l.out.push_copy(&b);
            l.seq_exchange = true;
            l.reply.take()
        });
        if let Some(reply) = reply {
            self.client_open(&reply, now);
        }
    }

    pub(super) fn client_open(&mut self, reply: &ConnectReply, now: Instant) {
        let required = self.core.cfg.features_required | self.core.policy.features_required;
        let missing = required & !reply.features;
        if missing != 0 {
            self.fail_link(now, Error::MissingFeatures { missing }, Initiator::Local);
            return;
        }
        let lossy = reply.flags & CONNECT_FLAG_LOSSY != 0;
        if lossy != self.core.session.lossy {
            warn!(
                "[{}] v1 server decides the session is {}",
                self.core.peer.addr,
                if lossy { "lossy" } else { "lossless" }
            );
            self.core.session.lossy = lossy;
            self.core.policy.lossy = lossy;
        }
        let resumed = self.core.session.connect_seq > 0;
        self.core.session.connect_seq = u64::from(reply.connect_seq).max(1);
        self.core.session.peer_global_seq = u64::from(reply.global_seq);
        self.core.peer.features = reply.features & self.our_features();
        if let Some(link) = &mut self.link {
            link.features = self.core.peer.features;
            link.phase = Phase::Open;
            link.last_keepalive_tx = now;
        }
        self.core.opened(Event::Connected { resumed });
    }
}
