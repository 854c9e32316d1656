//! [`V1Connection`]: one v1 TCP connection as a sans-IO machine, for both roles (the
//! monitor client and the test server the real `ceph` CLI talks to). The messenger's
//! sessions use [`super::V1SessionConn`] instead, which outlives its connections.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpectServerHello,
    ExpectConnectReply,
    ExpectSeq,
    ExpectBanner,
    ExpectClientAddr,
    ExpectConnect,
    ExpectPeerSeq,
    Open,
    Closed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::ExpectServerHello => "waiting for the server banner and addresses",
            Phase::ExpectConnectReply => "waiting for connect_reply",
            Phase::ExpectSeq => "waiting for the server's in_seq after SEQ",
            Phase::ExpectBanner => "waiting for the client banner",
            Phase::ExpectClientAddr => "waiting for the client address",
            Phase::ExpectConnect => "waiting for connect",
            Phase::ExpectPeerSeq => "waiting for the client's in_seq after SEQ",
            Phase::Open => "open",
            Phase::Closed => "closed",
        }
    }
}

/// One v1 connection, either role.
#[derive(Debug)]
pub struct V1Connection {
    role: Role,
    cfg: V1Config,
    phase: Phase,
    session: V1Session,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    events: VecDeque<V1Event>,
    queue: VecDeque<Message>,
    epoch: Instant,
    handshake_deadline: Instant,
    next_keepalive: Option<Instant>,
    keepalive_pending: bool,
    negotiated: u64,
    lossy: bool,
    peer_addr: Option<EntityAddr>,
    my_addr_seen: Option<EntityAddr>,
    socket_peer: Option<SocketAddr>,
    connect: Option<ConnectMsg>,
    reply: Option<ConnectReply>,
    open_kind: Option<OpenKind>,
    badauth_retried: bool,
    existing: Option<ExistingSession>,
    in_seq_acked: u64,
    last_now: Instant,
}

impl V1Connection {
    /// A client connection; the banner is queued at once (facts: the client does not wait).
    pub fn client(cfg: V1Config, session: V1Session, now: Instant) -> Self {
        let mut c = V1Connection::new(Role::Client, cfg, session, now, Phase::ExpectServerHello);
        c.outbuf.extend_from_slice(BANNER);
        c
    }

    /// A server connection for a socket accepted from `peer`; our banner and the two
    /// addresses are queued at once.
    pub fn server(cfg: V1Config, session: V1Session, peer: SocketAddr, now: Instant) -> Self {
        let mut c = V1Connection::new(Role::Server, cfg, session, now, Phase::ExpectBanner);
        c.socket_peer = Some(peer);
        let seen = EntityAddr::new(AddrType::LEGACY, peer, 0);
        let mine = c.cfg.my_addr;
        encode_server_hello(&mine, &seen, &mut c.outbuf);
        c
    }

    fn new(role: Role, cfg: V1Config, session: V1Session, now: Instant, phase: Phase) -> Self {
        let handshake_deadline = now + cfg.handshake_timeout;
        V1Connection {
            role,
            cfg,
            phase,
            session,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            events: VecDeque::new(),
            queue: VecDeque::new(),
            epoch: now,
            handshake_deadline,
            next_keepalive: None,
            keepalive_pending: false,
            negotiated: 0,
            lossy: false,
            peer_addr: None,
            my_addr_seen: None,
            socket_peer: None,
            connect: None,
            reply: None,
            open_kind: None,
            badauth_retried: false,
            existing: None,
            in_seq_acked: 0,
            last_now: now,
        }
    }

    /// Server: the existing session for this peer, as the decision table should see it.
    /// Set it before the connect message arrives (e.g. on [`V1Event::Refused`] or right
    /// after construction); `None` (the default) means no existing session.
    pub fn set_existing_session(&mut self, existing: Option<ExistingSession>) {
        self.existing = existing;
    }

