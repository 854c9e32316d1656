//! Sockets: option setup, listeners, connects with a timeout, and a split stream.
//!
//! A connection's reader and writer threads each own one half of a [`Transport`]
//! (two `try_clone`s of one socket). Dropping or [`Shutdown::shutdown`]-ing either half
//! shuts the socket down in both directions, which wakes the other thread: a reader
//! blocked in `read` returns 0 or an error at once. A [`ShutdownHandle`] does the same
//! from any third thread (the messenger's `mark_down`).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

use super::config::Config;

/// Something that can shut its socket down, from any thread, through a shared reference.
pub trait Shutdown {
    /// Shut the socket down in both directions. Idempotent; later reads return 0 or an error.
    fn shutdown(&self) -> io::Result<()>;
}

/// Apply the per-socket options of `cfg` (TCP_NODELAY, buffer sizes, TCP keepalive)
/// to a connected or accepted stream.
pub fn configure_stream(stream: &TcpStream, cfg: &Config) -> io::Result<()> {
    stream.set_nodelay(cfg.tcp_nodelay)?;
    let sock = SockRef::from(stream);
    apply_buffers(&sock, cfg)?;
    if !cfg.tcp_keepalive.is_zero() {
        let interval = (cfg.tcp_keepalive / 4).max(Duration::from_secs(1));
        let ka = TcpKeepalive::new()
            .with_time(cfg.tcp_keepalive)
            .with_interval(interval);
        sock.set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

fn apply_buffers(sock: &SockRef<'_>, cfg: &Config) -> io::Result<()> {
    if cfg.tcp_rcvbuf > 0 {
        sock.set_recv_buffer_size(cfg.tcp_rcvbuf)?;
    }
    if cfg.tcp_sndbuf > 0 {
        sock.set_send_buffer_size(cfg.tcp_sndbuf)?;
    }
    Ok(())
}

/// A listening socket on `addr` with SO_REUSEADDR and `cfg.listen_backlog`.
///
/// Buffer sizes are set on the listener so that accepted sockets inherit them before
/// the handshake (SO_RCVBUF must be set before `listen` to affect the window scale).
pub fn bind_listener(addr: SocketAddr, cfg: &Config) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Bind exactly what was asked for; dual-stack is an explicit second address.
        sock.set_only_v6(true)?;
    }
    apply_buffers(&SockRef::from(&sock), cfg)?;
    sock.bind(&addr.into())?;
    let backlog = i32::try_from(cfg.listen_backlog).unwrap_or(i32::MAX);
    sock.listen(backlog)?;
    Ok(sock.into())
}

/// Connect to `addr`, giving up after `timeout`, and apply the options of `cfg`.
///
/// Buffer sizes are set before connecting so that they take part in the TCP handshake.
pub fn connect(addr: SocketAddr, timeout: Duration, cfg: &Config) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    apply_buffers(&SockRef::from(&sock), cfg)?;
    let timeout = if timeout.is_zero() {
        Duration::from_millis(1)
    } else {
        timeout
    };
    sock.connect_timeout(&addr.into(), timeout)?;
    let stream: TcpStream = sock.into();
    configure_stream(&stream, cfg)?;
    Ok(stream)
}

/// One connected socket, to be split into a [`ReadHalf`] and a [`WriteHalf`].
#[derive(Debug)]
pub struct Transport {
    read: ReadHalf,
    write: WriteHalf,
    peer: SocketAddr,
    local: SocketAddr,
}

