//! A small blocking monitor client over the legacy v1 protocol.
//!
//! [`MonClient`] opens a TCP connection, drives a [`V1SessionConn`] (the sans-IO v1
//! session machine the messenger uses, here with a lossy client policy) with socket
//! reads bounded by read timeouts (no sleeping, no polling), authenticates with
//! `auth none`, learns the cluster fsid from the monitor's MonMap and then runs
//! commands (`{"prefix":"status"}` …), version queries and keepalive round trips.
//!
//! [`V1Stream`] is the reusable part: one socket plus one machine on one link, turned
//! into a blocking "next event before this deadline" call. Tests use it for the server
//! role too ([`V1Stream::serve_as_monitor`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::debug;

use crate::crypto::SystemRng;
use crate::mon::{
    auth_protocol, AuthName, Fsid, MAuth, MAuthReply, MMonCommand, MMonCommandAck, MMonGetMap,
    MMonGetVersion, MMonGetVersionReply, MMonMap, MonMessage, PaxosHeader,
};
use crate::proto::accept::Decision;
use crate::proto::v1::V1SessionConn;
use crate::proto::{Error, Event, Initiator, LinkId, Policy, PolicyTable, ProtoConfig};
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};
use crate::wire::v1::{features, protocol};
use crate::wire::DecodeError;

/// Why a monitor operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum MonError {
    /// The entity name is not `TYPE.ID`.
    InvalidName(String),
    /// The TCP connection could not be made.
    Connect {
        /// The monitor address.
        addr: SocketAddr,
        /// The socket error.
        err: io::Error,
    },
    /// A socket read or write failed.
    Io {
        /// What we were doing.
        what: &'static str,
        /// The socket error.
        err: io::Error,
    },
    /// Nothing arrived in time.
    Timeout {
        /// What we were waiting for.
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The monitor answered FEATURES: it requires features we did not offer.
    FeaturesRequired {
        /// The bits we lack.
        missing: u64,
    },
    /// The monitor answered BADPROTOVER.
    ProtocolVersion {
        /// What we sent.
        ours: u32,
        /// What the monitor speaks.
        theirs: u32,
    },
    /// The monitor refused to authenticate us.
    AuthRefused {
        /// The negative errno.
        result: i32,
        /// The monitor's message.
        message: String,
    },
    /// The connection ended or the protocol failed.
    Connection(CloseReason),
    /// A monitor message did not decode.
    Decode {
        /// The message.
        what: &'static str,
        /// Why.
        err: DecodeError,
    },
}

impl fmt::Display for MonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonError::InvalidName(s) => f.write_str(s),
            MonError::Connect { addr, err } => {
                write!(f, "cannot connect to monitor at v1:{addr}: {err}")
            }
            MonError::Io { what, err } => write!(f, "socket error while {what}: {err}"),
            MonError::Timeout { what, after } => {
                write!(
                    f,
                    "timed out after {:.1} s waiting for {what}",
                    after.as_secs_f64()
                )
            }
            MonError::FeaturesRequired { missing } => {
                write!(
                    f,
                    "monitor requires features 0x{missing:x} that this client does not offer"
                )
            }
            MonError::ProtocolVersion { ours, theirs } => {
                write!(
                    f,
                    "monitor refused protocol version {ours} (BADPROTOVER); it speaks {theirs}"
                )
            }
            MonError::AuthRefused { result, message } => {
                write!(
                    f,
                    "monitor refused auth none (result {result}): {}",
                    errno_text(*result, message)
                )
            }
            MonError::Connection(reason) => match &reason.error {
                Error::MarkedDown => {
                    write!(f, "monitor connection closed ({:?})", reason.initiator)
                }
                e => write!(f, "monitor connection failed: {e}"),
            },
            MonError::Decode { what, err } => {
                write!(f, "cannot decode {what} from the monitor: {err}")
            }
        }
    }
}

fn errno_text(result: i32, message: &str) -> String {
    if !message.is_empty() {
        return message.to_string();
    }
    match -result {
        95 => "operation not supported (no common auth protocol; does the cluster require cephx?)"
            .into(),
        13 => "permission denied".into(),
        1 => "operation not permitted".into(),
        _ => io::Error::from_raw_os_error(-result).to_string(),
    }
}

impl std::error::Error for MonError {}

