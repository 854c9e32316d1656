//! Security suite (issue 4): real loopback sockets, a man-in-the-middle relay the test
//! controls, and the crate's own parsers to find each frame in the relayed stream.
//!
//! For every attack the test checks that (1) the dispatcher received no tampered,
//! replayed or reordered message (contents and order), (2) the side that received the
//! attack closed the link with an error naming the problem (captured from the log), and
//! (3) for lossless sessions, that the genuine messages still arrive exactly once and in
//! order after the automatic reconnect.
//!
//! The tests share one log capture, so they run one at a time (`SERIAL`); every wait is
//! bounded.
#![allow(clippy::disallowed_methods)] // tests: sockets, threads and clocks are the point

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use simplemsgr::auth::{AuthConfig, Keyring, Method, Secret};
use simplemsgr::crypto::{Protection, RxProtector};
use simplemsgr::proto::{Mode, Policy};
use simplemsgr::runtime::{ChannelDispatcher, ConnectionRef, Event, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::msgr2::{Banner, CloseReason, Deframer, Frame, Limits, Tag};
use simplemsgr::wire::types::{EntityType, Timespec};

use common::relay::{Direction, Output, Pass, Record, Relay, Split, Tamper};
use common::{msg, Echo};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;
/// Front size of every test message; makes MSG frames recognisable by length even
/// when encrypted (1 tag + 73 header2 + front).
const FRONT: usize = 150;
const MSG_LEN: usize = 1 + 73 + FRONT;
const WAIT: Duration = Duration::from_secs(10);

// ----- log capture ---------------------------------------------------------------------

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());
static LOGGER: Capture = Capture;
static INIT: Once = Once::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Debug && m.target().starts_with("simplemsgr")
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {}", r.level(), r.args());
        if std::env::var_os("SECURITY_LOG").is_some() {
            eprintln!("{line}");
        }
        let mut logs = lock(&LOGS);
        if logs.len() < 200_000 {
            logs.push(line);
        }
    }
    fn flush(&self) {}
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serialise the tests (one log capture) and clear the log.
fn begin() -> MutexGuard<'static, ()> {
    INIT.call_once(|| {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Debug);
    });
    let g = lock(&SERIAL);
    lock(&LOGS).clear();
    g
}

