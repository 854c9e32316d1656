//! The user's side of the messenger: callbacks for messages and connection events.
//!
//! Callbacks run on messenger threads with no messenger lock held (STYLE habit 9), so
//! a callback may send messages or mark connections down. A callback that blocks holds
//! up its connection's reader (and, through the throttles, the peer): hand long work to
//! another thread, or use [`ChannelDispatcher`].

use std::fmt;

use crossbeam_channel::{Receiver, Sender};

use super::{ConnectionRef, Error};
use crate::wire::message::Message;

/// Receives messages and connection events (Ceph's `Dispatcher`).
pub trait Dispatcher: Send + Sync + 'static {
    /// A message arrived on `conn`, in order for that connection.
    fn dispatch(&self, conn: &ConnectionRef, msg: Message);

    /// An outgoing connection finished its handshake.
    fn handle_connect(&self, conn: &ConnectionRef) {
        let _ = conn;
    }

    /// An incoming connection finished its handshake.
    fn handle_accept(&self, conn: &ConnectionRef) {
        let _ = conn;
    }

    /// A lossy connection failed: messages on it may have been lost.
    fn handle_reset(&self, conn: &ConnectionRef) {
        let _ = conn;
    }

    /// The peer reset its session: it forgot what it received from us.
    fn handle_remote_reset(&self, conn: &ConnectionRef) {
        let _ = conn;
    }

    /// The connection was refused for a permanent reason (auth, features, limits);
    /// it will not be retried.
    fn handle_refused(&self, conn: &ConnectionRef, err: &Error) {
        let _ = (conn, err);
    }
}

/// One dispatcher callback, as a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// [`Dispatcher::dispatch`].
    Message(ConnectionRef, Message),
    /// [`Dispatcher::handle_connect`].
    Connect(ConnectionRef),
    /// [`Dispatcher::handle_accept`].
    Accept(ConnectionRef),
    /// [`Dispatcher::handle_reset`].
    Reset(ConnectionRef),
    /// [`Dispatcher::handle_remote_reset`].
    RemoteReset(ConnectionRef),
    /// [`Dispatcher::handle_refused`], with the error rendered as text (errors are not `Clone`).
    Refused(ConnectionRef, String),
}

impl Event {
    /// The connection the event is about.
    pub fn conn(&self) -> &ConnectionRef {
        match self {
            Event::Message(c, _)
            | Event::Connect(c)
            | Event::Accept(c)
            | Event::Reset(c)
            | Event::RemoteReset(c)
            | Event::Refused(c, _) => c,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.conn();
        match self {
            Event::Message(_, m) => write!(f, "conn {} ({}): message {m:?}", c.id, c.peer),
            Event::Connect(_) => write!(f, "conn {} ({}): connected", c.id, c.peer),
            Event::Accept(_) => write!(f, "conn {} ({}): accepted", c.id, c.peer),
            Event::Reset(_) => write!(f, "conn {} ({}): reset", c.id, c.peer),
            Event::RemoteReset(_) => write!(f, "conn {} ({}): remote reset", c.id, c.peer),
            Event::Refused(_, e) => write!(f, "conn {} ({}): refused: {e}", c.id, c.peer),
        }
    }
}

/// Forwards every callback as an [`Event`] into a channel (tests and examples).
///
/// The channel is unbounded, so callbacks never block; if the receiver is gone,
/// events are dropped.
#[derive(Debug, Clone)]
pub struct ChannelDispatcher {
    tx: Sender<Event>,
}

impl ChannelDispatcher {
    /// A dispatcher and the receiving end of its events.
    pub fn new() -> (Self, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (ChannelDispatcher { tx }, rx)
    }

    fn send(&self, ev: Event) {
        // A dropped receiver means nobody is listening any more; that is not an error.
        let _ = self.tx.send(ev);
    }
}

impl Dispatcher for ChannelDispatcher {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        self.send(Event::Message(conn.clone(), msg));
    }
    fn handle_connect(&self, conn: &ConnectionRef) {
        self.send(Event::Connect(conn.clone()));
    }
    fn handle_accept(&self, conn: &ConnectionRef) {
        self.send(Event::Accept(conn.clone()));
    }
    fn handle_reset(&self, conn: &ConnectionRef) {
        self.send(Event::Reset(conn.clone()));
    }
    fn handle_remote_reset(&self, conn: &ConnectionRef) {
        self.send(Event::RemoteReset(conn.clone()));
    }
    fn handle_refused(&self, conn: &ConnectionRef, err: &Error) {
        self.send(Event::Refused(conn.clone(), err.to_string()));
    }
}

/// A dispatcher from a closure over messages; connection events are ignored.
pub struct FnDispatcher<F> {
    f: F,
}

impl<F> FnDispatcher<F>
where
    F: Fn(&ConnectionRef, Message) + Send + Sync + 'static,
{
    /// Call `f` for every message.
    pub fn new(f: F) -> Self {
        FnDispatcher { f }
    }
}

impl<F> fmt::Debug for FnDispatcher<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnDispatcher")
    }
}

impl<F> Dispatcher for FnDispatcher<F>
where
    F: Fn(&ConnectionRef, Message) + Send + Sync + 'static,
{
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        (self.f)(conn, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::{AddrType, EntityAddr};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn conn(id: u64) -> ConnectionRef {
        ConnectionRef::detached(
            id,
            EntityAddr::new(AddrType::MSGR2, "127.0.0.1:3300".parse().unwrap(), 7),
        )
    }

    #[test]
    fn channel_dispatcher_forwards_every_callback_in_order() {
        let (d, rx) = ChannelDispatcher::new();
        let d: Arc<dyn Dispatcher> = Arc::new(d);
        let c = conn(1);
        d.handle_connect(&c);
        d.dispatch(&c, Message::new(42, &b"hi"[..]));
        d.handle_accept(&c);
        d.handle_reset(&c);
        d.handle_remote_reset(&c);
        d.handle_refused(
            &c,
            &Error::Refused {
                reason: "no common auth method".into(),
            },
        );
        let got: Vec<Event> = rx.try_iter().collect();
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], Event::Connect(c.clone()));
        match &got[1] {
            Event::Message(cc, m) => assert_eq!((cc.id, m.ty, &m.front[..]), (1, 42, &b"hi"[..])),
            e => panic!("unexpected {e}"),
        }
        assert_eq!(
            got[5],
            Event::Refused(
                c.clone(),
                "connection refused: no common auth method".into()
            )
        );
        assert!(got[5].to_string().contains("refused"));
        drop(rx);
        d.handle_connect(&c); // receiver gone: silently dropped
    }

    #[test]
    fn fn_dispatcher_calls_closure_and_ignores_events() {
        let n = Arc::new(AtomicU64::new(0));
        let n2 = Arc::clone(&n);
        let d = FnDispatcher::new(move |c: &ConnectionRef, m: Message| {
            n2.fetch_add(c.id + u64::from(m.ty), Ordering::Relaxed);
        });
        d.dispatch(&conn(3), Message::new(4, &b""[..]));
        d.handle_reset(&conn(3));
        assert_eq!(n.load(Ordering::Relaxed), 7);
    }
}