impl From<CloseReason> for MonError {
    fn from(reason: CloseReason) -> Self {
        match reason.error {
            Error::MissingFeatures { missing } => MonError::FeaturesRequired { missing },
            Error::BadProtocolVersion { ours, theirs } => {
                MonError::ProtocolVersion { ours, theirs }
            }
            _ => MonError::Connection(reason),
        }
    }
}

/// Why and by whom a monitor connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Who ended it.
    pub initiator: Initiator,
    /// Why ([`Error::MarkedDown`] after [`MonClient::close`]).
    pub error: Error,
}

/// The one link of a [`V1Stream`].
const LINK: LinkId = 1;

/// Read buffer size.
const READ_CHUNK: usize = 64 * 1024;

/// One socket driving one v1 session machine on one link, with blocking "next event"
/// calls bounded by a deadline. The stream never reconnects: when the link closes,
/// [`Event::LinkClosed`] is returned once and later calls fail with its reason.
#[derive(Debug)]
pub struct V1Stream {
    stream: TcpStream,
    conn: V1SessionConn,
    link: LinkId,
    /// Bytes read but not yet consumed by the machine.
    inbuf: BytesMut,
    out: Transmit,
    closed: Option<CloseReason>,
}

impl V1Stream {
    /// Wrap a connected socket and a machine: an outgoing session (no link yet) gets its
    /// link started here; an incoming one keeps the link it was made with.
    pub fn new(stream: TcpStream, mut conn: V1SessionConn) -> Self {
        let link = match conn.link_id() {
            Some(l) => l,
            None => {
                conn.start_link(LINK, Instant::now());
                LINK
            }
        };
        V1Stream {
            stream,
            conn,
            link,
            inbuf: BytesMut::new(),
            out: Transmit::new(),
            closed: None,
        }
    }

    /// Connect to the monitor at `addr` (its v1 address) as `opts.name` with a lossy
    /// client session offering `opts.features` and `opts.protocol_version`; the
    /// handshake runs in the first [`next_event`](Self::next_event) calls and must
    /// finish within `opts.timeout`.
    pub fn connect_to_monitor(
        addr: SocketAddr,
        opts: &MonClientOptions,
    ) -> Result<V1Stream, MonError> {
        let auth_name: AuthName = opts.name.parse().map_err(MonError::InvalidName)?;
        let stream = TcpStream::connect_timeout(&addr, opts.timeout)
            .map_err(|err| MonError::Connect { addr, err })?;
        let _ = stream.set_nodelay(true);
        // Like the CLI: a random-ish nonce tells this client instance apart. Our address
        // is blank: we advertise the IP the monitor saw, port 0, and this nonce.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let nonce = std::process::id().rotate_left(16) ^ t.subsec_nanos();
        let name = EntityName::new(EntityType(auth_name.ty as u8), u64::MAX);
        let mut cfg = ProtoConfig::new(
            name,
            AddrVec(vec![EntityAddr::blank(AddrType::LEGACY, nonce)]),
        );
        cfg.features_supported = opts.features;
        cfg.handshake_timeout = opts.timeout;
        cfg.keepalive_interval = None;
        // A monitor client may sit idle between commands.
        cfg.idle_timeout = None;
        cfg.policies = PolicyTable::new(Policy::lossy_client());
        let mut conn = V1SessionConn::outgoing(
            Arc::new(cfg),
            Box::new(SystemRng::new()),
            EntityAddr::new(AddrType::LEGACY, addr, 0),
            EntityType::MON,
            Instant::now(),
        );
        conn.set_protocol_version(opts.protocol_version);
        conn.advertise_learned_addr();
        Ok(V1Stream::new(stream, conn))
    }

