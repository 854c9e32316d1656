//! A two-endpoint harness over in-memory links with a virtual clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::crypto::SeededRng;
use crate::proto::accept::{decide, Decision};
use crate::proto::event::{Event, LinkId};
use crate::proto::msgr2::{Connection, State};
use crate::proto::ProtoConfig;
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName};

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn idx(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One entity: its config, its connections (sessions and incoming handshakes), and
/// what it observed.
pub struct Endpoint {
    pub cfg: Arc<ProtoConfig>,
    pub conns: Vec<Connection>,
    pub delivered: Vec<Message>,
    pub log: Vec<String>,
    seed: u64,
}

impl Endpoint {
    fn rng(&mut self) -> Box<SeededRng> {
        self.seed += 1;
        Box::new(SeededRng::new(self.seed))
    }

    pub fn count(&self, what: &str) -> usize {
        self.log.iter().filter(|l| l.starts_with(what)).count()
    }
}

struct Link {
    id: LinkId,
    /// Side that connected.
    client: Side,
    /// Bytes in flight towards each side (index by Side::idx of the receiver).
    pipes: [VecDeque<u8>; 2],
    alive: bool,
}

/// A byte-level tamper hook: (sender side, link id, bytes just written) → bytes to deliver.
pub type Tamper = Box<dyn FnMut(Side, LinkId, Vec<u8>) -> Vec<u8>>;

/// Two endpoints and the links between them.
pub struct Pair {
    pub now: Instant,
    pub ep: [Endpoint; 2],
    links: Vec<Link>,
    next_link: LinkId,
    pub tamper: Option<Tamper>,
    /// Largest chunk delivered to handle_input at once (to exercise every split).
    pub max_chunk: usize,
    /// The caller-owned read buffers (they keep a partial frame between calls).
    bufs: std::collections::HashMap<(usize, LinkId), BytesMut>,
}

pub fn addr(port: u16, nonce: u32) -> EntityAddr {
    EntityAddr::new(AddrType::MSGR2, ([127, 0, 0, 1], port).into(), nonce)
}

pub fn config(name: EntityName, a: EntityAddr) -> ProtoConfig {
    ProtoConfig::new(name, AddrVec(vec![a]))
}

impl Pair {
    /// A client (A, `client.1`, unbound) and a server (B, `osd.0` at port 6800).
    pub fn new(a: ProtoConfig, b: ProtoConfig) -> Self {
        let mk = |cfg: ProtoConfig, seed| Endpoint {
            cfg: Arc::new(cfg),
            conns: Vec::new(),
            delivered: Vec::new(),
            log: Vec::new(),
            seed,
        };
        Pair {
            now: crate::proto::tests::epoch(),
            ep: [mk(a, 1000), mk(b, 2000)],
            links: Vec::new(),
            next_link: 1,
            tamper: None,
            max_chunk: usize::MAX,
            bufs: std::collections::HashMap::new(),
        }
    }

    /// Open a session from `from` to the other side; returns its index in `from`'s conns.
    pub fn connect(&mut self, from: Side) -> usize {
        let to = from.other();
        let target = self.ep[to.idx()].cfg.addrs.0[0];
        let ty = self.ep[to.idx()].cfg.name.ty;
        let rng = self.ep[from.idx()].rng();
        let cfg = self.ep[from.idx()].cfg.clone();
        let c = Connection::outgoing(cfg, rng, target, ty, self.now);
        self.ep[from.idx()].conns.push(c);
        self.ep[from.idx()].conns.len() - 1
    }

    pub fn conn(&mut self, side: Side, i: usize) -> &mut Connection {
        &mut self.ep[side.idx()].conns[i]
    }

    /// Sessions of one side that are not closed (excluding handed-off incoming ones).
    pub fn live(&self, side: Side) -> Vec<&Connection> {
        self.ep[side.idx()]
            .conns
            .iter()
            .filter(|c| c.state() != State::Closed)
            .collect()
    }

    pub fn send(&mut self, side: Side, i: usize, msg: Message) {
        self.ep[side.idx()].conns[i]
            .send(msg)
            .expect("send on a closed session");
    }

    /// Break every live link (both ends see a transport failure).
    pub fn break_links(&mut self) {
        let ids: Vec<LinkId> = self
            .links
            .iter()
            .filter(|l| l.alive)
            .map(|l| l.id)
            .collect();
        for id in ids {
            self.kill_link(id);
        }
    }

    fn kill_link(&mut self, id: LinkId) {
        if let Some(l) = self.links.iter_mut().find(|l| l.id == id) {
            l.alive = false;
            l.pipes = [VecDeque::new(), VecDeque::new()];
        }
        let now = self.now;
        for ep in &mut self.ep {
            for c in &mut ep.conns {
                c.link_failed(
                    id,
                    crate::proto::Error::Transport("test: link broken".into()),
                    now,
                );
            }
        }
    }

    /// One round: timeouts, events, byte transfer. Returns true if anything happened.
    pub fn step(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        for ep in &mut self.ep {
            for c in &mut ep.conns {
                if c.poll_timeout().is_some_and(|t| t <= now) {
                    c.handle_timeout(now);
                }
            }
        }
        progress |= self.process_events();
        progress |= self.transfer();
        progress |= self.process_events();
        progress
    }

    fn process_events(&mut self) -> bool {
        let mut progress = false;
        for side in [Side::A, Side::B] {
            let mut i = 0;
            while i < self.ep[side.idx()].conns.len() {
                while let Some(ev) = self.ep[side.idx()].conns[i].poll_event() {
                    progress = true;
                    self.on_event(side, i, ev);
                }
                i += 1;
            }
        }
        progress
    }

    fn on_event(&mut self, side: Side, i: usize, ev: Event) {
        let now = self.now;
        let ep = &mut self.ep[side.idx()];
        match ev {
            Event::Message(m) => {
                ep.log.push(format!("message {}", m.seq));
                ep.delivered.push(m);
            }
            Event::ReconnectDue => {
                ep.log.push("reconnect_due".into());
                let id = self.next_link;
                self.next_link += 1;
                self.links.push(Link {
                    id,
                    client: side,
                    pipes: [VecDeque::new(), VecDeque::new()],
                    alive: true,
                });
                self.ep[side.idx()].conns[i].start_link(id, now);
                let other = side.other();
                let rng = self.ep[other.idx()].rng();
                let cfg = self.ep[other.idx()].cfg.clone();
                self.ep[other.idx()]
                    .conns
                    .push(Connection::incoming(cfg, rng, id, now));
            }
            Event::AcceptRequest(req) => {
                ep.log.push(format!("accept_request {:?}", req.attempt));
                let my_addr = ep.cfg.addrs.0[0];
                let we_are_server = ep.cfg.policies.get(req.peer_type).server;
                let existing = ep
                    .conns
                    .iter()
                    .position(|c| c.peer().addr == req.peer_addr && c.existing_view().is_some());
                let view = existing.and_then(|e| ep.conns[e].existing_view());
                let d = decide(
                    view.as_ref(),
                    &req.attempt,
                    &req.peer_addr,
                    &my_addr,
                    we_are_server,
                );
                ep.log.push(format!("decision {d:?}"));
                match (d, existing) {
                    (Decision::Adopt { reset }, Some(e)) => {
                        let handoff = ep.conns[i].take_handoff().expect("handoff");
                        ep.conns[e].adopt(handoff, reset, now);
                    }
                    (d, _) => ep.conns[i].decide_accept(d, now),
                }
            }
            Event::LinkClosed {
                link,
                error,
                initiator,
            } => {
                ep.log
                    .push(format!("link_closed {link} {initiator:?} {error}"));
                // Deliver the farewell bytes, then the transport is gone.
                let mut t = Transmit::new();
                if ep.conns[i].poll_transmit(link, now, &mut t) {
                    let bytes = t.to_vec();
                    self.push_bytes(side, link, bytes);
                }
                self.deliver_all(link);
                self.kill_link(link);
            }
            Event::Connected { resumed } => ep.log.push(format!("connected resumed={resumed}")),
            Event::Accepted { resumed } => ep.log.push(format!("accepted resumed={resumed}")),
            Event::Reset => ep.log.push("reset".into()),
            Event::RemoteReset => ep.log.push("remote_reset".into()),
            Event::Refused(e) => ep.log.push(format!("refused {e}")),
            Event::ChunkedAborted {
                tid,
                code,
                received,
                ..
            } => ep.log.push(format!(
                "chunk_aborted tid={tid} code={code} received={received}"
            )),
        }
    }

    fn push_bytes(&mut self, from: Side, link: LinkId, bytes: Vec<u8>) {
        let bytes = match &mut self.tamper {
            Some(t) => t(from, link, bytes),
            None => bytes,
        };
        if let Some(l) = self.links.iter_mut().find(|l| l.id == link && l.alive) {
            l.pipes[from.other().idx()].extend(bytes);
        }
    }

    fn deliver_all(&mut self, link: LinkId) {
        for to in [Side::A, Side::B] {
            let data: Vec<u8> = match self.links.iter_mut().find(|l| l.id == link && l.alive) {
                Some(l) => l.pipes[to.idx()].drain(..).collect(),
                None => return,
            };
            if data.is_empty() {
                continue;
            }
            self.feed(to, link, &data);
        }
    }

    fn feed(&mut self, to: Side, link: LinkId, data: &[u8]) {
        let now = self.now;
        let max = self.max_chunk.max(1);
        for chunk in data.chunks(max) {
            if let Some(c) = self.ep[to.idx()]
                .conns
                .iter_mut()
                .find(|c| c.link_id() == Some(link))
            {
                let buf = self.bufs.entry((to.idx(), link)).or_default();
                buf.extend_from_slice(chunk);
                c.handle_input(link, buf, now);
            }
        }
    }

    fn transfer(&mut self) -> bool {
        let mut progress = false;
        let ids: Vec<(LinkId, Side)> = self
            .links
            .iter()
            .filter(|l| l.alive)
            .map(|l| (l.id, l.client))
            .collect();
        for (id, _) in ids {
            for from in [Side::A, Side::B] {
                let now = self.now;
                let mut t = Transmit::new();
                let mut got = Vec::new();
                for c in self.ep[from.idx()].conns.iter_mut() {
                    while c.poll_transmit(id, now, &mut t) {
                        got.extend(t.to_vec());
                        t.clear();
                    }
                }
                if !got.is_empty() {
                    progress = true;
                    self.push_bytes(from, id, got);
                }
            }
            self.deliver_all(id);
        }
        progress
    }

    /// Step until quiet; then let virtual time run to the next deadline, at most
    /// `max_steps` rounds in all (a livelock fails the test).
    pub fn drive_for(&mut self, budget: Duration, max_steps: usize) {
        let end = self.now + budget;
        for _ in 0..max_steps {
            if self.step() {
                continue;
            }
            let next = self
                .ep
                .iter()
                .flat_map(|e| e.conns.iter())
                .filter_map(|c| c.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => return,
            }
        }
        panic!("drive_for: no quiescence after {max_steps} steps (livelock?)");
    }

    /// Step until nothing happens without advancing time.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("drive: still busy after 10,000 steps (livelock?)");
    }
}
