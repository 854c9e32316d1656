//! The server half of the v1 handshake: checking a `connect`, turning the session
//! table's decision into a reply tag, and opening (or resuming) the session.

use super::*;

impl V1SessionConn {
    pub(super) fn server_on_connect(&mut self, c: ConnectMsg) -> Result<(), Error> {
        let peer_type = EntityType(c.host_type.min(255) as u8);
        let policy = self.core.cfg.policies.get(peer_type);
        let ours = self.protocol_version(peer_type, false);
        let mut reply = ConnectReply {
            tag: Tag::READY,
            features: self.our_features(),
            global_seq: 0,
            connect_seq: 0,
            protocol_version: ours,
            flags: 0,
            authorizer: Vec::new(),
        };
        if let Some(e) = v1_unusable(&self.core.cfg, true) {
            return Err(e);
        }
        // Rows 1–4 of v1's table are about this link alone.
        let required = self.core.cfg.features_required | policy.features_required;
        let refusal = if c.protocol_version != ours {
            Some(Tag::BADPROTOVER)
        } else if required & !c.features != 0 {
            reply.features = (c.features & self.our_features()) | required;
            Some(Tag::FEATURES)
        } else if c.authorizer_protocol != 0 && !c.authorizer.is_empty() {
            Some(Tag::BADAUTHORIZER)
        } else {
            None
        };
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        if let Some(tag) = refusal {
            debug!("v1 connect refused with {tag}");
            reply.tag = tag;
            link.push(&reply);
            return Ok(());
        }
        let mut peer_addr = link
            .peer_addr
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        // `decide` orders addresses (kind first) against the shell's own address, which
        // is written as msgr2: give the peer's the same kind, so both sides of a race
        // compare nonce and IP:port alone and reach mirror-image decisions.
        peer_addr.kind = my_addr(&self.core.cfg).kind;
        let attempt = Attempt {
            global_seq: u64::from(c.global_seq),
            resume: (c.connect_seq > 0).then_some((V1_COOKIE, u64::from(c.connect_seq))),
        };
        let request = AcceptRequest {
            peer_type,
            // As advertised (a `v1:` address); `peer_addr` is the normalized key.
            peer_addrs: AddrVec(vec![legacy(peer_addr)]),
            peer_addr,
            peer_cookie: 0,
            attempt,
        };
        link.connect = Some(c);
        link.pending = Some(request.clone());
        link.phase = Phase::AwaitDecision;
        self.core.policy = policy;
        self.core.peer.ty = peer_type;
        self.core.peer.addr = peer_addr;
        self.core.peer.addrs = request.peer_addrs.clone();
        self.core.events.push_back(Event::AcceptRequest(request));
        Ok(())
    }

    pub(super) fn server_refuse(&mut self, decision: Decision) {
        let features = self.our_features();
        let Some(link) = &mut self.link else { return };
        link.pending = None;
        link.phase = Phase::ExpectConnect;
        let mut reply = ConnectReply {
            tag: Tag::READY,
            features,
            global_seq: 0,
            connect_seq: 0,
            protocol_version: link.connect.as_ref().map_or(0, |c| c.protocol_version),
            flags: 0,
            authorizer: Vec::new(),
        };
        reply.tag = match decision {
            Decision::RetrySession(n) => {
                reply.connect_seq = n as u32;
                Tag::RETRY_SESSION
            }
            Decision::RetryGlobal(g) => {
                reply.global_seq = g as u32;
                Tag::RETRY_GLOBAL
            }
            Decision::Reset => Tag::RESETSESSION,
            Decision::Wait => Tag::WAIT,
            Decision::New | Decision::Adopt { .. } => return,
        };
        debug!(
            "[{}] v1 connect answered {}",
            self.core.peer.addr, reply.tag
        );
        link.push(&reply);
    }

    pub(super) fn server_accept_new(&mut self, now: Instant) -> Result<(), Error> {
        let Some(request) = self.link.as_mut().and_then(|l| l.pending.take()) else {
            return Err(Error::PeerMisbehaved("internal: no pending accept request"));
        };
        let cookie = random_cookie(&mut *self.core.rng);
        self.core.session = Session::new(cookie, self.core.policy.lossy);
        self.server_open_session(&request, false, now);
        Ok(())
    }

    /// Answer the pending connect: READY, or SEQ with our in_seq and wait for the peer's.
    pub(super) fn server_open_session(
        &mut self,
        request: &AcceptRequest,
        reset: bool,
        now: Instant,
    ) {
        let our_features = self.our_features();
        let lossy = self.core.session.lossy;
        let gseq = self.core.cfg.global_seq.next(0);
        let in_seq = self.core.session.in_seq();
        let Some(link) = &mut self.link else { return };
        link.pending = None;
        let Some(c) = link.connect.take() else {
            return;
        };
        self.core.session.connect_seq = request.attempt.resume.map_or(0, |(_, n)| n) + 1;
        self.core.session.peer_global_seq = request.attempt.global_seq;
        self.core.session.global_seq = gseq;
        link.features = c.features & our_features;
        self.core.peer.features = link.features;
        let seq = link.features & features::RECONNECT_SEQ != 0 && !reset;
        let reply = ConnectReply {
            tag: if seq { Tag::SEQ } else { Tag::READY },
            features: our_features,
            global_seq: gseq as u32,
            connect_seq: self.core.session.connect_seq as u32,
            protocol_version: c.protocol_version,
            flags: if lossy { CONNECT_FLAG_LOSSY } else { 0 },
            authorizer: Vec::new(),
        };
        link.push(&reply);
        link.connect = Some(c);
        // A lossless session is established from here on (Ceph registers and opens
        // it before the SEQ exchange): a client that read our SEQ is open and sends
        // its messages, so a link lost before its in_seq arrives must leave the
        // session in standby for the client to resume. A new session still
        // `Accepting` would be closed instead, and the client's resume answered
        // RESETSESSION, which drops what it had sent. (A lossy one keeps nothing to
        // resume: it stays as it was until the exchange completes.)
        if !lossy {
            self.core.state = State::Open;
        }
        if seq {
            let mut b = Vec::with_capacity(8);
            b.put_le64(in_seq);
            link.out.push_copy(&b);
            link.seq_exchange = true;
            link.phase = Phase::ExpectPeerSeq;
        } else {
            self.server_open(now);
        }
    }

    pub(super) fn server_open(&mut self, now: Instant) {
        let resumed = self
            .link
            .as_ref()
            .and_then(|l| l.connect.as_ref())
            .is_some_and(|c| c.connect_seq > 0);
        if let Some(link) = &mut self.link {
            link.phase = Phase::Open;
            link.last_keepalive_tx = now;
        }
        self.core.opened(Event::Accepted { resumed });
    }
}
