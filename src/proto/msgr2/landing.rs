//! The memory a chunked message's data section is reassembled in (docs/PROTOCOL.md §7.4).
//!
//! Chunks are copied in at their offsets as they arrive, so the buffer is written front to
//! back in 64 KiB pieces while small frames wait behind them on the same connection. Fresh
//! memory costs a page fault for every 4 KiB the first time it is written, and on a reader
//! that drains a 256 MiB message those faults were the largest single cost (BENCHMARKS.md,
//! issue 6). A big data section therefore gets an anonymous mapping of its own, and on Linux
//! the pages a chunk will cover are populated with one `madvise(MADV_POPULATE_WRITE)` just
//! before the copy: the same page clearing, without a fault per page. The mapping becomes the
//! delivered message's data as is (no copy) and is unmapped when the last `Bytes` goes.
//!
//! Small data sections stay on the heap: a mapping costs two system calls and a populate
//! call per chunk that would only save a handful of faults.

use bytes::Bytes;
use memmap2::MmapMut;

/// Data sections at least this long get a mapping of their own.
pub(crate) const MAPPED_FROM: usize = 1 << 20;

/// The data section of one chunked message being received.
pub(crate) struct Landing {
    mem: Mem,
    /// Populate pages before each copy (cleared after the first failure: kernels before
    /// 5.14 lack `MADV_POPULATE_WRITE`, and without it the copy's own faults do the work).
    populate: bool,
}

enum Mem {
    Heap(Vec<u8>),
    Mapped(MmapMut),
}

impl Landing {
    /// Zeroed memory for `len` bytes.
    pub(crate) fn new(len: usize) -> Landing {
        if len >= MAPPED_FROM {
            match MmapMut::map_anon(len) {
                Ok(map) => {
                    return Landing {
                        mem: Mem::Mapped(map),
                        populate: cfg!(target_os = "linux"),
                    }
                }
                Err(e) => {
                    log::debug!("no mapping for a {len}-byte data section ({e}); using the heap")
                }
            }
        }
        Landing {
            mem: Mem::Heap(vec![0u8; len]),
            populate: false,
        }
    }

    /// The length of the data section.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match &self.mem {
            Mem::Heap(v) => v.len(),
            Mem::Mapped(m) => m.len(),
        }
    }

    /// True if the data section lives in a mapping of its own.
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.mem, Mem::Mapped(_))
    }

    /// Copy `data` in at `offset`. The caller checked that it fits (§7.4 rule 1); a range
    /// outside the buffer panics like any out-of-bounds slice.
    pub(crate) fn write(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        match &mut self.mem {
            Mem::Heap(v) => v[offset..end].copy_from_slice(data),
            Mem::Mapped(m) => {
                if self.populate {
                    self.populate = populate(m, offset, data.len());
                }
                m[offset..end].copy_from_slice(data);
            }
        }
    }

    /// The finished data section, without copying it.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self.mem {
            Mem::Heap(v) => Bytes::from(v),
            Mem::Mapped(m) => Bytes::from_owner(m),
        }
    }
}

/// Populate the pages under `offset..offset + len` writable; false if the kernel can't.
#[cfg(target_os = "linux")]
fn populate(map: &MmapMut, offset: usize, len: usize) -> bool {
    match map.advise_range(memmap2::Advice::PopulateWrite, offset, len) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("MADV_POPULATE_WRITE unavailable ({e}); pages fault in as written");
            false
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_: &MmapMut, _: usize, _: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Both kinds of memory start zeroed, take pieces at any offset (unaligned, out of
    /// order) and hand back exactly what was written.
    #[test]
    fn heap_and_mapped_sections_reassemble_exactly() {
        for len in [1, 4095, MAPPED_FROM - 1, MAPPED_FROM, MAPPED_FROM + 4097] {
            let mut l = Landing::new(len);
            assert_eq!(l.len(), len);
            assert_eq!(l.is_mapped(), len >= MAPPED_FROM, "len {len}");
            let want = pattern(len, 7);
            // Odd-sized pieces, written back to front, leaving one hole.
            let piece = 65_537.min(len);
            let mut starts: Vec<usize> = (0..len).step_by(piece).collect();
            starts.reverse();
            let hole = if starts.len() > 2 {
                Some(starts[1])
            } else {
                None
            };
            for &s in &starts {
                if Some(s) == hole {
                    continue;
                }
                let e = (s + piece).min(len);
                l.write(s, &want[s..e]);
            }
            let got = l.into_bytes();
            assert_eq!(got.len(), len);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let in_hole = hole.is_some_and(|h| (h..h + piece).contains(&i));
                assert_eq!(g, if in_hole { 0 } else { w }, "byte {i} of {len}");
            }
        }
    }

    #[test]
    fn a_mapped_section_outlives_its_landing_as_bytes() {
        let mut l = Landing::new(MAPPED_FROM);
        l.write(MAPPED_FROM - 3, b"end");
        let a = l.into_bytes();
        let b = a.slice(MAPPED_FROM - 3..);
        drop(a);
        assert_eq!(&b[..], b"end");
    }

    #[test]
    #[should_panic]
    fn a_write_past_the_end_panics_rather_than_corrupting() {
        let mut l = Landing::new(MAPPED_FROM);
        l.write(MAPPED_FROM - 1, b"xy");
    }
}
