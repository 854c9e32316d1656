//! Telling a v1 client from an msgr2 client on one listening port.
//!
//! Both kinds of client speak first: v1 sends `ceph v027`, msgr2 sends
//! `ceph <hex> <hex>\n`. The server waits (bounded) for the first
//! [`PREFIX_LEN`] bytes without sending anything, and classifies them.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::wire::msgr2::Banner;
use crate::wire::v1::BANNER;

/// How many bytes are enough to decide.
pub const PREFIX_LEN: usize = 6;

/// Longest single wait for bytes before [`detect`] asks whether to stop.
pub const STOP_CHECK: Duration = Duration::from_millis(100);

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Legacy v1 (`ceph v`).
    V1,
    /// msgr2 (`ceph ` and a hex digit), or anything else: the msgr2 machine then
    /// reports what is wrong with the banner.
    V2,
}

/// Classify the first [`PREFIX_LEN`] bytes of a connection.
pub fn classify(prefix: &[u8]) -> Detected {
    if prefix.starts_with(b"ceph v") {
        Detected::V1
    } else {
        Detected::V2
    }
}

/// Read the client's whole banner from `stream`, waiting at most `timeout` in all,
/// and classify it by its first [`PREFIX_LEN`] bytes. Exactly the banner is read (a
/// v1 banner is 9 bytes; an msgr2 banner ends with its newline), so no byte of what
/// follows is taken from the socket: the returned bytes are the protocol machine's
/// first input and it consumes them whole. The read timeout is cleared afterwards.
///
/// `stop` is asked between reads (at least every [`STOP_CHECK`]): when it says true
/// (the messenger shuts down) the wait ends early with [`io::ErrorKind::Interrupted`].
pub fn detect(
    stream: &mut TcpStream,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
) -> io::Result<(Detected, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(Banner::MAX_LEN);
    let r = read_banner(stream, deadline, stop, &mut buf);
    stream.set_read_timeout(None)?;
    r?;
    Ok((classify(&buf), buf))
}

fn read_banner(
    stream: &mut TcpStream,
    deadline: Instant,
    stop: &dyn Fn() -> bool,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    read_upto(stream, deadline, stop, buf, PREFIX_LEN)?;
    match classify(buf) {
        Detected::V1 => read_upto(stream, deadline, stop, buf, BANNER.len()),
        Detected::V2 => {
            // One byte at a time up to the newline: the client pipelines frames after it.
            while buf.last() != Some(&b'\n') && buf.len() < Banner::MAX_LEN {
                let want = buf.len() + 1;
                read_upto(stream, deadline, stop, buf, want)?;
            }
            Ok(())
        }
    }
}

/// Read until `buf` holds `len` bytes, or fail at `deadline` or end of stream.
fn read_upto(
    stream: &mut TcpStream,
    deadline: Instant,
    stop: &dyn Fn() -> bool,
    buf: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    let mut chunk = [0u8; 16];
    while buf.len() < len {
        if stop() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "shutting down while waiting for a banner",
            ));
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(STOP_CHECK);
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete banner within the handshake timeout",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let want = (len - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before sending a complete banner",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A read timeout (WouldBlock on Unix): the deadline check above decides.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_are_told_apart() {
        assert_eq!(classify(b"ceph v027"), Detected::V1);
        assert_eq!(classify(b"ceph 1 0\n"), Detected::V2);
        assert_eq!(classify(b"ceph a"), Detected::V2);
        assert_eq!(classify(b"GET / "), Detected::V2);
    }

    #[test]
    fn detect_reads_exactly_the_prefix_and_times_out_on_silence() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let mut c = TcpStream::connect(a).unwrap();
        let (mut s, _) = l.accept().unwrap();
        // Silence: bounded by the timeout.
        let e = detect(&mut s, Duration::from_millis(50), &|| false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Split delivery.
        c.write_all(b"cep").unwrap();
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c.write_all(b"h v027").unwrap();
            c
        });
        let (d, got) = detect(&mut s, Duration::from_secs(5), &|| false).unwrap();
        assert_eq!((d, &got[..]), (Detected::V1, &b"ceph v027"[..]));
        let mut c = w.join().unwrap();
        // msgr2: exactly up to the newline; the pipelined frame stays in the socket.
        let (mut c2, mut s2) = (TcpStream::connect(a).unwrap(), l.accept().unwrap().0);
        c2.write_all(b"ceph 1 0\nFRAME").unwrap();
        let (d, got) = detect(&mut s2, Duration::from_secs(5), &|| false).unwrap();
        assert_eq!((d, &got[..]), (Detected::V2, &b"ceph 1 0\n"[..]));
        let mut rest = [0u8; 5];
        s2.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"FRAME");
        c.write_all(b"x").unwrap();
    }
}