/// The first captured log line containing every one of `needles`, waiting up to `timeout`.
fn wait_log(needles: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = lock(&LOGS)
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Some(l.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn expect_log(needles: &[&str], what: &str) -> String {
    wait_log(needles, WAIT).unwrap_or_else(|| {
        let logs = lock(&LOGS);
        let closes: Vec<&String> = logs.iter().filter(|l| l.contains("closed")).collect();
        panic!("{what}: no log line with {needles:?}; link closes seen: {closes:#?}")
    })
}

fn count_log(needles: &[&str]) -> usize {
    lock(&LOGS)
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

// ----- frames in the relayed stream ----------------------------------------------------

/// The wire form of one unit of a direction's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Banner,
    Plain,
    Protected(Protection),
}

/// One banner or frame, located with the crate's own parsers (§2.1, §3).
#[derive(Clone, Debug)]
struct Unit {
    form: Form,
    /// The tag when it is visible (plain and signed forms).
    tag: Option<Tag>,
    /// The protected form's `length` field (1 + payload length).
    length: usize,
    /// Index among this direction's MSG frames, if it is one.
    msg_index: Option<usize>,
    bytes: Vec<u8>,
}

impl Unit {
    fn protection(&self) -> Protection {
        match self.form {
            Form::Protected(p) => p,
            _ => Protection::Plain,
        }
    }
    /// §3.2/§3.3 field ranges of a protected frame.
    fn confounder(&self) -> Range<usize> {
        0..16
    }
    fn length_field(&self) -> Range<usize> {
        16..20
    }
    fn body(&self) -> Range<usize> {
        20..20 + self.length
    }
    fn signature(&self) -> Range<usize> {
        let b = self.body().end;
        b..b + self.protection().sig_size()
    }
    fn padding(&self) -> Range<usize> {
        self.signature().end..self.bytes.len()
    }
}

/// Splits one direction's stream into units as bytes arrive.
#[derive(Default)]
struct StreamParser {
    buf: Vec<u8>,
    banner_done: bool,
    protected: Option<Protection>,
    msgs: usize,
    broken: bool,
}

impl StreamParser {
    fn push(&mut self, data: &[u8]) -> Vec<Unit> {
        self.buf.extend_from_slice(data);
        let mut units = Vec::new();
        while !self.broken {
            match self.next() {
                Ok(Some(u)) => units.push(u),
                Ok(None) => break,
                Err(e) => {
                    let head = &self.buf[..self.buf.len().min(48)];
                    eprintln!("stream parser: {e}; passing the rest through: {head:02x?}");
                    self.broken = true;
                }
            }
        }
        if self.broken && !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            units.push(Unit {
                form: Form::Plain,
                tag: None,
                length: 0,
                msg_index: None,
                bytes: rest,
            });
        }
        units
    }

    fn next(&mut self) -> Result<Option<Unit>, String> {
        if !self.banner_done {
            let Some((_, used)) = Banner::parse(&self.buf).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            self.banner_done = true;
            let bytes: Vec<u8> = self.buf.drain(..used).collect();
            return Ok(Some(Unit {
                form: Form::Banner,
                tag: None,
                length: 0,
                msg_index: None,
                bytes,
            }));
        }
        let mut unit = match self.protected {
            None | Some(Protection::Plain) => {
                let mut d = Deframer::new(Limits::default());
                d.push(&self.buf);
                let Some(decoded) = d
                    .next_frame(&mut RxProtector::plain())
                    .map_err(|e| e.to_string())?
                else {
                    return Ok(None);
                };
                let n = decoded.raw.len();
                let bytes: Vec<u8> = self.buf.drain(..n).collect();
                if let Frame::AuthDone(done) = &decoded.frame {
                    // What the sender uses from now on: its own (original) flags.
                    self.protected = Protection::from_flags(done.flags);
                }
                Unit {
                    form: Form::Plain,
                    tag: Some(decoded.frame.tag()),
                    length: n,
                    msg_index: None,
                    bytes,
                }
            }
            Some(p) => {
                if self.buf.len() < 20 {
                    return Ok(None);
                }
                let length =
                    u32::from_le_bytes([self.buf[16], self.buf[17], self.buf[18], self.buf[19]])
                        as usize;
                if length == 0 || length > 64 << 20 {
                    return Err(format!("implausible protected length {length}"));
                }
                let total = 20 + length + p.sig_size() + p.padding(length as u64);
                if self.buf.len() < total {
                    return Ok(None);
                }
                let bytes: Vec<u8> = self.buf.drain(..total).collect();
                let tag = (p == Protection::Signed).then_some(Tag(bytes[20]));
                Unit {
                    form: Form::Protected(p),
                    tag,
                    length,
                    msg_index: None,
                    bytes,
                }
            }
        };
        let is_msg = match unit.form {
            Form::Protected(Protection::Encrypted) => unit.length == MSG_LEN,
            _ => unit.tag == Some(Tag::MSG),
        };
        if is_msg {
            unit.msg_index = Some(self.msgs);
            self.msgs += 1;
        }
        Ok(Some(unit))
    }
}

/// What an [`Edit`] sees: which connection and direction, and the unit.
type Edit = Box<dyn FnMut(usize, Direction, &Unit) -> Vec<Vec<u8>> + Send>;

/// A relay tamper that forwards whole units (banner, frames) and lets `edit` replace each.
struct FrameTamper {
    parsers: HashMap<(usize, Direction), StreamParser>,
    edit: Edit,
}

impl FrameTamper {
    fn new(edit: Edit) -> Box<Self> {
        Box::new(FrameTamper {
            parsers: HashMap::new(),
            edit,
        })
    }
}

impl Tamper for FrameTamper {
    fn chunk(&mut self, conn: usize, dir: Direction, _: u64, data: &[u8], out: &mut Output) {
        let units = self.parsers.entry((conn, dir)).or_default().push(data);
        for u in units {
            for bytes in (self.edit)(conn, dir, &u) {
                out.send(bytes);
            }
        }
    }

    fn eof(&mut self, conn: usize, dir: Direction, out: &mut Output) {
        if let Some(p) = self.parsers.get_mut(&(conn, dir)) {
            out.send(std::mem::take(&mut p.buf));
        }
    }
}

/// The attacks on one MSG frame of the first connection's client→server stream.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// A bit of the 16-byte confounder (frame header).
    FlipConfounder,
    /// A set bit of the le32 `length` cleared (frame header): the frame claims to be shorter.
    FlipLength,
    /// A bit of the tag (MSG 0x20 becomes ACK 0x21).
    FlipTag,
    /// A bit inside ceph_msg_header2.
    FlipMsgHeader,
    /// A bit of the message front (payload).
    FlipPayload,
    /// A bit of the HMAC / GCM tag.
    FlipSignature,
    /// A bit of the random padding after the signature.
    FlipPadding,
    /// The frame's last 9 bytes removed; the stream goes on with the next frame.
    Truncate,
    /// The frame sent twice in a row.
    ReplaySame,
    /// The frame and the next one exchanged.
    Swap,
    /// The frame removed.
    Drop,
}

const ATTACKS: [Attack; 11] = [
    Attack::FlipConfounder,
    Attack::FlipLength,
    Attack::FlipTag,
    Attack::FlipMsgHeader,
    Attack::FlipPayload,
    Attack::FlipSignature,
    Attack::FlipPadding,
    Attack::Truncate,
    Attack::ReplaySame,
    Attack::Swap,
    Attack::Drop,
];

/// The MSG frame (index among MSG frames) each attack targets.
const TARGET: usize = 3;
/// Messages each attack test sends.
const N: u32 = 8;

fn flip(u: &Unit, at: usize, mask: u8) -> Vec<u8> {
    let mut b = u.bytes.clone();
    b[at] ^= mask;
    b
}

