//! Outgoing bytes as a list of chunks for `write_vectored`.
//!
//! Small pieces (frame headers, small frames, signatures) are copied into one internal
//! buffer and adjacent copies merge into one chunk, so a burst of small frames is one
//! `IoSlice`. Large shared payloads are kept as [`Bytes`] and never copied.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::Bytes;

/// Payloads at least this large are kept by reference in [`Transmit::push_shared`].
pub const SHARE_THRESHOLD: usize = 4096;

#[derive(Debug, Clone)]
enum Chunk {
    /// A range of `Transmit::buf`.
    Copied(Range<usize>),
    /// A shared payload.
    Shared(Bytes),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Copied(r) => r.len(),
            Chunk::Shared(b) => b.len(),
        }
    }
}

/// Outgoing bytes as a list of chunks for write_vectored; small pieces are copied into an internal buffer,
/// large shared payloads (>= 4096 bytes) are kept as Bytes (zero copy).
#[derive(Debug, Clone, Default)]
pub struct Transmit {
    buf: Vec<u8>,
    chunks: VecDeque<Chunk>,
    /// Bytes of the first chunk already consumed.
    head: usize,
    /// Unconsumed bytes in total.
    len: usize,
}

impl Transmit {
    /// An empty transmit buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a copy of `data`.
    pub fn push_copy(&mut self, data: &[u8]) {
        self.push_with(|buf| buf.extend_from_slice(data));
    }

    /// Append `data`, by reference if it is at least [`SHARE_THRESHOLD`] bytes, else by copy.
    pub fn push_shared(&mut self, data: Bytes) {
        if data.len() < SHARE_THRESHOLD {
            self.push_copy(&data);
        } else {
            self.len += data.len();
            self.chunks.push_back(Chunk::Shared(data));
        }
    }

    /// Append whatever `write` appends to the internal buffer (encode in place, no temporary).
    /// `write` must only append. Returns the range of the new bytes in the internal buffer.
    pub(crate) fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = self.buf.len();
        write(&mut self.buf);
        let end = self.buf.len();
        self.len += end - start;
        match self.chunks.back_mut() {
            Some(Chunk::Copied(r)) if r.end == start => r.end = end,
            _ if end > start => self.chunks.push_back(Chunk::Copied(start..end)),
            _ => {}
        }
        start..end
    }

    /// The internal buffer, for in-place signing and encryption of bytes just pushed
    /// with [`Transmit::push_with`].
    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes not yet consumed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The unconsumed bytes in order, as slices for `write_vectored`.
    pub fn io_slices<'a>(&'a self, out: &mut Vec<IoSlice<'a>>) {
        for (i, c) in self.chunks.iter().enumerate() {
            let s: &[u8] = match c {
                Chunk::Copied(r) => &self.buf[r.clone()],
                Chunk::Shared(b) => b,
            };
            let s = if i == 0 { &s[self.head..] } else { s };
            if !s.is_empty() {
                out.push(IoSlice::new(s));
            }
        }
    }

    /// Mark `n` bytes as written (after a possibly partial write). `n` is capped at [`Transmit::len`].
    pub fn consume(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let left = first.len() - self.head;
            if n < left {
                self.head += n;
                break;
            }
            n -= left;
            self.head = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            // Everything written: reuse the buffer's capacity from the start.
            self.buf.clear();
            self.head = 0;
        } else {
            self.compact();
        }
    }

    /// Drop written bytes from the front of the internal buffer once they are the larger
    /// part of it, so a writer that never fully drains does not grow it without bound.
    fn compact(&mut self) {
        const MIN_COMPACT: usize = 64 * 1024;
        let mut live = self.buf.len();
        for (i, c) in self.chunks.iter().enumerate() {
            if let Chunk::Copied(r) = c {
                live = r.start + if i == 0 { self.head } else { 0 };
                break;
            }
        }
        if live < MIN_COMPACT || live < self.buf.len() / 2 {
            return;
        }
        self.buf.drain(..live);
        for (i, c) in self.chunks.iter_mut().enumerate() {
            if let Chunk::Copied(r) = c {
                if i == 0 {
                    r.start += self.head;
                    self.head = 0;
                }
                *r = r.start - live..r.end - live;
            }
        }
    }

    /// All unconsumed bytes in one vector (tests, vectors).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut slices = Vec::new();
        self.io_slices(&mut slices);
        let mut out = Vec::with_capacity(self.len);
        for s in slices {
            out.extend_from_slice(&s);
        }
        out
    }

    /// Drop everything.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.chunks.clear();
        self.head = 0;
        self.len = 0;
    }

    /// Number of chunks (each becomes one `IoSlice`).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_merge_and_large_payloads_are_shared() {
        let mut t = Transmit::new();
        t.push_copy(b"ab");
        t.push_copy(b"cd");
        t.push_shared(Bytes::from_static(b"small"));
        assert_eq!(t.chunk_count(), 1);
        let big = Bytes::from(vec![9u8; SHARE_THRESHOLD]);
        t.push_shared(big.clone());
        t.push_copy(b"z");
        assert_eq!(t.chunk_count(), 3);
        let mut s = Vec::new();
        t.io_slices(&mut s);
        assert_eq!(s[1].as_ptr(), big.as_ptr(), "shared payload is not copied");
        assert_eq!(t.len(), 9 + SHARE_THRESHOLD + 1);
        let all = t.to_vec();
        assert_eq!(&all[..9], b"abcdsmall");
        assert_eq!(all[all.len() - 1], b'z');
    }

    #[test]
    fn partial_consumption_in_every_step_size() {
        let mut reference = Vec::new();
        let mut t = Transmit::new();
        for i in 0..20u8 {
            if i % 3 == 0 {
                let b = vec![i; SHARE_THRESHOLD + usize::from(i)];
                reference.extend_from_slice(&b);
                t.push_shared(Bytes::from(b));
            } else {
                reference.extend_from_slice(&[i; 7]);
                t.push_copy(&[i; 7]);
            }
        }
        for step in [1usize, 5, 7, 4096, 10_000] {
            let mut t = t.clone();
            let mut got = Vec::new();
            let mut rounds = 0;
            while !t.is_empty() {
                rounds += 1;
                assert!(rounds < 200_000, "bounded");
                let mut s = Vec::new();
                t.io_slices(&mut s);
                let mut n = 0;
                for sl in &s {
                    let take = (step - n).min(sl.len());
                    got.extend_from_slice(&sl[..take]);
                    n += take;
                    if n == step {
                        break;
                    }
                }
                t.consume(n);
            }
            assert_eq!(got, reference, "step {step}");
            assert_eq!(t.to_vec(), Vec::<u8>::new());
        }
        t.consume(usize::MAX);
        assert!(t.is_empty());
        // A writer that never drains completely: the buffer stays bounded.
        let mut t = Transmit::new();
        let mut expect = std::collections::VecDeque::new();
        for i in 0..10_000u32 {
            let piece = [(i % 251) as u8; 100];
            t.push_copy(&piece);
            expect.extend(piece);
            let n = 90;
            let got = t.to_vec();
            assert_eq!(
                &got[..n],
                &expect.iter().take(n).copied().collect::<Vec<_>>()[..]
            );
            t.consume(n);
            expect.drain(..n);
            assert!(
                t.buf.len() <= 2 * 64 * 1024 + 1000 + t.len(),
                "buffer bounded"
            );
        }
        assert_eq!(t.to_vec(), expect.into_iter().collect::<Vec<_>>());
        t.push_copy(b"x");
        t.clear();
        assert!(t.is_empty() && t.to_vec().is_empty());
    }
}
