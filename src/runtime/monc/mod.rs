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
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;

use crate::mon::{
    auth_protocol, AuthName, Fsid, MAuth, MAuthReply, MMonCommand, MMonCommandAck, MMonGetMap,
    MMonGetVersion, MMonGetVersionReply, MMonMap, MonMessage, PaxosHeader,
};
use crate::proto::v1::V1SessionConn;
use crate::proto::{Error, Event, Initiator};
use crate::wire::message::Message;
use crate::wire::types::{EntityName, EntityType};
use crate::wire::v1::{features, protocol};
use crate::wire::DecodeError;

mod stream;
pub use stream::V1Stream;

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
                Event::Connected { .. } => client.features = client.io.connection().peer().features,
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
mod tests;
