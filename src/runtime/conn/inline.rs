//! Writes made by a thread other than the session's writer: a sparse `send` on an idle
//! pipe, and a reader flushing the replies its dispatch callbacks queued. Both take the
//! bytes from the state machine and the link's write lock while the session is locked
//! (so bytes go out in the order they were produced), then write without blocking and
//! leave whatever the kernel did not take to the writer thread.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use log::debug;
use parking_lot::MutexGuard;

use crate::proto::LinkId;
use crate::wire::transmit::Transmit;

use super::super::messenger::Inner;
use super::{ConnShared, ConnState, LinkIo, LinkWriter};

thread_local! {
    /// The session whose events this thread is dispatching, if it is a reader thread
    /// inside `handle_events`, and whether a callback deferred a wake-up to the flush.
    static DISPATCHING: Cell<Option<(u64, bool)>> = const { Cell::new(None) };
}

/// Run `f` (a batch of dispatch callbacks of session `id`) with this thread marked as
/// dispatching it: replies sent from the callbacks wait for [`flush_after_dispatch`]
/// instead of waking the writer thread one by one. Returns `f`'s result and whether a
/// callback deferred a wake-up (then the caller must flush).
pub(super) fn dispatching<R>(id: u64, f: impl FnOnce() -> R) -> (R, bool) {
    struct Restore(Option<(u64, bool)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DISPATCHING.with(|d| d.set(self.0));
        }
    }
    let restore = Restore(DISPATCHING.with(|d| d.replace(Some((id, false)))));
    let r = f();
    let deferred = DISPATCHING
        .with(|d| d.get())
        .is_some_and(|(_, deferred)| deferred);
    drop(restore);
    (r, deferred)
}

/// If this thread is dispatching session `id` (see [`dispatching`]), note that a
/// wake-up of its writer is left to the flush after the batch, and return true.
pub(super) fn defer_wake(id: u64) -> bool {
    DISPATCHING.with(|d| match d.get() {
        Some((current, _)) if current == id => {
            d.set(Some((id, true)));
            true
        }
        _ => false,
    })
}

impl ConnState {
    /// The current link and its socket, if one is attached.
    pub(super) fn current_io(&self) -> Option<(LinkId, Arc<LinkIo>)> {
        let link = self.proto.link_id()?;
        self.links.get(&link).cloned().map(|io| (link, io))
    }
}

/// With the session locked: if nobody is writing to `lio` and nothing is pending on
/// it, take the bytes ready for `link` into `out` and return the held write lock.
pub(super) fn take<'a>(
    st: &mut ConnState,
    link: LinkId,
    lio: &'a LinkIo,
    now: Instant,
    out: &mut Transmit,
) -> Option<MutexGuard<'a, LinkWriter>> {
    let guard = lio.write.try_lock()?;
    if !guard.pending.is_empty() || !st.proto.poll_transmit(link, now, out) {
        return None;
    }
    Some(guard)
}

/// With the session unlocked: write `out` without blocking (what the kernel does not
/// take stays pending for the writer thread). Returns whether the writer thread is
/// needed: for leftovers, for what others queued meanwhile (it may have parked while
/// we held the link), or for a timer that now falls due earlier.
pub(super) fn finish(
    shared: &ConnShared,
    inner: Option<&Inner>,
    link: LinkId,
    lio: &LinkIo,
    mut w: MutexGuard<'_, LinkWriter>,
    out: Transmit,
) -> bool {
    let len = out.len() as u64;
    let r = w.write_some(out);
    drop(w);
    match r {
        Ok(all_written) => {
            if let Some(inner) = inner {
                inner.stats.add_bytes_out(len);
            }
            !all_written || shared.state.lock().writer_needed(Some(link))
        }
        // Not `fail` here: this may run inside a dispatch callback, and `fail`'s
        // ordered batch would wait for the turn its caller holds (a self-deadlock).
        // Shut the socket instead: the link's reader sees the error and fails the link
        // on its own thread.
        Err(e) => {
            debug!("conn#{} link {link}: write: {e}", shared.id);
            lio.close();
            true
        }
    }
}

/// After a batch of dispatch callbacks on a reader thread: send what they queued for
/// this session (typically replies) in one non-blocking write when the writer thread
/// is parked, instead of waking it for each reply; wake it for whatever is left.
pub(super) fn flush_after_dispatch(inner: &Inner, shared: &ConnShared) {
    let now = Instant::now();
    let mut out = Transmit::new();
    let io;
    let mut guard = None;
    let wake = {
        let mut st = shared.state.lock();
        if st.writer_parked_until.is_none() {
            // The writer is working: it reads the queue again before it parks.
            return;
        }
        io = st.current_io();
        if let Some((link, lio)) = &io {
            guard = take(&mut st, *link, lio, now, &mut out);
        }
        guard.is_none() && st.writer_needed(io.as_ref().map(|(l, _)| *l))
    };
    let wake = match (&io, guard) {
        (Some((link, lio)), Some(w)) => finish(shared, Some(inner), *link, lio, w, out),
        _ => wake,
    };
    if wake {
        shared.wake();
    }
}
