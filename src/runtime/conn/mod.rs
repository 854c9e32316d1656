//! One session's threads: a writer thread for the session's whole life (it also
//! connects and reconnects, as SimpleMessenger's writer did), and a reader thread per
//! TCP connection ("link").
//!
//! Lock discipline: a thread locks the session, steps the state machine, takes its
//! outputs (bytes, events), unlocks, and only then writes to a socket or calls the
//! dispatcher. No lock is held across a socket call or a callback. Lock order when
//! two are needed: session table, then a session.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | the shared session (`ConnShared`), the writer's wake-up, a link's socket halves |
//! | `handle.rs` | [`ConnectionRef`], the application's handle (send, mark_down, queries) |
//! | `events.rs` | acting on state-machine events in dispatch order; the stats gauges |
//! | `inline.rs` | writes by threads other than the writer (sparse sends) |
//! | `reader.rs` | the reader thread of one link, and the accept decision for incoming handshakes |
//! | `writer.rs` | the session's writer thread: connect when due, write, run the timers |

mod events;
mod handle;
mod inline;
mod reader;
mod writer;

pub(crate) use events::{abandon, conn_ref, drain, handle_events, session_ended, sync_gauge};
pub use handle::ConnectionRef;
use reader::{fail, spawn_reader};
pub(crate) use writer::writer_loop;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;
use parking_lot::{Condvar, Mutex};

use crate::proto::{AnyConnection as ProtoConn, LinkId};
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::EntityAddr;

use super::admission::Slot;
use super::messenger::Inner;
use super::stats::ConnState as GaugeState;
use super::transport::{Shutdown, ShutdownHandle, Transport, WriteHalf};
/// The writing side of one link plus a way to shut the socket from any thread.
#[derive(Debug)]
pub(crate) struct LinkIo {
    write: Mutex<LinkWriter>,
    shutdown: ShutdownHandle,
    /// Set once the socket buffers were bounded for chunked transfers.
    chunk_bounded: AtomicBool,
}

/// The socket's write half and bytes already taken from the state machine that a
/// non-blocking write could not finish; they go out before anything else.
#[derive(Debug)]
struct LinkWriter {
    half: WriteHalf,
    pending: std::collections::VecDeque<Transmit>,
}

impl LinkWriter {
    /// Write `t` (after anything pending), blocking until the kernel took it all.
    fn write_all(&mut self, t: &mut Transmit) -> io::Result<()> {
        while let Some(mut p) = self.pending.pop_front() {
            write_batch(&mut self.half, &mut p)?;
        }
        write_batch(&mut self.half, t)
    }

