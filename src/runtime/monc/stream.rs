//! [`V1Stream`]: one socket driving one v1 session machine on one link.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::debug;

use crate::crypto::SystemRng;
use crate::mon::AuthName;
use crate::proto::accept::Decision;
use crate::proto::v1::V1SessionConn;
use crate::proto::{Error, Event, LinkId, Policy, PolicyTable, ProtoConfig};
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};
use crate::wire::v1::features;

use super::{CloseReason, MonClientOptions, MonError};

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