/// An edit applying `attack` to MSG frame [`TARGET`] of connection 0, client→server.
/// `hits` counts how many times it fired (the test asserts exactly once).
fn attack_edit(attack: Attack, hits: Arc<Mutex<usize>>) -> Edit {
    let mut held: Option<Vec<u8>> = None;
    Box::new(move |conn, dir, u| {
        if conn != 0 || dir != C2S {
            return vec![u.bytes.clone()];
        }
        let Some(i) = u.msg_index else {
            return vec![u.bytes.clone()];
        };
        assert!(
            matches!(u.form, Form::Protected(_)),
            "MSG frames are protected"
        );
        if i == TARGET {
            *lock(&hits) += 1;
        }
        match (attack, i) {
            (Attack::FlipConfounder, TARGET) => vec![flip(u, u.confounder().start + 5, 0x10)],
            (Attack::FlipLength, TARGET) => {
                // Clear a set bit in the low byte: the frame claims to be shorter, so the
                // reader never waits for bytes that will not come.
                let at = u.length_field().start;
                let bit = (0..8).map(|b| 1u8 << b).find(|m| u.bytes[at] & m != 0);
                vec![flip(u, at, bit.expect("a set bit in the length"))]
            }
            (Attack::FlipTag, TARGET) => vec![flip(u, u.body().start, 0x01)],
            // A byte inside ceph_msg_header2 (73 bytes after the tag).
            (Attack::FlipMsgHeader, TARGET) => vec![flip(u, u.body().start + 1 + 10, 0x02)],
            (Attack::FlipPayload, TARGET) => vec![flip(u, u.body().end - 7, 0x80)],
            (Attack::FlipSignature, TARGET) => vec![flip(u, u.signature().start + 3, 0x04)],
            (Attack::FlipPadding, TARGET) => {
                assert!(!u.padding().is_empty(), "this frame has padding");
                vec![flip(u, u.padding().end - 1, 0x01)]
            }
            (Attack::Truncate, TARGET) => vec![u.bytes[..u.bytes.len() - 9].to_vec()],
            (Attack::ReplaySame, TARGET) => vec![u.bytes.clone(), u.bytes.clone()],
            (Attack::Swap, TARGET) => {
                held = Some(u.bytes.clone());
                vec![]
            }
            (Attack::Swap, x) if x == TARGET + 1 => {
                vec![u.bytes.clone(), held.take().expect("held frame")]
            }
            (Attack::Drop, TARGET) => vec![],
            _ => vec![u.bytes.clone()],
        }
    })
}

// ----- messengers ----------------------------------------------------------------------

fn the_key() -> Secret {
    Secret::new(&[
        0x6b, 0x02, 0x5a, 0x8d, 0x1a, 0x98, 0xf3, 0xe7, 0x13, 0x37, 0xc0, 0xde, 0x55, 0xaa, 0x01,
        0x99,
    ])
}

fn keyring() -> Arc<Keyring> {
    let mut k = Keyring::new();
    k.insert("client.admin", the_key(), Timespec { sec: 1, nsec: 0 });
    Arc::new(k)
}

struct Setup {
    mode: Mode,
    server_min: Mode,
    lossless: bool,
    client_auth: AuthConfig,
    server_auth: AuthConfig,
    max_frames: Option<u64>,
    echo: bool,
}

impl Setup {
    fn secret(mode: Mode, lossless: bool) -> Setup {
        Setup {
            mode,
            server_min: mode,
            lossless,
            client_auth: AuthConfig::secret_client("client.admin", the_key()),
            server_auth: AuthConfig::secret_server(keyring()),
            max_frames: None,
            echo: false,
        }
    }
}

struct Pair {
    server: Messenger,
    sevents: Receiver<Event>,
    client: Messenger,
    cevents: Receiver<Event>,
    relay: Relay,
    conn: ConnectionRef,
}

impl Pair {
    fn start(s: Setup, tamper: Box<dyn Tamper>) -> Pair {
        let (sp, cp) = if s.lossless {
            (Policy::stateful_server(), Policy::lossless_client())
        } else {
            (Policy::stateless_server(), Policy::lossy_client())
        };
        let (sd, sevents) = ChannelDispatcher::new();
        let mut sb = Messenger::builder("osd.0".parse().unwrap())
            .bind("127.0.0.1:0".parse().unwrap())
            .default_policy(sp)
            .auth(s.server_auth)
            .mode(s.mode, s.server_min);
        let mut cb = Messenger::builder("client.1".parse().unwrap())
            .default_policy(cp)
            .auth(s.client_auth)
            .mode(s.mode, Mode::Plain);
        if let Some(n) = s.max_frames {
            sb = sb.max_frames_per_key(n);
            cb = cb.max_frames_per_key(n);
        }
        let server = if s.echo {
            sb.start(Arc::new(Echo)).unwrap()
        } else {
            sb.start(Arc::new(sd)).unwrap()
        };
        let relay = Relay::start(server.listen_addr().unwrap(), tamper);
        let (cd, cevents) = ChannelDispatcher::new();
        let client = cb.start(Arc::new(cd)).unwrap();
        let conn = client.connect(relay.addr(), EntityType::OSD).unwrap();
        Pair {
            server,
            sevents,
            client,
            cevents,
            relay,
            conn,
        }
    }

    fn relay_tag(&self) -> String {
        format!("127.0.0.1:{}", self.relay.addr().port())
    }

    fn stop(self) {
        self.client.shutdown();
        self.server.shutdown();
        assert!(
            self.client.wait(Duration::from_secs(5)),
            "client threads exit"
        );
        assert!(
            self.server.wait(Duration::from_secs(5)),
            "server threads exit"
        );
        drop(self.relay);
    }
}

fn test_msg(i: u32) -> Message {
    msg(i, FRONT)
}

/// The index of a message, after checking every byte of it is what we sent.
fn genuine(m: &Message) -> u32 {
    let i = common::index(m);
    assert_eq!(
        &m.front[..],
        &test_msg(i).front[..],
        "message {i} arrived with altered contents"
    );
    i
}

/// Messages (checked genuine) until `n` arrived, failing after `timeout`.
fn recv_n(events: &Receiver<Event>, n: usize, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Message(_, m)) => got.push(genuine(&m)),
            Ok(_) => {}
            Err(_) => panic!("timed out with {got:?} of {n} messages"),
        }
    }
    got
}

/// Every message (checked genuine) and other event arriving within `dur`.
fn drain_for(events: &Receiver<Event>, dur: Duration) -> (Vec<u32>, Vec<String>) {
    let deadline = Instant::now() + dur;
    let (mut msgs, mut other) = (Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Message(_, m)) => msgs.push(genuine(&m)),
            Ok(e) => other.push(e.to_string()),
            Err(_) => return (msgs, other),
        }
    }
}