impl Transport {
    /// Take ownership of a connected stream.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        let peer = stream.peer_addr()?;
        let local = stream.local_addr()?;
        let other = stream.try_clone()?;
        Ok(Transport {
            read: ReadHalf { stream },
            write: WriteHalf { stream: other },
            peer,
            local,
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Our address on this connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A handle that can shut the socket down from any thread.
    pub fn shutdown_handle(&self) -> io::Result<ShutdownHandle> {
        Ok(ShutdownHandle {
            stream: self.read.stream.try_clone()?,
        })
    }

    /// The two halves, for the reader and the writer thread.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }
}

fn shutdown_both(stream: &TcpStream) -> io::Result<()> {
    match stream.shutdown(NetShutdown::Both) {
        // Already shut down or reset by the peer: the goal is reached.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

/// The reading half. Shuts the whole socket down when dropped.
#[derive(Debug)]
pub struct ReadHalf {
    stream: TcpStream,
}

impl ReadHalf {
    /// Bound every blocking read (the idle timeout); `None` = wait forever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

/// Reading into a `Vec`'s spare capacity, which is never zeroed first (a large
/// frame's bytes are written once, by the kernel).
pub trait ReadAppend: Read {
    /// Append `n` bytes to `v`, blocking until they are all there or the stream ends
    /// or fails; returns how many were appended. On an error, what was read before it
    /// is appended too.
    fn read_append(&mut self, v: &mut Vec<u8>, n: usize) -> io::Result<usize>;
}

impl ReadAppend for ReadHalf {
    fn read_append(&mut self, v: &mut Vec<u8>, n: usize) -> io::Result<usize> {
        let before = v.len();
        v.reserve(n);
        // `Take<&TcpStream>::read_to_end` reads into uninitialized capacity.
        (&self.stream).take(n as u64).read_to_end(v)?;
        Ok(v.len() - before)
    }
}

impl Shutdown for ReadHalf {
    fn shutdown(&self) -> io::Result<()> {
        shutdown_both(&self.stream)
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure while dropping.
        let _ = shutdown_both(&self.stream);
    }
}

/// The writing half. Shuts the whole socket down when dropped.
#[derive(Debug)]
pub struct WriteHalf {
    stream: TcpStream,
}

impl WriteHalf {
    /// Write what the kernel takes right now without blocking (`MSG_DONTWAIT`):
    /// `Err(WouldBlock)` if it takes nothing. Only on Linux; elsewhere always
    /// `WouldBlock`, so callers fall back to the writer thread.
    pub fn write_vectored_nonblocking(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            /// `MSG_DONTWAIT` on Linux.
            const MSG_DONTWAIT: std::os::raw::c_int = 0x40;
            socket2::SockRef::from(&self.stream).send_vectored_with_flags(bufs, MSG_DONTWAIT)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = bufs;
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Bound every blocking write (a peer that stopped reading); `None` = wait forever.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_write_timeout(timeout)
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Shutdown for WriteHalf {
    fn shutdown(&self) -> io::Result<()> {
        shutdown_both(&self.stream)
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure while dropping.
        let _ = shutdown_both(&self.stream);
    }
}

/// Shuts a connection's socket down from any thread. Does not shut down on drop.
#[derive(Debug)]
pub struct ShutdownHandle {
    stream: TcpStream,
}

impl ShutdownHandle {
    /// The connection's maximum segment size (TCP_MAXSEG), if the OS reports it.
    pub fn mss(&self) -> Option<u32> {
        SockRef::from(&self.stream).tcp_mss().ok()
    }

    /// Set TCP_NOTSENT_LOWAT (Linux and Android; elsewhere an `Unsupported` error).
    pub fn set_notsent_lowat(&self, bytes: u32) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            SockRef::from(&self.stream).set_tcp_notsent_lowat(bytes)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = bytes;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "TCP_NOTSENT_LOWAT is not available on this OS",
            ))
        }
    }

    /// Set SO_SNDBUF / SO_RCVBUF of the (connected) socket; `None` leaves one alone.
    /// The kernel doubles the value and stops autotuning that buffer.
    pub fn set_buffers(&self, snd: Option<usize>, rcv: Option<usize>) -> io::Result<()> {
        let sock = SockRef::from(&self.stream);
        if let Some(n) = snd {
            sock.set_send_buffer_size(n)?;
        }
        if let Some(n) = rcv {
            sock.set_recv_buffer_size(n)?;
        }
        Ok(())
    }
}

impl Shutdown for ShutdownHandle {
    fn shutdown(&self) -> io::Result<()> {
        shutdown_both(&self.stream)
    }
}

/// Write every byte of `bufs`, with as few system calls as the kernel allows.
pub fn write_all_vectored(w: &mut impl Write, bufs: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0; // first buffer not fully written
    let mut off = 0; // bytes of bufs[idx] already written
    while idx < bufs.len() {
        let mut slices = Vec::with_capacity(bufs.len() - idx);
        slices.push(IoSlice::new(&bufs[idx][off..]));
        slices.extend(bufs[idx + 1..].iter().map(|b| IoSlice::new(b)));
        let mut n = match w.write_vectored(&slices) {
            Ok(0) if slices.iter().any(|s| !s.is_empty()) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while idx < bufs.len() && n >= bufs[idx].len() - off {
            n -= bufs[idx].len() - off;
            idx += 1;
            off = 0;
        }
        off += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_write_handles_partial_writes() {
        /// Accepts at most 3 bytes per call.
        struct Dribble(Vec<u8>);
        impl Write for Dribble {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let n = b.len().min(3);
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut d = Dribble(Vec::new());
        write_all_vectored(&mut d, &[b"ab", b"", b"cdefg", b"h"]).unwrap();
        assert_eq!(d.0, b"abcdefgh");
    }

    #[test]
    fn listener_and_connect_apply_options() {
        let cfg = Config {
            tcp_rcvbuf: 256 * 1024,
            tcp_sndbuf: 256 * 1024,
            ..Config::default()
        };
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let addr = l.local_addr().unwrap();
        let c = connect(addr, Duration::from_secs(5), &cfg).unwrap();
        assert!(c.nodelay().unwrap());
        assert!(SockRef::from(&c).keepalive().unwrap());
        assert!(SockRef::from(&c).recv_buffer_size().unwrap() >= 256 * 1024);
        let (s, _) = l.accept().unwrap();
        configure_stream(&s, &cfg).unwrap();
        assert!(s.nodelay().unwrap());
        let t = Transport::new(c).unwrap();
        assert_eq!(t.peer_addr(), addr);
    }

    #[test]
    fn buffers_can_be_bounded_after_connecting() {
        let cfg = Config::default();
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let c = connect(l.local_addr().unwrap(), Duration::from_secs(5), &cfg).unwrap();
        let t = Transport::new(c).unwrap();
        let h = t.shutdown_handle().unwrap();
        let (read, _write) = t.split();
        let rcv_before = SockRef::from(&read.stream).recv_buffer_size().unwrap();
        h.set_buffers(Some(32 * 1024), None).unwrap();
        let snd = SockRef::from(&read.stream).send_buffer_size().unwrap();
        // Linux doubles the value for bookkeeping; other systems take it as is.
        assert!((32 * 1024..=64 * 1024).contains(&snd), "{snd}");
        assert_eq!(
            SockRef::from(&read.stream).recv_buffer_size().unwrap(),
            rcv_before,
            "None leaves a buffer alone"
        );
        h.set_buffers(None, Some(48 * 1024)).unwrap();
        let rcv = SockRef::from(&read.stream).recv_buffer_size().unwrap();
        assert!((48 * 1024..=96 * 1024).contains(&rcv), "{rcv}");
    }
}