    /// Serve one accepted connection the way a monitor serves a client: as `mon.0` on
    /// the socket's local address, Pacific's features, a stateless (lossy) server
    /// policy, every connect a new session; the handshake must finish within
    /// `handshake_timeout`.
    pub fn serve_as_monitor(
        stream: TcpStream,
        handshake_timeout: Duration,
    ) -> Result<V1Stream, MonError> {
        let io = |what, err| MonError::Io { what, err };
        let me = stream
            .local_addr()
            .map_err(|e| io("reading the local address", e))?;
        let peer = stream
            .peer_addr()
            .map_err(|e| io("reading the peer address", e))?;
        let mut cfg = ProtoConfig::new(
            EntityName::new(EntityType::MON, 0),
            AddrVec(vec![EntityAddr::new(AddrType::LEGACY, me, 0)]),
        );
        cfg.features_supported = features::PACIFIC_ALL;
        cfg.handshake_timeout = handshake_timeout;
        cfg.keepalive_interval = None;
        // A monitor client may sit idle between commands.
        cfg.idle_timeout = None;
        cfg.policies = PolicyTable::new(Policy::stateless_server());
        let conn = V1SessionConn::incoming(
            Arc::new(cfg),
            Box::new(SystemRng::new()),
            LINK,
            peer,
            Instant::now(),
        );
        Ok(V1Stream::new(stream, conn))
    }

    /// The machine, e.g. to queue keepalives or change the name.
    pub fn connection(&mut self) -> &mut V1SessionConn {
        &mut self.conn
    }

    /// Queue a message; it goes out once the handshake is done. A message for a closed
    /// session is dropped: the next wait reports why the session closed.
    pub fn send(&mut self, msg: Message) {
        if self.conn.send(msg).is_err() {
            debug!("monc: dropping a message: the session is closed");
        }
    }

    /// Write bytes to the socket as-is, bypassing the machine (fault injection in tests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), MonError> {
        self.stream.write_all(bytes).map_err(|err| MonError::Io {
            what: "writing",
            err,
        })
    }

    /// Send everything the machine has queued (including a closed link's last bytes).
    pub fn flush(&mut self) -> Result<(), MonError> {
        // Bounded: each round writes what the machine had; it runs dry.
        for _ in 0..1024 {
            if !self
                .conn
                .poll_transmit(self.link, Instant::now(), &mut self.out)
            {
                break;
            }
            let bytes = self.out.to_vec();
            self.out.clear();
            if let Err(err) = self.stream.write_all(&bytes) {
                // A peer that already closed: report what the machine knows once it reads EOF.
                debug!("monc: write failed: {err}");
                if self.closed.is_none() {
                    return Err(MonError::Io {
                        what: "writing",
                        err,
                    });
                }
                break;
            }
        }
        Ok(())
    }

    /// The next event, reading from the socket as needed until `deadline`.
    /// [`Event::LinkClosed`] is returned once; later calls fail with the same reason.
    /// An accept request (server role) is answered "new session" here.
    pub fn next_event(&mut self, deadline: Instant, what: &'static str) -> Result<Event, MonError> {
        // Bounded by the deadline: every round reads or times out.
        loop {
            if let Some(ev) = self.next_event_until(deadline, what, |_| false)? {
                return Ok(ev);
            }
        }
    }

    /// Like [`next_event`](Self::next_event), but returns `Ok(None)` as soon as `done`
    /// holds for the machine (e.g. a keepalive was acknowledged), events first.
    pub fn next_event_until(
        &mut self,
        deadline: Instant,
        what: &'static str,
        done: impl Fn(&V1SessionConn) -> bool,
    ) -> Result<Option<Event>, MonError> {
        let started = Instant::now();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            while let Some(ev) = self.conn.poll_event() {
                match ev {
                    // The stream's one link was started at creation; it never reconnects.
                    Event::ReconnectDue => {}
                    Event::AcceptRequest(_) => {
                        let now = Instant::now();
                        self.conn.decide_accept(Decision::New, now);
                        // Bytes that came behind the connect waited for the decision.
                        if !self.inbuf.is_empty() {
                            self.conn.handle_input(self.link, &mut self.inbuf, now);
                        }
                    }
                    Event::LinkClosed {
                        link,
                        error,
                        initiator,
                    } => {
                        self.closed = Some(CloseReason {
                            initiator,
                            error: error.clone(),
                        });
                        self.flush()?;
                        return Ok(Some(Event::LinkClosed {
                            link,
                            error,
                            initiator,
                        }));
                    }
                    ev => {
                        self.flush()?;
                        return Ok(Some(ev));
                    }
                }
            }
            self.flush()?;
            if done(&self.conn) {
                return Ok(None);
            }
            if let Some(reason) = &self.closed {
                return Err(reason.clone().into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MonError::Timeout {
                    what,
                    after: now - started,
                });
            }
            let mut wait = deadline - now;
            if let Some(t) = self.conn.poll_timeout() {
                if t <= now {
                    self.conn.handle_timeout(now);
                    continue;
                }
                wait = wait.min(t - now);
            }
            // A zero read timeout means "block forever" to std: keep it positive.
            let wait = wait.max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(wait))
                .map_err(|err| MonError::Io {
                    what: "setting a timeout",
                    err,
                })?;
            match self.stream.read(&mut buf) {
                Ok(0) => self.peer_gone("connection closed by peer".into()),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.conn
                        .handle_input(self.link, &mut self.inbuf, Instant::now());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.conn.handle_timeout(Instant::now())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    debug!("monc: {e}");
                    self.peer_gone(format!("connection closed by peer: {e}"));
                }
                Err(err) => {
                    return Err(MonError::Io {
                        what: "reading",
                        err,
                    })
                }
            }
        }
    }

    fn peer_gone(&mut self, why: String) {
        self.conn
            .link_failed(self.link, Error::Transport(why), Instant::now());
    }

    /// Shut the socket down (both directions).
    pub fn shutdown(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// What a monitor command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// 0 or a negative errno.
    pub r: i32,
    /// The status string (the monitor's error text on failure).
    pub rs: String,
    /// The command's output.
    pub output: Vec<u8>,
}