const BAD_SIG: &str = "frame failed authentication (bad signature or tag)";

// ----- tests ---------------------------------------------------------------------------

/// Each attack on one signed MSG of a lossless session: the server closes the link naming
/// the bad signature, nothing tampered is delivered, and after the client's automatic
/// reconnect all messages arrive exactly once, in order, intact.
#[test]
fn signed_lossless_attacks_detected_and_session_recovers() {
    let _g = begin();
    for attack in ATTACKS {
        lock(&LOGS).clear();
        let hits = Arc::new(Mutex::new(0));
        let edit = attack_edit(attack, hits.clone());
        let p = Pair::start(Setup::secret(Mode::Signed, true), FrameTamper::new(edit));
        for i in 0..N {
            p.conn.send(test_msg(i)).unwrap();
        }
        eprintln!("=== {attack:?}");
        let got = recv_n(&p.sevents, N as usize, WAIT);
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "{attack:?}: exactly once, in order"
        );
        assert_eq!(*lock(&hits), 1, "{attack:?}: the attack fired once");
        let line = expect_log(&["link", "closed (Peer)", BAD_SIG], &format!("{attack:?}"));
        assert!(
            !line.contains(&p.relay_tag()),
            "{attack:?}: the server detected it: {line}"
        );
        // The client learns why from the server's CLOSE.
        expect_log(
            &[&p.relay_tag(), "closed (Peer)", "PROTOCOL", BAD_SIG],
            &format!("{attack:?} (client side)"),
        );
        assert!(p.relay.connections() >= 2, "{attack:?}: it reconnected");
        let (extra, _) = drain_for(&p.sevents, Duration::from_millis(100));
        assert!(
            extra.is_empty(),
            "{attack:?}: nothing delivered twice: {extra:?}"
        );
        p.stop();
    }
}

/// The same attacks on an encrypted, lossy session: the messages before the tampered
/// frame are delivered, nothing from it on, the server names the failed GCM tag, and the
/// client sees a reset (a single connection).
#[test]
fn secure_lossy_attacks_detected_nothing_delivered() {
    let _g = begin();
    for attack in ATTACKS {
        lock(&LOGS).clear();
        let hits = Arc::new(Mutex::new(0));
        let edit = attack_edit(attack, hits.clone());
        let p = Pair::start(Setup::secret(Mode::Secure, false), FrameTamper::new(edit));
        for i in 0..N {
            p.conn.send(test_msg(i)).unwrap();
        }
        let line = expect_log(&["link", "closed (Peer)", BAD_SIG], &format!("{attack:?}"));
        assert!(
            !line.contains(&p.relay_tag()),
            "{attack:?}: the server detected it: {line}"
        );
        assert_eq!(*lock(&hits), 1, "{attack:?}: the attack fired once");
        let reset = common::wait_for(&p.cevents, WAIT, |e| matches!(e, Event::Reset(_)));
        assert!(
            reset.is_some(),
            "{attack:?}: the lossy client reports a reset"
        );
        let (got, _) = drain_for(&p.sevents, Duration::from_millis(200));
        // A replayed copy follows a genuine original, which is delivered.
        let before = match attack {
            Attack::ReplaySame => TARGET as u32 + 1,
            _ => TARGET as u32,
        };
        assert_eq!(
            got,
            (0..before).collect::<Vec<_>>(),
            "{attack:?}: only the messages before the attack"
        );
        assert_eq!(
            p.relay.connections(),
            1,
            "{attack:?}: a lossy client does not reconnect"
        );
        p.stop();
    }
}

/// An edit that rewrites the plain AUTH_DONE (tag, le64 flags, signature) sent in `dir` on
/// connection 0 to flags 0, fixing up nothing else. Counts the hits.
fn strip_auth_done(dir: Direction, hits: Arc<Mutex<usize>>) -> Edit {
    Box::new(move |conn, d, u| {
        let mut b = u.bytes.clone();
        if conn == 0 && d == dir && u.form == Form::Plain && u.tag == Some(Tag::AUTH_DONE) {
            let flags = u64::from_le_bytes(b[1..9].try_into().unwrap());
            assert_ne!(flags, 0, "the sender asked for protection");
            b[1..9].fill(0);
            *lock(&hits) += 1;
        }
        vec![b]
    })
}