    /// Change the name put in `header.src` of messages sent from now on (a client learns
    /// its number from the monitor's MAuthReply).
    pub fn set_my_name(&mut self, name: EntityName) {
        self.cfg.my_name = name;
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the handshake is done and until the connection closes.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Negotiated features (0 before the handshake finishes).
    pub fn features(&self) -> u64 {
        self.negotiated
    }

    /// The session state (sequence numbers, replay queue).
    pub fn session(&self) -> &V1Session {
        &self.session
    }

    /// Take the session out (e.g. to hand it to the next connection).
    pub fn into_session(self) -> V1Session {
        self.session
    }

    /// Bytes arrived from the peer.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_now = now;
        self.inbuf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        while self.phase != Phase::Closed {
            match self.step(&buf[pos..], now) {
                Ok(0) => break,
                Ok(n) => pos += n,
                Err(e) => {
                    self.fail(Initiator::Local, e);
                    break;
                }
            }
        }
        self.inbuf = buf;
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        self.flush_acks();
    }

    /// The peer closed its end of the stream.
    pub fn handle_eof(&mut self) {
        if self.phase != Phase::Closed {
            let phase = self.phase.name();
            self.fail(Initiator::Peer, V1Error::UnexpectedEof { phase });
        }
    }

    /// Append bytes to send to `out`; false if there was nothing.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.outbuf.is_empty() {
            return false;
        }
        out.append(&mut self.outbuf);
        true
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<V1Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Open => self.next_keepalive,
            _ => Some(self.handshake_deadline),
        }
    }

    /// Time passed; act on due deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        match self.phase {
            Phase::Closed => {}
            Phase::Open => {
                if let (Some(at), Some(every)) = (self.next_keepalive, self.cfg.keepalive_interval)
                {
                    if now >= at {
                        self.send_keepalive(now);
                        self.next_keepalive = Some(now + every);
                    }
                }
            }
            phase => {
                if now >= self.handshake_deadline {
                    self.fail(
                        Initiator::Local,
                        V1Error::HandshakeTimeout {
                            phase: phase.name(),
                        },
                    );
                }
            }
        }
    }

    /// Queue a message; it is sent once the connection is open.
    pub fn send(&mut self, msg: Message) {
        match self.phase {
            Phase::Closed => debug!(
                "v1: dropping message type 0x{:x}: connection closed",
                msg.ty
            ),
            Phase::Open => self.write_message(msg),
            _ => self.queue.push_back(msg),
        }
    }

    /// Send a keepalive (KEEPALIVE2 with a stamp if negotiated, else KEEPALIVE), now or
    /// as soon as the connection opens. The stamp is the time since this connection was made.
    pub fn send_keepalive(&mut self, now: Instant) {
        if self.phase != Phase::Open {
            self.keepalive_pending = true;
            return;
        }
        let frame = if self.negotiated & features::MSGR_KEEPALIVE2 != 0 {
            Frame::Keepalive2(Timespec::from_duration(
                now.saturating_duration_since(self.epoch),
            ))
        } else {
            Frame::Keepalive
        };
        trace!("v1 {:?}: send {:?}", self.role, frame.tag());
        frame.encode(&mut self.outbuf);
    }

    /// Close: send CLOSE if open, and report [`V1Event::Closed`] by the user.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::Open {
            Frame::Close.encode(&mut self.outbuf);
        }
        self.phase = Phase::Closed;
        self.events.push_back(V1Event::Closed(CloseReason {
            initiator: Initiator::User,
            error: None,
        }));
    }

    fn fail(&mut self, initiator: Initiator, error: V1Error) {
        debug!("v1 {:?}: closing ({:?}): {error}", self.role, initiator);
        self.phase = Phase::Closed;
        self.events.push_back(V1Event::Closed(CloseReason {
            initiator,
            error: Some(error),
        }));
    }

    /// Try to consume one unit from `buf`: Ok(0) = need more bytes.
    fn step(&mut self, buf: &[u8], now: Instant) -> Result<usize, V1Error> {
        let phase = self.phase;
        let mut r = Reader::new(buf);
        let res = match phase {
            Phase::ExpectServerHello => self.on_server_hello(&mut r),
            Phase::ExpectConnectReply => self.on_connect_reply(&mut r),
            Phase::ExpectSeq => self.on_server_seq(&mut r, now),
            Phase::ExpectBanner => read_banner(&mut r).map_err(Into::into).map(|()| {
                self.phase = Phase::ExpectClientAddr;
            }),
            Phase::ExpectClientAddr => self.on_client_addr(&mut r),
            Phase::ExpectConnect => self.on_connect(&mut r, now),
            Phase::ExpectPeerSeq => self.on_peer_seq(&mut r, now),
            Phase::Open => return self.on_frame(buf),
            Phase::Closed => return Ok(0),
        };
        match res {
            Ok(()) => Ok(r.position()),
            Err(StepError::Decode(e)) if e.is_truncated() => Ok(0),
            Err(StepError::Decode(err)) => Err(V1Error::Decode {
                phase: phase.name(),
                err,
            }),
            Err(StepError::Proto(e)) => Err(e),
        }
    }

    fn on_server_hello(&mut self, r: &mut Reader<'_>) -> Result<(), StepError> {
        let (server, seen) = read_server_hello(r)?;
        self.peer_addr = Some(server);
        self.my_addr_seen = Some(seen);
        // Our address: as configured, or (blank) the IP the server saw with port 0.
        let mut mine = self.cfg.my_addr;
        if mine.is_blank() {
            if let Some(sa) = seen.addr {
                mine.addr = Some(SocketAddr::new(sa.ip(), 0));
            }
        }
        mine.encode_legacy(&mut self.outbuf);
        self.send_connect();
        self.phase = Phase::ExpectConnectReply;
        Ok(())
    }

    fn send_connect(&mut self) {
        if self.session.global_seq == 0 {
            self.session.global_seq = 1;
        }
        let c = ConnectMsg {
            features: self.cfg.features,
            host_type: self.cfg.my_name.ty.0.into(),
            global_seq: self.session.global_seq,
            connect_seq: self.session.connect_seq,
            protocol_version: self.cfg.protocol_version,
            authorizer_protocol: self.cfg.authorizer.0,
            flags: if self.cfg.lossy {
                CONNECT_FLAG_LOSSY
            } else {
                0
            },
            authorizer: self.cfg.authorizer.1.clone(),
        };
        trace!(
            "v1 client: send connect gseq {} cseq {} proto {}",
            c.global_seq,
            c.connect_seq,
            c.protocol_version
        );
        c.encode(&mut self.outbuf);
    }

    fn on_connect_reply(&mut self, r: &mut Reader<'_>) -> Result<(), StepError> {
        let reply = ConnectReply::read(r)?;
        trace!(
            "v1 client: got connect_reply {} gseq {} cseq {}",
            reply.tag,
            reply.global_seq,
            reply.connect_seq
        );
        match reply.tag {
            Tag::READY => self.client_open(reply, false),
            Tag::SEQ => {
                self.reply = Some(reply);
                self.phase = Phase::ExpectSeq;
            }
            Tag::FEATURES => {
                let missing = reply.features & !self.cfg.features;
                return Err(V1Error::MissingFeatures {
                    missing,
                    required: reply.features,
                }
                .into());
            }
            Tag::BADPROTOVER => {
                let e = V1Error::BadProtocolVersion {
                    ours: self.cfg.protocol_version,
                    theirs: reply.protocol_version,
                };
                return Err(e.into());
            }
            Tag::BADAUTHORIZER => {
                if self.badauth_retried {
                    return Err(V1Error::BadAuthorizer.into());
                }
                self.badauth_retried = true;
                self.send_connect();
            }
            Tag::RESETSESSION => {
                self.session.reset();
                self.queue.clear();
                self.events.push_back(V1Event::SessionReset);
                self.send_connect();
            }
            Tag::RETRY_SESSION => {
                self.session.connect_seq = reply.connect_seq;
                self.send_connect();
            }
            Tag::RETRY_GLOBAL => {
                self.session.bump_global_seq(reply.global_seq);
                self.send_connect();
            }
            Tag::WAIT => return Err(V1Error::Wait.into()),
            tag => {
                return Err(V1Error::UnexpectedTag {
                    tag,
                    phase: Phase::ExpectConnectReply.name(),
                }
                .into())
            }
        }
        Ok(())
    }

    fn on_server_seq(&mut self, r: &mut Reader<'_>, _now: Instant) -> Result<(), StepError> {
        let acked = r.le64("SEQ in_seq")?;
        self.session.ack(acked);
        let in_seq = self.session.in_seq;
        self.outbuf.put_le64(in_seq);
        let reply = self
            .reply
            .take()
            .ok_or(StepError::Proto(V1Error::UnexpectedTag {
                tag: Tag::SEQ,
                phase: Phase::ExpectSeq.name(),
            }))?;
        self.client_open(reply, true);
        Ok(())
    }

    fn client_open(&mut self, reply: ConnectReply, seq_exchange: bool) {
        let missing = self.cfg.required_features & !reply.features;
        if missing != 0 {
            self.fail(Initiator::Local, V1Error::PeerLacksFeatures { missing });
            return;
        }
        self.negotiated = reply.features & self.cfg.features;
        self.lossy = reply.flags & CONNECT_FLAG_LOSSY != 0;
        self.session.connect_seq = self.session.connect_seq.wrapping_add(1);
        let peer_addr = self
            .peer_addr
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        let my_addr_seen = self
            .my_addr_seen
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        self.events.push_back(V1Event::Connected {
            peer_addr,
            my_addr_seen,
            peer_type: None,
            features: self.negotiated,
            lossy: self.lossy,
            connect_seq: self.session.connect_seq,
            open: None,
            seq_exchange,
        });
        self.go_open();
    }

    fn on_client_addr(&mut self, r: &mut Reader<'_>) -> Result<(), StepError> {
        let mut a = EntityAddr::read_legacy(r)?;
        // A blank IP is filled in from the socket (facts §5.1); the port stays the client's.
        if a.is_blank() {
            if let Some(sp) = self.socket_peer {
                let port = a.addr.map(|x| x.port()).unwrap_or(0);
                a.addr = Some(SocketAddr::new(sp.ip(), port));
            }
        }
        self.peer_addr = Some(a);
        self.phase = Phase::ExpectConnect;
        Ok(())
    }

    fn on_connect(&mut self, r: &mut Reader<'_>, _now: Instant) -> Result<(), StepError> {
        let c = ConnectMsg::read(r)?;
        trace!(
            "v1 server: got connect gseq {} cseq {} proto {}",
            c.global_seq,
            c.connect_seq,
            c.protocol_version
        );
        let peer_addr = self
            .peer_addr
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        let policy = AcceptPolicy {
            protocol_version: self.cfg.protocol_version,
            features_required: self.cfg.required_features,
            cephx_require_signatures: self.cfg.cephx_require_signatures,
            resetcheck: self.cfg.resetcheck,
            server: self.cfg.server_policy,
            my_addr: self.cfg.my_addr,
        };
        // An empty or "none" authorizer is accepted (v1 clients authenticate via MAuth);
        // we cannot verify any other kind, so it is refused.
        let authorizer_ok = c.authorizer_protocol == 0 || c.authorizer.is_empty();
        // A lossy server policy keeps no sessions: every connect opens a new one.
        let existing = if self.cfg.lossy { None } else { self.existing };
        let acc = decide_accept(
            &Incoming {
                connect: &c,
                peer_addr: &peer_addr,
                authorizer_ok,
            },
            &policy,
            existing.as_ref(),
        );
        debug!(
            "v1 server: connect from {peer_addr} -> row {} {:?}",
            acc.row, acc.decision
        );
        let mut reply = ConnectReply {
            tag: Tag::READY,
            features: self.cfg.features,
            global_seq: 0,
            connect_seq: 0,
            protocol_version: self.cfg.protocol_version,
            flags: 0,
            authorizer: Vec::new(),
        };
        let refuse = |tag| (tag, true);
        let (tag, refused) = match acc.decision {
            AcceptDecision::BadProtoVer => refuse(Tag::BADPROTOVER),
            AcceptDecision::Features { required } => {
                reply.features = (c.features & self.cfg.features) | required;
                refuse(Tag::FEATURES)
            }
            AcceptDecision::BadAuthorizer => refuse(Tag::BADAUTHORIZER),
            AcceptDecision::RetryGlobal { global_seq } => {
                reply.global_seq = global_seq;
                refuse(Tag::RETRY_GLOBAL)
            }
            AcceptDecision::RetrySession { connect_seq } => {
                reply.connect_seq = connect_seq;
                refuse(Tag::RETRY_SESSION)
            }
            AcceptDecision::Wait => refuse(Tag::WAIT),
            AcceptDecision::ResetSession => refuse(Tag::RESETSESSION),
            AcceptDecision::Open(kind) => {
                let peer_reset = matches!(
                    kind,
                    OpenKind::Replace {
                        peer_reset: true,
                        ..
                    }
                );
                let reset = peer_reset
                    || matches!(
                        kind,
                        OpenKind::New
                            | OpenKind::Replace {
                                reset_existing: true,
                                ..
                            }
                    );
                if reset {
                    let gseq = self.session.global_seq;
                    self.session.reset();
                    self.session.global_seq = gseq;
                }
                self.session.connect_seq = c.connect_seq.wrapping_add(1);
                self.session.peer_global_seq = c.global_seq;
                self.session.global_seq = self.session.global_seq.wrapping_add(1);
                self.negotiated = c.features & self.cfg.features;
                self.lossy = self.cfg.lossy;
                reply.global_seq = self.session.global_seq;
                reply.connect_seq = self.session.connect_seq;
                reply.flags = if self.lossy { CONNECT_FLAG_LOSSY } else { 0 };
                self.open_kind = Some(kind);
                let seq = self.negotiated & features::RECONNECT_SEQ != 0 && !peer_reset;
                (if seq { Tag::SEQ } else { Tag::READY }, false)
            }
        };
        reply.tag = tag;
        if refused {
            reply.flags = 0;
            reply.encode(&mut self.outbuf);
            self.events
                .push_back(V1Event::Refused { tag, row: acc.row });
            return Ok(());
        }
        reply.encode(&mut self.outbuf);
        self.connect = Some(c);
        if tag == Tag::SEQ {
            self.outbuf.put_le64(self.session.in_seq);
            self.phase = Phase::ExpectPeerSeq;
        } else {
            self.server_open(false);
        }
        Ok(())
    }

    fn on_peer_seq(&mut self, r: &mut Reader<'_>, _now: Instant) -> Result<(), StepError> {
        let acked = r.le64("SEQ newly_acked_seq")?;
        self.session.ack(acked);
        self.server_open(true);
        Ok(())
    }

    fn server_open(&mut self, seq_exchange: bool) {
        let peer_type = self.connect.as_ref().map(|c| EntityType(c.host_type as u8));
        self.events.push_back(V1Event::Connected {
            peer_addr: self
                .peer_addr
                .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0)),
            my_addr_seen: self.cfg.my_addr,
            peer_type,
            features: self.negotiated,
            lossy: self.lossy,
            connect_seq: self.session.connect_seq,
            open: self.open_kind,
            seq_exchange,
        });
        self.go_open();
    }

    fn go_open(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Open;
        self.in_seq_acked = self.session.in_seq;
        // Replay what the peer has not acknowledged, with the original sequence numbers.
        let replay: Vec<(u64, Message)> = self.session.sent.iter().cloned().collect();
        for (seq, m) in replay {
            self.encode_message(&m, seq);
        }
        if self.keepalive_pending {
            self.keepalive_pending = false;
            self.send_keepalive(self.last_now);
        }
        while let Some(m) = self.queue.pop_front() {
            self.write_message(m);
        }
        if let Some(every) = self.cfg.keepalive_interval {
            self.next_keepalive = Some(self.last_now + every);
        }
    }

    pub(super) fn with_sig(&self) -> bool {
        self.negotiated & features::MSG_AUTH != 0
    }

    fn write_message(&mut self, m: Message) {
        let seq = self.session.next_out_seq();
        self.encode_message(&m, seq);
        if !self.lossy {
            self.session.sent.push_back((seq, m));
        }
    }

    fn encode_message(&mut self, m: &Message, seq: u64) {
        let raw = RawMsg::from_message(m, seq, self.cfg.my_name, self.with_sig());
        trace!("v1 {:?}: send msg seq {seq} type 0x{:x}", self.role, m.ty);
        Frame::Msg(raw).encode(&mut self.outbuf);
    }

    fn on_frame(&mut self, buf: &[u8]) -> Result<usize, V1Error> {
        let parsed = Frame::parse(buf, self.with_sig(), &self.cfg.limits).map_err(|err| {
            V1Error::Decode {
                phase: Phase::Open.name(),
                err,
            }
        })?;
        let Some((frame, used)) = parsed else {
            return Ok(0);
        };
        match frame {
            Frame::Msg(raw) => self.on_message(raw)?,
            Frame::Ack(seq) => self.session.ack(seq),
            Frame::Keepalive => trace!("v1: keepalive"),
            Frame::Keepalive2(ts) => Frame::Keepalive2Ack(ts).encode(&mut self.outbuf),
            Frame::Keepalive2Ack(stamp) => self.events.push_back(V1Event::KeepaliveAck { stamp }),
            Frame::Close => {
                self.fail(Initiator::Peer, V1Error::PeerClosed);
            }
        }
        Ok(used)
    }

    fn on_message(&mut self, raw: RawMsg) -> Result<(), V1Error> {
        // A bad crc anywhere is a fault: the connection is dropped (facts §5.8).
        raw.verify().map_err(V1Error::Crc)?;
        if raw.footer.flags & footer_flags::COMPLETE == 0 {
            debug!("v1: dropping aborted message seq {}", raw.header.seq);
            return Ok(());
        }
        let seq = raw.header.seq;
        if seq <= self.session.in_seq {
            debug!(
                "v1: dropping old message seq {seq} (in_seq {})",
                self.session.in_seq
            );
            return Ok(());
        }
        if seq > self.session.in_seq + 1 {
            debug!(
                "v1: message seq {seq} skips from in_seq {}",
                self.session.in_seq
            );
        }
        self.session.in_seq = seq;
        self.events.push_back(V1Event::Message(raw.to_message()));
        Ok(())
    }

    fn flush_acks(&mut self) {
        if self.phase == Phase::Open && !self.lossy && self.session.in_seq > self.in_seq_acked {
            self.in_seq_acked = self.session.in_seq;
            Frame::Ack(self.in_seq_acked).encode(&mut self.outbuf);
        }
    }
}

enum StepError {
    Decode(DecodeError),
    Proto(V1Error),
}

impl From<DecodeError> for StepError {
    fn from(e: DecodeError) -> Self {
        StepError::Decode(e)
    }
}

impl From<V1Error> for StepError {
    fn from(e: V1Error) -> Self {
        StepError::Proto(e)
    }
}
