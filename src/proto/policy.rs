//! Per-peer-type connection policies, after Ceph's `Messenger::Policy`.
//!
//! A policy says what happens when a connection to a peer of some type breaks:
//! whether messages may be lost (`lossy`), whether this side ever reconnects
//! (`server`), whether an idle client waits in standby instead of reconnecting
//! (`standby`), and whether a peer's session reset is detected (`resetcheck`).

use crate::wire::types::EntityType;

/// How this side treats sessions with one type of peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// On a fault the session is dropped, not re-established; nothing is replayed.
    pub lossy: bool,
    /// This side never reconnects; after a fault it waits (standby) for the peer.
    pub server: bool,
    /// When the connection breaks with nothing queued, wait in standby until a
    /// message is sent instead of reconnecting at once.
    pub standby: bool,
    /// Detect that the peer reset its session (and report a remote reset).
    pub resetcheck: bool,
    /// Ceph feature bits the peer must support.
    pub features_required: u64,
}

impl Policy {
    /// Stateful server: keeps sessions, never reconnects (lossy=F, server=T, standby=T, resetcheck=T).
    pub const fn stateful_server() -> Self {
        Policy {
            lossy: false,
            server: true,
            standby: true,
            resetcheck: true,
            features_required: 0,
        }
    }

    /// Stateless server: forgets sessions on a fault (T, T, F, F).
    pub const fn stateless_server() -> Self {
        Policy {
            lossy: true,
            server: true,
            standby: false,
            resetcheck: false,
            features_required: 0,
        }
    }

    /// Lossless peer: both sides reconnect, standby when idle, no reset check (F, F, T, F).
    pub const fn lossless_peer() -> Self {
        Policy {
            lossy: false,
            server: false,
            standby: true,
            resetcheck: false,
            features_required: 0,
        }
    }

    /// Lossless peer that detects the peer's session resets (F, F, T, T).
    pub const fn lossless_peer_reuse() -> Self {
        Policy {
            lossy: false,
            server: false,
            standby: true,
            resetcheck: true,
            features_required: 0,
        }
    }

    /// Lossy client: a fault ends the session (T, F, F, F).
    pub const fn lossy_client() -> Self {
        Policy {
            lossy: true,
            server: false,
            standby: false,
            resetcheck: false,
            features_required: 0,
        }
    }

    /// Lossless client: reconnects and replays after faults (F, F, F, T).
    pub const fn lossless_client() -> Self {
        Policy {
            lossy: false,
            server: false,
            standby: false,
            resetcheck: true,
            features_required: 0,
        }
    }

    /// The same policy requiring `features` from the peer.
    pub const fn with_features_required(mut self, features: u64) -> Self {
        self.features_required = features;
        self
    }

    /// Parse a preset name (`stateful_server`, `lossless_client`, …).
    pub fn from_name(name: &str) -> Option<Policy> {
        Some(match name {
            "stateful_server" => Policy::stateful_server(),
            "stateless_server" => Policy::stateless_server(),
            "lossless_peer" => Policy::lossless_peer(),
            "lossless_peer_reuse" => Policy::lossless_peer_reuse(),
            "lossy_client" => Policy::lossy_client(),
            "lossless_client" => Policy::lossless_client(),
            _ => return None,
        })
    }
}

impl Default for Policy {
    /// Ceph's defaults: lossless, reconnecting, reset check on.
    fn default() -> Self {
        Policy {
            lossy: false,
            server: false,
            standby: false,
            resetcheck: true,
            features_required: 0,
        }
    }
}

/// The policy for each peer type, with a default for the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTable {
    /// For peer types without an entry.
    pub default: Policy,
    /// Per peer type.
    pub by_type: Vec<(EntityType, Policy)>,
}

impl PolicyTable {
    /// A table where every peer type gets `default`.
    pub fn new(default: Policy) -> Self {
        PolicyTable {
            default,
            by_type: Vec::new(),
        }
    }

    /// The policy for peers of type `ty`.
    pub fn get(&self, ty: EntityType) -> Policy {
        self.by_type
            .iter()
            .find(|(t, _)| *t == ty)
            .map_or(self.default, |(_, p)| *p)
    }

    /// Set the policy for peers of type `ty`.
    pub fn set(&mut self, ty: EntityType, policy: Policy) {
        match self.by_type.iter_mut().find(|(t, _)| *t == ty) {
            Some(entry) => entry.1 = policy,
            None => self.by_type.push((ty, policy)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_ceph() {
        let t = |p: Policy| (p.lossy, p.server, p.standby, p.resetcheck);
        assert_eq!(t(Policy::stateful_server()), (false, true, true, true));
        assert_eq!(t(Policy::stateless_server()), (true, true, false, false));
        assert_eq!(t(Policy::lossless_peer()), (false, false, true, false));
        assert_eq!(t(Policy::lossless_peer_reuse()), (false, false, true, true));
        assert_eq!(t(Policy::lossy_client()), (true, false, false, false));
        assert_eq!(t(Policy::lossless_client()), (false, false, false, true));
        assert_eq!(
            Policy::from_name("lossy_client"),
            Some(Policy::lossy_client())
        );
        assert_eq!(Policy::from_name("nope"), None);
    }
}