/// FLAG_SIGNED or FLAG_ENCRYPTED stripped from either AUTH_DONE: the receiving side's
/// AUTH_DONE check fails (the client's signature covers its flags; the client insists the
/// server echo its flags), the link closes with that reason, and nothing is delivered.
#[test]
fn stripped_protection_flags_fail_the_auth_done_check() {
    let _g = begin();
    let cases = [
        (
            Mode::Signed,
            C2S,
            "client AUTH_DONE signature does not verify",
        ),
        (
            Mode::Secure,
            C2S,
            "client AUTH_DONE signature does not verify",
        ),
        (Mode::Signed, S2C, "server AUTH_DONE flags differ from ours"),
        (Mode::Secure, S2C, "server AUTH_DONE flags differ from ours"),
    ];
    for (mode, dir, why) in cases {
        lock(&LOGS).clear();
        let hits = Arc::new(Mutex::new(0));
        let edit = strip_auth_done(dir, hits.clone());
        let p = Pair::start(Setup::secret(mode, false), FrameTamper::new(edit));
        p.conn.send(test_msg(0)).unwrap();
        let case = format!("{mode:?} {dir:?}");
        let line = expect_log(&["link", "closed (", why], &case);
        // The side that received the stripped AUTH_DONE detected it.
        assert_eq!(line.contains(&p.relay_tag()), dir == S2C, "{case}: {line}");
        // ... and told the other side, which reports it too.
        let other = expect_log(&["peer closed the connection (PROTOCOL)", why], &case);
        assert_eq!(
            other.contains(&p.relay_tag()),
            dir == C2S,
            "{case}: {other}"
        );
        assert!(
            common::wait_for(&p.cevents, WAIT, |e| matches!(e, Event::Reset(_))).is_some(),
            "{case}: the lossy client reports a reset"
        );
        let (got, events) = drain_for(&p.sevents, Duration::from_millis(200));
        assert!(got.is_empty(), "{case}: nothing delivered: {got:?}");
        if dir == C2S {
            assert!(
                !events.iter().any(|e| e.contains("accepted")),
                "{case}: the server never accepted the session: {events:?}"
            );
        }
        // (With the server's AUTH_DONE stripped, the server has verified the client's
        // AUTH_DONE and accepted the pipelined IDENT/START; the client refuses.)
        assert_eq!(*lock(&hits), 1, "{case}: stripped once");
        p.stop();
    }
}

/// A client that prefers NONE and falls back to SECRET, and a server that allows SECRET
/// and a second (unimplemented) method, so that the server sends AUTH_METHODS.
fn fallback_setup() -> Setup {
    let mut client_auth = AuthConfig::secret_client("client.admin", the_key());
    client_auth.client_methods = vec![Method::NONE, Method::SECRET];
    let mut server_auth = AuthConfig::secret_server(keyring());
    server_auth.server_methods = vec![Method::SECRET, Method(0x20)];
    Setup {
        mode: Mode::Signed,
        server_min: Mode::Signed,
        lossless: false,
        client_auth,
        server_auth,
        max_frames: None,
        echo: false,
    }
}

/// An edit rewriting the method list of AUTH_METHODS (s2c, connection 0).
fn edit_methods(f: impl Fn(&mut Vec<u32>) + Send + 'static, hits: Arc<Mutex<usize>>) -> Edit {
    Box::new(move |conn, d, u| {
        let mut b = u.bytes.clone();
        if conn == 0 && d == S2C && u.form == Form::Plain && u.tag == Some(Tag::AUTH_METHODS) {
            let n = u32::from_le_bytes(b[1..5].try_into().unwrap()) as usize;
            let mut methods: Vec<u32> = (0..n)
                .map(|i| u32::from_le_bytes(b[5 + 4 * i..9 + 4 * i].try_into().unwrap()))
                .collect();
            assert_eq!(methods, vec![0x10, 0x20], "the server's list");
            f(&mut methods);
            assert_eq!(methods.len(), n, "same length: nothing else to fix up");
            for (i, m) in methods.iter().enumerate() {
                b[5 + 4 * i..9 + 4 * i].copy_from_slice(&m.to_le_bytes());
            }
            *lock(&hits) += 1;
        }
        vec![b]
    })
}

/// AUTH_METHODS edited in flight. Reordered (the client still picks SECRET): both sides
/// derive keys from different transcripts, so the server's check of the client's
/// AUTH_DONE fails. Downgraded to NONE: the server refuses the method a second time.
/// Untampered, the same fallback succeeds (the control run).
#[test]
fn altered_auth_methods_are_detected() {
    let _g = begin();
    // Control: the fallback NONE -> SECRET works without a man in the middle.
    let p = Pair::start(fallback_setup(), Box::new(Pass));
    p.conn.send(test_msg(0)).unwrap();
    assert_eq!(recv_n(&p.sevents, 1, WAIT), vec![0], "control run delivers");
    assert_eq!(p.conn.state(), simplemsgr::proto::msgr2::State::Open);
    p.stop();

    lock(&LOGS).clear();
    let hits = Arc::new(Mutex::new(0));
    let edit = edit_methods(|m| m.reverse(), hits.clone());
    let p = Pair::start(fallback_setup(), FrameTamper::new(edit));
    p.conn.send(test_msg(0)).unwrap();
    let why = "client AUTH_DONE signature does not verify (transcript altered or wrong key)";
    let line = expect_log(&["link", "closed (", why], "reordered");
    assert!(
        !line.contains(&p.relay_tag()),
        "the server detected it: {line}"
    );
    expect_log(
        &[&p.relay_tag(), "peer closed the connection (PROTOCOL)", why],
        "reordered",
    );
    let (got, _) = drain_for(&p.sevents, Duration::from_millis(200));
    assert!(got.is_empty(), "reordered: nothing delivered: {got:?}");
    assert_eq!(*lock(&hits), 1);
    p.stop();

    lock(&LOGS).clear();
    let hits = Arc::new(Mutex::new(0));
    let edit = edit_methods(|m| m[0] = 0x01, hits.clone());
    let p = Pair::start(fallback_setup(), FrameTamper::new(edit));
    p.conn.send(test_msg(0)).unwrap();
    let refused = common::wait_for(&p.cevents, WAIT, |e| matches!(e, Event::Refused(..)));
    let Some(Event::Refused(_, text)) = refused else {
        panic!("downgrade: the client reports a refusal");
    };
    assert!(text.contains("AUTH_METHOD"), "downgrade: {text}");
    expect_log(
        &["link", "closed (", "no common auth method"],
        "downgrade (server)",
    );
    let (got, _) = drain_for(&p.sevents, Duration::from_millis(200));
    assert!(got.is_empty(), "downgrade: nothing delivered: {got:?}");
    assert_eq!(*lock(&hits), 1);
    p.stop();
}