/// Options for [`MonClient::connect_with`].
#[derive(Debug, Clone)]
pub struct MonClientOptions {
    /// Entity name, `client.admin` by default.
    pub name: String,
    /// Bound on the connect, the handshake and every later request.
    pub timeout: Duration,
    /// Features we offer (Pacific's full set by default).
    pub features: u64,
    /// Protocol version (15 by default; anything else gets BADPROTOVER).
    pub protocol_version: u32,
}

impl Default for MonClientOptions {
    fn default() -> Self {
        MonClientOptions {
            name: "client.admin".into(),
            timeout: Duration::from_secs(10),
            features: features::PACIFIC_ALL,
            protocol_version: protocol::MONC,
        }
    }
}

/// A connected, authenticated monitor client.
#[derive(Debug)]
pub struct MonClient {
    io: V1Stream,
    timeout: Duration,
    fsid: Fsid,
    global_id: u64,
    features: u64,
    next_tid: u64,
    /// Messages that arrived while we waited for something else.
    stray: VecDeque<Message>,
}

impl MonClient {
    /// Connect to the monitor at `addr` (its v1 address) as `name` (`client.admin`),
    /// authenticate with `auth none` and learn the fsid, all within `timeout`.
    pub fn connect(addr: SocketAddr, name: &str, timeout: Duration) -> Result<MonClient, MonError> {
        MonClient::connect_with(
            addr,
            &MonClientOptions {
                name: name.into(),
                timeout,
                ..Default::default()
            },
        )
    }

    /// [`connect`](Self::connect) with every option.
    pub fn connect_with(addr: SocketAddr, opts: &MonClientOptions) -> Result<MonClient, MonError> {
        let auth_name: AuthName = opts.name.parse().map_err(MonError::InvalidName)?;
        let deadline = Instant::now() + opts.timeout;
        let mut io = V1Stream::connect_to_monitor(addr, opts)?;
        io.send(MAuth::auth_none(auth_name.clone()).to_message());
        let mut client = MonClient {
            io,
            timeout: opts.timeout,
            fsid: Fsid::default(),
            global_id: 0,
            features: 0,
            next_tid: 1,
            stray: VecDeque::new(),
        };
        // Handshake, then MAuthReply.
        let reply: MAuthReply = loop {
            match client
                .io
                .next_event(deadline, "the monitor's handshake and MAuthReply")?
            {
                Event::Connected { .. } => client.features = client.io.conn.peer().features,
                Event::Message(m) if m.ty == MAuthReply::TYPE => break decode(&m, "MAuthReply")?,
                Event::Message(m) => client.stray.push_back(m),
                Event::LinkClosed {
                    error, initiator, ..
                } => return Err(CloseReason { initiator, error }.into()),
                _ => {}
            }
        };
        if reply.result != 0 || reply.protocol != auth_protocol::NONE {
            let result = if reply.result == 0 { -95 } else { reply.result };
            return Err(MonError::AuthRefused {
                result,
                message: reply.result_msg,
            });
        }
        client.global_id = reply.global_id;
        client.io.connection().set_my_name(EntityName::new(
            EntityType(auth_name.ty as u8),
            reply.global_id,
        ));
        // The monitor pushes its map after auth (we sent epoch 0); ask as well, in case.
        client.io.send(MMonGetMap.to_message());
        let map =
            client.wait_message(deadline, "the monitor's MonMap", |m| m.ty == MMonMap::TYPE)?;
        let summary = decode::<MMonMap>(&map, "MMonMap")?
            .summary()
            .map_err(|err| MonError::Decode {
                what: "the MonMap in MMonMap",
                err,
            })?;
        client.fsid = summary.fsid;
        debug!(
            "monc: connected to {addr}, fsid {}, global_id {}",
            client.fsid, client.global_id
        );
        Ok(client)
    }