    /// Write what the kernel takes now; keep the rest (of `t` too) pending. Returns
    /// true if nothing is left pending.
    fn write_some(&mut self, t: Transmit) -> io::Result<bool> {
        self.pending.push_back(t);
        while let Some(p) = self.pending.front_mut() {
            let r = {
                let mut slices = Vec::with_capacity(64);
                p.io_slices(&mut slices);
                self.half.write_vectored_nonblocking(&slices)
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    p.consume(n);
                    if p.is_empty() {
                        self.pending.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl LinkIo {
    fn close(&self) {
        let _ = self.shutdown.shutdown();
    }

    /// The first time a chunked message goes either way on this link, bound the socket
    /// buffers that the configuration left to the OS (`Config::chunked_sockbuf`) and
    /// the unsent bytes (`Config::chunked_notsent_lowat`).
    fn bound_for_chunks(&self, cfg: &super::config::Config, conn: u64) {
        if self.chunk_bounded.swap(true, Ordering::AcqRel) {
            return;
        }
        if cfg.chunked_sockbuf != 0 {
            let n = chunked_buffer_size(cfg.chunked_sockbuf, self.shutdown.mss());
            let snd = (cfg.tcp_sndbuf == 0).then_some(n);
            let rcv = (cfg.tcp_rcvbuf == 0).then_some(n);
            if let Err(e) = self.shutdown.set_buffers(snd, rcv) {
                warn!("conn#{conn}: cannot bound the socket buffers for chunked messages: {e}");
            }
        }
        if cfg.chunked_notsent_lowat != 0 {
            let n = u32::try_from(cfg.chunked_notsent_lowat).unwrap_or(u32::MAX);
            if let Err(e) = self.shutdown.set_notsent_lowat(n) {
                warn!("conn#{conn}: cannot bound the unsent bytes for chunked messages: {e}");
            }
        }
    }
}

/// The socket buffer size for a link that carries chunked messages: the configured
/// `ms_chunked_sockbuf`, but never below two maximum segments. Below one, the window
/// the kernel derives from the buffer cannot hold a full segment and the transfer
/// crawls on persist and delayed-ACK timers (on loopback, MSS 65,483, a 48 KiB bound
/// turned a 256 MiB transfer from 0.4 s into 12 s); between one and two, segments
/// still wait for timers now and then (64 KiB: a 13-16 ms stall in every run, 80 KiB
/// 3-13 ms, 96 KiB 2-4 ms, 128 KiB none above 2 ms; BENCHMARKS.md).
fn chunked_buffer_size(configured: usize, mss: Option<u32>) -> usize {
    let floor = mss.map_or(0, |m| 2 * m as usize);
    configured.max(floor)
}

/// Wakes the session's writer thread. A wake while the writer runs is remembered (the
/// flag) and costs nothing more; the writer parks without spinning, which matters
/// with many threads on few cores.
#[derive(Default)]
struct Waker {
    pending: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Waker {
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // Taking the lock orders this notify after a waiter's check of the flag.
            let _g = self.lock.lock();
            self.cv.notify_one();
        }
    }

    fn wait(&self, timeout: Duration) {
        // Yield a few times first: under a steady stream the next wake usually comes
        // within microseconds, and catching it here saves two futex calls.
        for _ in 0..WAKE_YIELDS {
            if self.pending.swap(false, Ordering::AcqRel) {
                return;
            }
            std::thread::yield_now();
        }
        let mut g = self.lock.lock();
        if !self.pending.swap(false, Ordering::AcqRel) {
            self.cv.wait_for(&mut g, timeout);
            self.pending.store(false, Ordering::Release);
        }
    }
}

/// How often a writer with nothing to do yields before it parks.
const WAKE_YIELDS: u32 = 8;

/// What one session's lock protects.
pub(crate) struct ConnState {
    pub(crate) proto: ProtoConn,
    links: HashMap<LinkId, Arc<LinkIo>>,
    connect_due: bool,
    last_send: Option<Instant>,
    /// When the writer thread decided to park, the instant it will wake up on its own;
    /// `None` while it works (it re-reads the state machine before it parks again).
    writer_parked_until: Option<Instant>,
}

impl ConnState {
    /// Whether a change just made to the state machine needs the writer thread: it is
    /// parked and there are bytes to send on `link`, or a timer now falls due before
    /// the writer would wake up on its own. Waking a parked writer for nothing costs two
    /// context switches per message on a request/response connection.
    fn writer_needed(&self, link: Option<LinkId>) -> bool {
        self.writer_need(link) != WriterNeed::No
    }

    /// As [`writer_needed`](Self::writer_needed), telling bytes from timers apart.
    fn writer_need(&self, link: Option<LinkId>) -> WriterNeed {
        let Some(until) = self.writer_parked_until else {
            return WriterNeed::No;
        };
        if self.connect_due || link.is_some_and(|l| self.proto.wants_transmit(l)) {
            WriterNeed::Bytes
        } else if self.proto.poll_timeout().is_some_and(|t| t < until) {
            WriterNeed::Timer
        } else {
            WriterNeed::No
        }
    }
}

/// Why a parked writer thread must be woken (see [`ConnState::writer_need`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriterNeed {
    /// Nothing changed that the writer would act on before it wakes up anyway.
    No,
    /// Bytes to send, or a connection to make: now.
    Bytes,
    /// Only a timer moved earlier (typically a delayed ACK). A reader checks again
    /// after dispatch: a reply sent from the dispatcher usually carries the ACK.
    Timer,
}

/// A send this long after the previous one is written inline by the sending thread.
const INLINE_AFTER_IDLE: Duration = Duration::from_micros(5);

/// One session, shared by its threads and the user's handles.
pub struct ConnShared {
    pub(crate) id: u64,
    pub(crate) state: Mutex<ConnState>,
    wake: Waker,
    closed: AtomicBool,
    pub(crate) peer_hint: Mutex<EntityAddr>,
    /// Where to (re)connect, for sessions we initiate.
    pub(crate) target: Option<SocketAddr>,
    /// This session's place in the admission counts (released when its writer exits).
    pub(crate) slot: Mutex<Option<Slot>>,
    /// The state this session is counted in by the stats gauges.
    gauge: Mutex<Option<GaugeState>>,
    /// Dispatch order: batches of events are numbered under the session lock and
    /// dispatched strictly in that order, with no lock held during the callbacks (two
    /// reader threads can briefly serve one session around a reconnect).
    tickets: AtomicU64,
    turn: Mutex<u64>,
    turn_cv: Condvar,
    /// Set on the loopback connection: messages go to the local delivery thread.
    pub(crate) local: Mutex<Option<crossbeam_channel::Sender<Message>>>,
}

impl ConnShared {
    pub(crate) fn new(
        id: u64,
        proto: ProtoConn,
        peer: EntityAddr,
        target: Option<SocketAddr>,
    ) -> Arc<Self> {
        Arc::new(ConnShared {
            id,
            state: Mutex::new(ConnState {
                proto,
                links: HashMap::new(),
                connect_due: false,
                last_send: None,
                writer_parked_until: None,
            }),
            wake: Waker::default(),
            closed: AtomicBool::new(false),
            peer_hint: Mutex::new(peer),
            target,
            slot: Mutex::new(None),
            gauge: Mutex::new(None),
            tickets: AtomicU64::new(0),
            turn: Mutex::new(0),
            turn_cv: Condvar::new(),
            local: Mutex::new(None),
        })
    }

    /// Wake the writer thread (coalesced: one pending wake is enough).
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Number a batch of events; call with the session lock held.
    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// Run `f` when every earlier-numbered batch has been dispatched.
    fn in_turn(&self, ticket: u64, f: impl FnOnce()) {
        {
            let mut turn = self.turn.lock();
            while *turn != ticket {
                self.turn_cv.wait(&mut turn);
            }
        }
        // Pass the turn on even if a callback panics.
        struct Next<'a>(&'a ConnShared);
        impl Drop for Next<'_> {
            fn drop(&mut self) {
                *self.0.turn.lock() += 1;
                self.0.turn_cv.notify_all();
            }
        }
        let _next = Next(self);
        f();
    }
}

/// Write the farewell bytes of a closed link (bounded), then shut its socket.
fn close_link(shared: &Arc<ConnShared>, link: LinkId) {
    let mut farewell = Transmit::new();
    let io = {
        let mut st = shared.state.lock();
        st.proto.poll_transmit(link, Instant::now(), &mut farewell);
        st.links.remove(&link)
    };
    if let Some(io) = io {
        if !farewell.is_empty() {
            // Bounded: if another thread is stuck writing (a peer that stopped reading),
            // give up on the farewell; the shutdown below unblocks that thread.
            if let Some(mut w) = io.write.try_lock_for(Duration::from_millis(200)) {
                let _ = w.half.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = w.write_all(&mut farewell);
            }
        }
        io.close();
    }
}

/// Write a batch, consuming it as the kernel accepts bytes.
fn write_batch(w: &mut WriteHalf, t: &mut Transmit) -> io::Result<()> {
    while !t.is_empty() {
        let r = {
            let mut slices = Vec::with_capacity(64);
            t.io_slices(&mut slices);
            w.write_vectored(&slices)
        };
        let n = match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        t.consume(n);
    }
    Ok(())
}

/// Attach a connected transport to a session as link `link_id` and start its reader.
pub(crate) fn attach_link(
    inner: &Arc<Inner>,
    shared: &Arc<ConnShared>,
    link_id: LinkId,
    transport: Transport,
) {
    let shutdown = match transport.shutdown_handle() {
        Ok(s) => s,
        Err(e) => {
            warn!("conn#{}: cannot clone socket: {e}", shared.id);
            return;
        }
    };
    let (read, write) = transport.split();
    let io = Arc::new(LinkIo {
        write: Mutex::new(LinkWriter {
            half: write,
            pending: std::collections::VecDeque::new(),
        }),
        shutdown,
        chunk_bounded: AtomicBool::new(false),
    });
    shared.state.lock().links.insert(link_id, io);
    spawn_reader(inner, shared.clone(), link_id, read);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::Config;
    use socket2::SockRef;
    use std::net::{TcpListener, TcpStream};

    /// A link over a real loopback connection, its socket (to read options back) and
    /// the accepted peer socket.
    fn loopback_link() -> (LinkIo, TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer, _) = l.accept().unwrap();
        let probe = c.try_clone().unwrap();
        let t = Transport::new(c).unwrap();
        let shutdown = t.shutdown_handle().unwrap();
        let (_read, half) = t.split();
        let io = LinkIo {
            write: Mutex::new(LinkWriter {
                half,
                pending: Default::default(),
            }),
            shutdown,
            chunk_bounded: AtomicBool::new(false),
        };
        (io, probe, peer)
    }