/// Wrong key, unknown entity, method not allowed, encryption required: the client's
/// `handle_refused` receives a clear message, the server logs its side, nothing is
/// delivered, and the (lossless!) client does not retry: the relay sees one TCP
/// connection over a few seconds. The four run side by side to share the wait.
#[test]
fn permanent_errors_are_clear_on_both_sides_and_not_retried() {
    let _g = begin();
    let wrong_key = {
        let mut s = Setup::secret(Mode::Secure, true);
        s.client_auth = AuthConfig::secret_client("client.admin", Secret::new(&[7u8; 16]));
        s
    };
    let unknown = {
        let mut s = Setup::secret(Mode::Secure, true);
        s.client_auth = AuthConfig::secret_client("client.bob", the_key());
        s
    };
    let no_method = {
        let mut s = Setup::secret(Mode::Plain, true);
        s.client_auth = AuthConfig::none();
        s.server_min = Mode::Plain;
        s
    };
    let needs_secure = {
        let mut s = Setup::secret(Mode::Signed, true);
        s.server_min = Mode::Secure;
        s
    };
    // (name, setup, text the client's handle_refused gets, text the server logs)
    let cases = [
        (
            "wrong key",
            wrong_key,
            "could not prove it holds our key",
            "peer closed the connection (AUTH_FAILED)",
        ),
        (
            "unknown entity",
            unknown,
            "unknown entity client.bob",
            "no key is known for entity \"client.bob\"",
        ),
        (
            "method not allowed",
            no_method,
            "no common auth method",
            "peer closed the connection (AUTH_METHOD)",
        ),
        (
            "encryption required",
            needs_secure,
            "requires Secure mode",
            "server requires Secure mode",
        ),
    ];
    // Which side refuses, with which CLOSE reason.
    let refusals = [
        (C2S, CloseReason::AUTH_FAILED),
        (S2C, CloseReason::AUTH_FAILED),
        (C2S, CloseReason::AUTH_METHOD),
        (S2C, CloseReason::MODE_REQUIRED),
    ];
    let started = Instant::now();
    let mut pairs = Vec::new();
    let mut recordings = Vec::new();
    for (name, setup, client_text, server_text) in cases {
        let (rec, recording) = Record::new(Box::new(Pass));
        let p = Pair::start(setup, Box::new(rec));
        p.conn.send(test_msg(0)).unwrap();
        pairs.push((name, p, client_text, server_text));
        recordings.push(recording);
    }
    for (name, p, client_text, server_text) in &pairs {
        let refused = common::wait_for(&p.cevents, WAIT, |e| matches!(e, Event::Refused(..)));
        let Some(Event::Refused(_, text)) = refused else {
            panic!("{name}: the client's handle_refused was called");
        };
        assert!(text.contains(client_text), "{name}: client sees {text:?}");
        let line = expect_log(&["link", "closed (", server_text], name);
        assert!(
            !line.contains(&p.relay_tag()),
            "{name}: server side: {line}"
        );
    }
    // A bounded wait of a few seconds (well above the 0.2 s initial backoff).
    let until = started + Duration::from_secs(3);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    for (name, p, _, _) in &pairs {
        assert_eq!(p.relay.connections(), 1, "{name}: no reconnect storm");
        let (got, events) = drain_for(&p.sevents, Duration::from_millis(10));
        assert!(got.is_empty(), "{name}: nothing delivered");
        assert!(
            !events.iter().any(|e| e.contains("accepted")),
            "{name}: {events:?}"
        );
        let (_, more) = drain_for(&p.cevents, Duration::from_millis(10));
        assert!(
            more.is_empty(),
            "{name}: refused once and only once: {more:?}"
        );
        assert!(
            p.conn.send(test_msg(1)).is_err(),
            "{name}: the session is closed"
        );
    }
    // The refusing side sent exactly one CLOSE, with the reason code; the other side none.
    for (((name, ..), rec), (dir, reason)) in pairs.iter().zip(&recordings).zip(refusals) {
        let sent = closes(&rec.bytes(0, dir));
        assert_eq!(sent.len(), 1, "{name}: one CLOSE {dir:?}: {sent:?}");
        assert_eq!(sent[0].0, reason, "{name}: {sent:?}");
        let other = if dir == C2S { S2C } else { C2S };
        assert_eq!(
            closes(&rec.bytes(0, other)),
            vec![],
            "{name}: no CLOSE back"
        );
    }
    for (_, p, _, _) in pairs {
        p.stop();
    }
}

/// The plain CLOSE frames (reason, message) in one direction's recorded stream.
fn closes(stream: &[u8]) -> Vec<(CloseReason, String)> {
    let mut out = Vec::new();
    for u in StreamParser::default().push(stream) {
        if u.form == Form::Plain && u.tag == Some(Tag::CLOSE) {
            let mut d = Deframer::new(Limits::default());
            d.push(&u.bytes);
            if let Ok(Some(decoded)) = d.next_frame(&mut RxProtector::plain()) {
                if let Frame::Close(c) = decoded.frame {
                    out.push((c.reason, c.message));
                }
            }
        }
    }
    out
}