    /// The cluster fsid from the monitor's MonMap.
    pub fn fsid(&self) -> Fsid {
        self.fsid
    }

    /// The global id the monitor assigned us.
    pub fn global_id(&self) -> u64 {
        self.global_id
    }

    /// The negotiated v1 features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Run a command given as Ceph's command JSON (`{"prefix":"status"}`).
    /// A negative `r` is returned in the reply, not as an error.
    pub fn command(&mut self, cmd_json: &str) -> Result<CommandReply, MonError> {
        let tid = self.take_tid();
        let cmd = MMonCommand {
            paxos: PaxosHeader::default(),
            fsid: self.fsid,
            cmd: vec![cmd_json.to_string()],
        };
        self.io.send(cmd.to_message().with_tid(tid));
        let deadline = Instant::now() + self.timeout;
        let m = self.wait_message(deadline, "the monitor's MMonCommandAck", |m| {
            m.ty == MMonCommandAck::TYPE && m.tid == tid
        })?;
        let ack: MMonCommandAck = decode(&m, "MMonCommandAck")?;
        Ok(CommandReply {
            r: ack.r,
            rs: ack.rs,
            output: ack.output,
        })
    }

    /// The newest and oldest versions of a map (`osdmap`, `monmap`, `mdsmap`).
    pub fn get_version(&mut self, what: &str) -> Result<(u64, u64), MonError> {
        let handle = self.take_tid();
        self.io.send(
            MMonGetVersion {
                handle,
                what: what.to_string(),
            }
            .to_message(),
        );
        let deadline = Instant::now() + self.timeout;
        let m = self.wait_message(deadline, "the monitor's MMonGetVersionReply", |m| {
            m.ty == MMonGetVersionReply::TYPE
                && MMonGetVersionReply::decode(m).is_ok_and(|r| r.handle == handle)
        })?;
        let r: MMonGetVersionReply = decode(&m, "MMonGetVersionReply")?;
        Ok((r.version, r.oldest_version))
    }

    /// Send a KEEPALIVE2 and wait for its echo; returns the round-trip time.
    pub fn keepalive_round_trip(&mut self) -> Result<Duration, MonError> {
        let start = Instant::now();
        self.io.connection().send_keepalive();
        let deadline = start + self.timeout;
        let acked = |c: &V1SessionConn| c.last_keepalive_ack().is_some_and(|t| t >= start);
        loop {
            match self
                .io
                .next_event_until(deadline, "the monitor's KEEPALIVE2_ACK", acked)?
            {
                None => return Ok(start.elapsed()),
                Some(Event::Message(m)) => self.absorb(m),
                Some(Event::LinkClosed {
                    error, initiator, ..
                }) => return Err(CloseReason { initiator, error }.into()),
                Some(_) => {}
            }
        }
    }

