//! Method NONE (docs/PROTOCOL.md §4.3): one empty client AUTH, no server AUTH, no key.

use super::{AuthError, ClientAuth, Method, Random, ServerAuth, Step};

/// The client side of NONE: `start` returns the empty payload and the exchange is complete at once.
#[derive(Debug, Default)]
pub struct NoneClient {
    started: bool,
}

impl NoneClient {
    /// A fresh exchange.
    pub fn new() -> Self {
        NoneClient::default()
    }
}

impl ClientAuth for NoneClient {
    fn method(&self) -> Method {
        Method::NONE
    }

    fn start(&mut self, _rng: &mut dyn Random) -> Vec<u8> {
        self.started = true;
        Vec::new()
    }

    fn handle(&mut self, _payload: &[u8]) -> Result<Step, AuthError> {
        // §4.3: "The server sends no AUTH for NONE".
        Err(AuthError::Malformed(
            "the server sent an AUTH frame, but method NONE has none",
        ))
    }

    fn session_key(&self) -> Option<&[u8]> {
        self.started.then_some(&[][..])
    }
}

/// The server side of NONE: complete on the client's (empty) AUTH.
#[derive(Debug, Default)]
pub struct NoneServer {
    done: bool,
}

impl NoneServer {
    /// A fresh exchange.
    pub fn new() -> Self {
        NoneServer::default()
    }
}

impl ServerAuth for NoneServer {
    fn method(&self) -> Method {
        Method::NONE
    }

    fn handle(&mut self, payload: &[u8], _rng: &mut dyn Random) -> Result<Step, AuthError> {
        if self.done {
            return Err(AuthError::Malformed("a second AUTH frame for method NONE"));
        }
        // §4.3: "The client sends one AUTH with an empty payload".
        if !payload.is_empty() {
            return Err(AuthError::Malformed(
                "the AUTH payload of method NONE must be empty",
            ));
        }
        self.done = true;
        Ok(Step::Done)
    }

    fn session_key(&self) -> Option<&[u8]> {
        self.done.then_some(&[][..])
    }

    fn peer_name(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::CountingRng;

    #[test]
    fn none_exchange_completes_with_an_empty_key() {
        let mut rng = CountingRng(0);
        let mut c = NoneClient::new();
        assert_eq!(c.session_key(), None);
        let first = c.start(&mut rng);
        assert!(first.is_empty());
        assert_eq!(c.session_key(), Some(&[][..]));

        let mut s = NoneServer::new();
        assert_eq!(s.session_key(), None);
        assert_eq!(s.handle(&first, &mut rng), Ok(Step::Done));
        assert_eq!(s.session_key(), Some(&[][..]));
        assert_eq!(s.peer_name(), None);
        assert_eq!(s.method(), Method::NONE);
    }

    #[test]
    fn none_rejects_payloads_and_extra_frames() {
        let mut rng = CountingRng(0);
        let mut s = NoneServer::new();
        assert!(matches!(
            s.handle(&[0], &mut rng),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(s.session_key(), None);
        assert_eq!(s.handle(&[], &mut rng), Ok(Step::Done));
        assert!(matches!(
            s.handle(&[], &mut rng),
            Err(AuthError::Malformed(_))
        ));

        let mut c = NoneClient::new();
        c.start(&mut rng);
        assert!(matches!(c.handle(&[]), Err(AuthError::Malformed(_))));
    }
}