/// A full connection's client→server bytes, recorded by the relay and replayed into a
/// fresh connection to the server: the server's new nonce makes the recorded proof fail,
/// so nothing past authentication is accepted.
#[test]
fn replay_into_a_later_connection_fails_authentication() {
    let _g = begin();
    let (rec, recording) = Record::new(Box::new(Pass));
    let p = Pair::start(Setup::secret(Mode::Signed, true), Box::new(rec));
    for i in 0..5 {
        p.conn.send(test_msg(i)).unwrap();
    }
    assert_eq!(recv_n(&p.sevents, 5, WAIT), vec![0, 1, 2, 3, 4]);
    // Let the server's acks settle, so the recording holds the whole conversation.
    std::thread::sleep(Duration::from_millis(100));
    let c2s = recording.bytes(0, C2S);
    let units = StreamParser::default().push(&c2s);
    let msgs = units.iter().filter(|u| u.msg_index.is_some()).count();
    assert_eq!(msgs, 5, "the recording holds the five MSG frames");
    lock(&LOGS).clear();

    let addr = p.server.listen_addr().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&c2s).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    // The server answered in plain form: banner, AUTH (a fresh nonce), CLOSE(AUTH_FAILED).
    let units = StreamParser::default().push(&reply);
    let tags: Vec<Option<Tag>> = units.iter().map(|u| u.tag).collect();
    assert_eq!(
        tags,
        vec![None, Some(Tag::AUTH), Some(Tag::CLOSE)],
        "banner, AUTH, CLOSE"
    );
    let mut d = Deframer::new(Limits::default());
    d.push(&units[2].bytes);
    let close = d
        .next_frame(&mut RxProtector::plain())
        .unwrap()
        .unwrap()
        .frame;
    let Frame::Close(close) = close else {
        panic!("a CLOSE")
    };
    assert_eq!(close.reason, CloseReason::AUTH_FAILED);
    assert!(
        close.message.contains("client.admin"),
        "{:?}",
        close.message
    );
    expect_log(&["link", "closed (", "proved a different key"], "replay");
    let (got, events) = drain_for(&p.sevents, Duration::from_millis(300));
    assert!(
        got.is_empty(),
        "nothing from the replay is delivered: {got:?}"
    );
    assert!(!events.iter().any(|e| e.contains("accepted")), "{events:?}");
    // The genuine session is untouched.
    p.conn.send(test_msg(5)).unwrap();
    assert_eq!(recv_n(&p.sevents, 1, WAIT), vec![5]);
    p.stop();
}

/// With `max_frames_per_key` lowered to 20, a lossless session keeps delivering 200
/// messages exactly once and in order: each side closes with CLOSE(REKEY) before its
/// counter would reach the limit and the session resumes with fresh keys.
#[test]
fn frame_counter_exhaustion_rekeys_by_reconnecting() {
    let _g = begin();
    for mode in [Mode::Signed, Mode::Secure] {
        lock(&LOGS).clear();
        let mut s = Setup::secret(mode, true);
        s.max_frames = Some(20);
        let p = Pair::start(s, Box::new(Pass));
        for i in 0..200 {
            p.conn.send(test_msg(i)).unwrap();
        }
        let got = recv_n(&p.sevents, 200, Duration::from_secs(20));
        assert_eq!(
            got,
            (0..200).collect::<Vec<_>>(),
            "{mode:?}: exactly once, in order"
        );
        let conns = p.relay.connections();
        assert!(
            conns >= 10,
            "{mode:?}: 200 frames / 20 per key needs fresh keys: {conns}"
        );
        let tag = p.relay_tag();
        let rekeys = |client: bool| {
            lock(&LOGS)
                .iter()
                .filter(|l| l.contains("closed (Local): frame counter limit reached"))
                .filter(|l| l.contains(&tag) == client)
                .count()
        };
        assert!(rekeys(true) > 0, "{mode:?}: the client ran out and rekeyed");
        assert!(
            rekeys(false) > 0,
            "{mode:?}: the server ran out and rekeyed"
        );
        expect_log(&["peer closed the connection (REKEY)"], "the peer is told");
        let bad = count_log(&["closed (", "frame failed authentication"])
            + count_log(&["closed (", "exceeded the frame limit"]);
        assert_eq!(bad, 0, "{mode:?}: no frame beyond the limit was ever sent");
        let (extra, _) = drain_for(&p.sevents, Duration::from_millis(100));
        assert!(extra.is_empty(), "{mode:?}: nothing twice: {extra:?}");
        p.stop();
    }
}

/// A relay that splits every write, both ways, into pieces of at most 7 bytes changes
/// nothing: an encrypted lossless session echoes 40 messages in order on one connection.
#[test]
fn seven_byte_pieces_change_nothing() {
    let _g = begin();
    let mut s = Setup::secret(Mode::Secure, true);
    s.echo = true;
    let split = Split {
        dir: None,
        max: 7,
        gap: Duration::from_micros(20),
    };
    let p = Pair::start(s, Box::new(split));
    for i in 0..40 {
        p.conn.send(test_msg(i)).unwrap();
    }
    let got = recv_n(&p.cevents, 40, Duration::from_secs(20));
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    assert_eq!(p.relay.connections(), 1, "one connection throughout");
    for dir in [C2S, S2C] {
        let sizes = p.relay.write_sizes(0, dir);
        assert!(sizes.len() > 100, "{dir:?}: many pieces ({})", sizes.len());
        assert!(
            sizes.iter().all(|&n| n <= 7),
            "{dir:?}: every piece at most 7 bytes"
        );
    }
    assert_eq!(count_log(&["link", "closed ("]), 0, "no link closed");
    p.stop();
}