    /// Wait up to the client's timeout for the connection to end (after a fault was
    /// provoked); returns why it ended.
    pub fn wait_closed(&mut self) -> Result<CloseReason, MonError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.io.next_event(deadline, "the connection to close") {
                Ok(Event::LinkClosed {
                    error, initiator, ..
                }) => return Ok(CloseReason { initiator, error }),
                Ok(Event::Message(m)) => self.absorb(m),
                Ok(_) => {}
                Err(MonError::Connection(reason)) => return Ok(reason),
                Err(e) => return Err(e),
            }
        }
    }

    /// The underlying stream (fault injection in tests, raw frames).
    pub fn stream(&mut self) -> &mut V1Stream {
        &mut self.io
    }

    /// Close the connection (sends CLOSE).
    pub fn close(mut self) {
        self.io.connection().mark_down(Instant::now());
        let _ = self.io.flush();
        self.io.shutdown();
    }

    fn take_tid(&mut self) -> u64 {
        let t = self.next_tid;
        self.next_tid += 1;
        t
    }

    fn absorb(&mut self, m: Message) {
        // Keep the fsid current if the monitor pushes a new map; keep the rest briefly.
        if m.ty == MMonMap::TYPE {
            if let Ok(s) = MMonMap::decode(&m).and_then(|mm| mm.summary()) {
                self.fsid = s.fsid;
            }
        }
        const MAX_STRAY: usize = 64;
        if self.stray.len() >= MAX_STRAY {
            self.stray.pop_front();
        }
        self.stray.push_back(m);
    }

    fn wait_message(
        &mut self,
        deadline: Instant,
        what: &'static str,
        want: impl Fn(&Message) -> bool,
    ) -> Result<Message, MonError> {
        if let Some(i) = self.stray.iter().position(&want) {
            if let Some(m) = self.stray.remove(i) {
                return Ok(m);
            }
        }
        loop {
            match self.io.next_event(deadline, what)? {
                Event::Message(m) if want(&m) => return Ok(m),
                Event::Message(m) => self.absorb(m),
                Event::LinkClosed {
                    error, initiator, ..
                } => return Err(CloseReason { initiator, error }.into()),
                _ => {}
            }
        }
    }
}