    #[test]
    fn chunked_links_get_bounded_buffers_and_unsent_bytes_once() {
        let (io, probe, _peer) = loopback_link();
        let sock = SockRef::from(&probe);
        let cfg = Config {
            chunked_sockbuf: 128 * 1024,
            chunked_notsent_lowat: 16 * 1024,
            ..Config::default()
        };
        io.bound_for_chunks(&cfg, 1);
        // Linux doubles SO_SNDBUF/SO_RCVBUF for its bookkeeping.
        assert_eq!(sock.send_buffer_size().unwrap(), 256 * 1024);
        assert_eq!(sock.recv_buffer_size().unwrap(), 256 * 1024);
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), 16 * 1024);
        // Only the first chunked message bounds the link.
        let later = Config {
            chunked_notsent_lowat: 64 * 1024,
            ..cfg
        };
        io.bound_for_chunks(&later, 1);
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), 16 * 1024);
    }

    #[test]
    fn zero_leaves_the_os_settings_alone() {
        let (io, probe, _peer) = loopback_link();
        let sock = SockRef::from(&probe);
        let (snd, rcv) = (
            sock.send_buffer_size().unwrap(),
            sock.recv_buffer_size().unwrap(),
        );
        let lowat = sock.tcp_notsent_lowat().unwrap();
        let cfg = Config {
            chunked_sockbuf: 0,
            chunked_notsent_lowat: 0,
            ..Config::default()
        };
        io.bound_for_chunks(&cfg, 1);
        assert_eq!(sock.send_buffer_size().unwrap(), snd);
        assert_eq!(sock.recv_buffer_size().unwrap(), rcv);
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), lowat);
    }

    #[test]
    fn chunked_buffers_never_go_below_two_segments() {
        // Loopback's MSS: a smaller bound is raised to two segments.
        assert_eq!(chunked_buffer_size(48 * 1024, Some(65_483)), 130_966);
        assert_eq!(chunked_buffer_size(64 * 1024, Some(65_483)), 130_966);
        assert_eq!(chunked_buffer_size(192 * 1024, Some(65_483)), 192 * 1024);
        // Ethernet's MSS leaves the configured bound alone.
        assert_eq!(chunked_buffer_size(64 * 1024, Some(1448)), 64 * 1024);
        // An OS that does not report the MSS: the configured bound.
        assert_eq!(chunked_buffer_size(16 * 1024, None), 16 * 1024);
    }
}