/// Send messages of `sizes` bytes of data (a pattern that depends on `mult` and the index)
/// and return the indices in the order the server dispatched them, each checked intact.
/// Bounded: 30 s.
fn send_big_and_receive(p: &Pair, sizes: &[usize], mult: usize) -> Vec<usize> {
    let data = |i: usize| -> Vec<u8> {
        (0..sizes[i])
            .map(|j| (j.wrapping_mul(mult).wrapping_add(i) % 251) as u8)
            .collect()
    };
    for i in 0..sizes.len() {
        p.conn.send(test_msg(i as u32).with_data(data(i))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < sizes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.sevents.recv_timeout(left) {
            Ok(Event::Message(_, m)) => {
                let i = genuine(&m) as usize;
                assert!(m.data[..] == data(i)[..], "message {i}: data intact");
                got.push(i);
            }
            Ok(_) => {}
            Err(_) => panic!("timed out with {got:?}"),
        }
    }
    got
}

/// Big signed messages, written by the relay in odd pieces with pauses between them,
/// arrive intact on one connection: the server reads the rest of each big frame
/// straight into its buffer, piece by piece, and verifies it once whole
/// (docs/PROTOCOL.md §3.4).
#[test]
fn big_signed_messages_in_odd_pieces_arrive_intact() {
    let _g = begin();
    let split = Split {
        dir: Some(C2S),
        max: 100_003,
        gap: Duration::from_micros(300),
    };
    let p = Pair::start(Setup::secret(Mode::Signed, true), Box::new(split));
    let sizes = [3usize << 20, 1, (1 << 20) + 7, 65_537, 4096, 2 << 20];
    let got = send_big_and_receive(&p, &sizes, 31);
    assert_eq!(got, (0..sizes.len()).collect::<Vec<_>>());
    assert!(
        p.relay.write_sizes(0, C2S).len() > 60,
        "the big frames arrived in many pieces"
    );
    assert_eq!(p.relay.connections(), 1, "one connection throughout");
    assert_eq!(count_log(&["link", "closed ("]), 0, "no link closed");
    p.stop();
}

/// A frame cut short and then the end of the stream (the relay swallows everything after
/// the first 30 bytes of MSG frame [`TARGET`], then the client hangs up): the server names
/// the truncated frame, and delivers only the messages before it.
#[test]
fn truncated_frame_then_eof_is_named() {
    let _g = begin();
    let cut = Arc::new(Mutex::new(false));
    let flag = cut.clone();
    let edit: Edit = Box::new(move |conn, dir, u| {
        if conn != 0 || dir != C2S {
            return vec![u.bytes.clone()];
        }
        let mut cut = lock(&flag);
        if *cut {
            return vec![];
        }
        if u.msg_index == Some(TARGET) {
            *cut = true;
            return vec![u.bytes[..30].to_vec()];
        }
        vec![u.bytes.clone()]
    });
    let p = Pair::start(Setup::secret(Mode::Signed, false), FrameTamper::new(edit));
    for i in 0..N {
        p.conn.send(test_msg(i)).unwrap();
    }
    let got = recv_n(&p.sevents, TARGET, WAIT);
    assert_eq!(got, (0..TARGET as u32).collect::<Vec<_>>());
    // Wait until the relay has cut the stream, then hang up the client.
    let deadline = Instant::now() + WAIT;
    while !*lock(&cut) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(*lock(&cut), "the relay cut the frame");
    p.conn.mark_down();
    let line = expect_log(
        &[
            "closed (Peer)",
            "in the middle of a frame (30 bytes of it received)",
        ],
        "truncated",
    );
    assert!(
        !line.contains(&p.relay_tag()),
        "the server reports it: {line}"
    );
    let (more, _) = drain_for(&p.sevents, Duration::from_millis(200));
    assert!(
        more.is_empty(),
        "nothing after the cut is delivered: {more:?}"
    );
    p.stop();
}

/// Big encrypted messages (1–2 MiB) on a lossless session, with the third big frame
/// tampered with on the way: the server names the failed GCM tag, the client reconnects
/// with fresh keys and replays what was not acknowledged, and every message arrives
/// exactly once, in order and byte for byte intact.
#[test]
fn big_secure_messages_survive_a_reconnect_with_replay() {
    let _g = begin();
    lock(&LOGS).clear();
    const BIG: usize = 1 << 20;
    let hits = Arc::new(Mutex::new(0usize));
    let seen = hits.clone();
    let mut big_frames = 0usize;
    let edit: Edit = Box::new(move |conn, dir, u| {
        let big = matches!(u.form, Form::Protected(Protection::Encrypted)) && u.length > BIG;
        if conn != 0 || dir != C2S || !big {
            return vec![u.bytes.clone()];
        }
        big_frames += 1;
        if big_frames != 3 {
            return vec![u.bytes.clone()];
        }
        *lock(&seen) += 1;
        vec![flip(u, u.body().start + 1 + 73 + 1000, 0x08)]
    });
    let p = Pair::start(Setup::secret(Mode::Secure, true), FrameTamper::new(edit));
    let sizes = [
        BIG,
        BIG + BIG / 2,
        2 * BIG - FRONT,
        BIG + 3,
        2 * BIG - FRONT,
        BIG,
        BIG + 17,
    ];
    let got = send_big_and_receive(&p, &sizes, 29);
    assert_eq!(
        got,
        (0..sizes.len()).collect::<Vec<_>>(),
        "exactly once, in order"
    );
    assert_eq!(*lock(&hits), 1, "the tamper fired once");
    expect_log(
        &["link", "closed (Peer)", BAD_SIG],
        "the server names the bad tag",
    );
    assert!(p.relay.connections() >= 2, "it reconnected");
    let (extra, _) = drain_for(&p.sevents, Duration::from_millis(200));
    assert!(extra.is_empty(), "nothing delivered twice: {extra:?}");
    p.stop();
}