fn decode<T: MonMessage>(m: &Message, what: &'static str) -> Result<T, MonError> {
    T::decode(m).map_err(|err| MonError::Decode { what, err })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::mon::{MMonCommand, MMonMap};
    use crate::wire::WriteLe;

    /// A scripted monitor: our own server machine answering with `answer`, for one client.
    fn fake_mon(answer: impl Fn(&Message) -> Vec<Message> + Send + 'static) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            let Ok((stream, _)) = l.accept() else {
                return;
            };
            let Ok(mut s) = V1Stream::serve_as_monitor(stream, Duration::from_secs(10)) else {
                return;
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            // Bounded: at most 50 events or the deadline.
            for _ in 0..50 {
                match s.next_event(deadline, "client") {
                    Ok(Event::Message(m)) => {
                        for reply in answer(&m) {
                            s.send(reply);
                        }
                        let _ = s.flush();
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        addr
    }

    fn monmap(fsid: Fsid) -> Message {
        let mut body = fsid.0.to_vec();
        body.put_le32(1);
        let mut mm = vec![9, 6];
        mm.put_le32(body.len() as u32);
        mm.extend_from_slice(&body);
        MMonMap { monmap: mm }.to_message()
    }

    #[test]
    fn auth_refusal_is_a_typed_readable_error() {
        let addr = fake_mon(|m| {
            assert_eq!(m.ty, MAuth::TYPE);
            let r = MAuthReply {
                protocol: 0,
                result: -95,
                global_id: 0,
                result_bl: vec![],
                result_msg: String::new(),
            };
            vec![r.to_message()]
        });
        let e =
            MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect_err("refused");
        assert!(
            matches!(e, MonError::AuthRefused { result: -95, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("monitor refused auth none (result -95): "),
            "{e}"
        );
    }

    #[test]
    fn command_round_trip_against_a_scripted_monitor() {
        let fsid = Fsid([0x42; 16]);
        let addr = fake_mon(move |m| match m.ty {
            t if t == MAuth::TYPE => {
                let r = MAuthReply {
                    protocol: 1,
                    result: 0,
                    global_id: 77,
                    result_bl: vec![],
                    result_msg: String::new(),
                };
                vec![r.to_message(), monmap(fsid)]
            }
            t if t == MMonCommand::TYPE => {
                let c = MMonCommand::decode(m).expect("command");
                let ok = c.fsid == fsid;
                let ack = MMonCommandAck {
                    paxos: PaxosHeader::default(),
                    r: if ok { 0 } else { -1 },
                    rs: if ok {
                        String::new()
                    } else {
                        "wrong fsid".into()
                    },
                    cmd: c.cmd,
                    output: b"HEALTH_OK".to_vec(),
                };
                vec![ack.to_message().with_tid(m.tid)]
            }
            _ => vec![],
        });
        let mut c =
            MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect("connect");
        assert_eq!((c.fsid(), c.global_id()), (fsid, 77));
        let r = c.command(r#"{"prefix":"health"}"#).expect("reply");
        assert_eq!((r.r, r.output.as_slice()), (0, &b"HEALTH_OK"[..]));
        c.keepalive_round_trip().expect("keepalive");
    }

    #[test]
    fn a_wrong_protocol_version_is_a_typed_badprotover_error() {
        let addr = fake_mon(|_| vec![]);
        let opts = MonClientOptions {
            protocol_version: 24,
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        let e = MonClient::connect_with(addr, &opts).expect_err("refused");
        assert!(
            matches!(
                e,
                MonError::ProtocolVersion {
                    ours: 24,
                    theirs: 15
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("BADPROTOVER"), "{e}");
    }

    #[test]
    fn a_silent_monitor_times_out_the_handshake() {
        // Accepts and never answers: the handshake timeout (the options' timeout) fires.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let holder = std::thread::spawn(move || l.accept().map(|(s, _)| s));
        let opts = MonClientOptions {
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let t = Instant::now();
        let e = MonClient::connect_with(addr, &opts).expect_err("times out");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(
                &e,
                MonError::Timeout { .. }
                    | MonError::Connection(CloseReason {
                        error: Error::HandshakeTimeout,
                        initiator: Initiator::Local,
                    })
            ),
            "{e}"
        );
        drop(holder.join());
    }

    #[test]
    fn close_sends_close_and_a_dropped_monitor_is_reported() {
        let fsid = Fsid([7; 16]);
        let auth_ok = move |m: &Message| {
            if m.ty != MAuth::TYPE {
                return vec![];
            }
            let r = MAuthReply {
                protocol: 1,
                result: 0,
                global_id: 5,
                result_bl: vec![],
                result_msg: String::new(),
            };
            vec![r.to_message(), monmap(fsid)]
        };
        // A monitor that authenticates us, then hangs up if `hang_up`, else waits for
        // the link to close and returns how.
        let serve = move |hang_up: bool| {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = l.local_addr().expect("addr");
            let mon = std::thread::spawn(move || {
                let (stream, _) = l.accept().expect("accept");
                let mut s =
                    V1Stream::serve_as_monitor(stream, Duration::from_secs(10)).expect("serve");
                let deadline = Instant::now() + Duration::from_secs(10);
                for _ in 0..50 {
                    match s.next_event(deadline, "client") {
                        Ok(Event::Message(m)) => {
                            for reply in auth_ok(&m) {
                                s.send(reply);
                            }
                            s.flush().expect("flush");
                            if hang_up && m.ty == MMonGetMap::TYPE {
                                s.shutdown();
                                return None;
                            }
                        }
                        Ok(Event::LinkClosed {
                            error, initiator, ..
                        }) => return Some((error, initiator)),
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
                None
            });
            (addr, mon)
        };
        // Our CLOSE ends the monitor side's link as initiated by the peer.
        let (addr, mon) = serve(false);
        let c = MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect("connect");
        assert_eq!((c.fsid(), c.global_id()), (fsid, 5));
        c.close();
        let (error, initiator) = mon.join().expect("mon thread").expect("closed");
        assert_eq!(initiator, Initiator::Peer);
        assert!(
            matches!(&error, Error::Transport(m) if m.contains("CLOSE")),
            "{error}"
        );
        // A monitor that goes away: the client reads EOF and says so.
        let (addr, mon) = serve(true);
        let mut c =
            MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect("connect");
        assert!(mon.join().expect("mon thread").is_none());
        let reason = c.wait_closed().expect("closed");
        assert_eq!(reason.initiator, Initiator::Peer);
        assert!(
            matches!(&reason.error, Error::Transport(m) if m.contains("closed by peer")),
            "{reason:?}"
        );
        let e = c.keepalive_round_trip().expect_err("closed");
        assert!(e.to_string().contains("closed by peer"), "{e}");
    }

    #[test]
    fn bad_names_and_refused_connections_are_clear() {
        let e = MonClient::connect(
            "127.0.0.1:1".parse().unwrap(),
            "admin",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected TYPE.ID"), "{e}");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let e = MonClient::connect(addr, "client.admin", Duration::from_secs(1)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot connect to monitor at v1:127.0.0.1:"),
            "{e}"
        );
    }
}
