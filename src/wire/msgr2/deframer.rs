//! The incremental msgr2 reader: bytes in, frames out (docs/PROTOCOL.md §3).
//!
//! The deframer owns one `BytesMut` input buffer; the shell reads straight into it
//! ([`Deframer::buffer_mut`], sized by [`Deframer::read_hint`]). Frames are split off
//! the buffer without copying (`split_to` + `freeze`), MSG sections are slices of the
//! frame, and encrypted frames are decrypted in place.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{max_plain_len, split_msg};
use super::{Banner, BannerError, Frame, Limits, MsgHeader2, Tag, HEADER2_LEN, MSG_FLAG_CRC};
use crate::crypto::{Protection, RxProtector};
use crate::wire::{DecodeError, Reader};

/// What [`Deframer::read_hint`] suggests when no frame size is known yet.
pub const DEFAULT_READ_HINT: usize = 64 * 1024;

/// Bytes before (tag ‖ payload) in a protected frame (§3.2, §3.3).
const PROTECTED_HEAD: usize = 20;

/// One frame out of the deframer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The frame.
    pub frame: Frame,
    /// The exact wire bytes of a plain frame (for the §4.5 transcript hashes); empty for protected frames.
    pub raw: Bytes,
}

/// Why the incoming stream cannot continue. Every one of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The (authenticated, decrypted) tag and payload are malformed, or a MSG's CRCs are wrong.
    Decode(DecodeError),
    /// The signature or GCM tag did not verify with the expected frame counter (§3.4 step 3).
    BadSignature,
    /// A frame length above its limit (§2.3, §3.4 step 1).
    TooLong {
        /// The length the peer announced (or the bytes buffered without a frame end).
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The peer sent more protected frames than `max_frames` allows for one key (§3.4).
    Exhausted,
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Decode(e)
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Decode(e) => write!(f, "malformed frame: {e}"),
            FrameError::BadSignature => {
                f.write_str("frame failed authentication (bad signature or tag)")
            }
            FrameError::TooLong { len, limit } => {
                write!(f, "frame length {len} is above the limit of {limit}")
            }
            FrameError::Exhausted => f.write_str("peer exceeded the frame limit for one key"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// Splits an incoming byte stream into a banner and then frames.
#[derive(Debug)]
pub struct Deframer {
    buf: BytesMut,
    limits: Limits,
    /// Total size of the frame in progress once known, and the form it was computed for.
    pending: Option<(usize, Protection)>,
}

impl Deframer {
    /// An empty deframer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Deframer {
            buf: BytesMut::new(),
            limits,
            pending: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The input buffer; a shell reads straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// At least 1: the bytes still missing for the frame in progress when its size is
    /// known (so a 4 MiB MSG can be read in one go), else [`DEFAULT_READ_HINT`].
    pub fn read_hint(&self) -> usize {
        match self.pending {
            Some((total, _)) if total > self.buf.len() => total - self.buf.len(),
            _ => DEFAULT_READ_HINT,
        }
    }

    /// Take the peer's banner off the front of the buffer (§2.1). `Ok(None)`: need more bytes.
    pub fn take_banner(&mut self) -> Result<Option<Banner>, BannerError> {
        match Banner::parse(&self.buf)? {
            Some((banner, used)) => {
                self.buf.advance(used);
                Ok(Some(banner))
            }
            None => Ok(None),
        }
    }

    /// The next frame, in the form `rx` accepts. `Ok(None)`: need more bytes.
    ///
    /// After an error the stream is unusable: the caller closes the connection.
    pub fn next_frame(&mut self, rx: &mut RxProtector) -> Result<Option<Decoded>, FrameError> {
        let protection = rx.protection();
        if let Some((total, p)) = self.pending {
            if p == protection && self.buf.len() < total {
                return Ok(None);
            }
        }
        self.pending = None;
        let out = match protection {
            Protection::Plain => self.next_plain()?,
            _ => self.next_protected(rx)?,
        };
        Ok(out)
    }

    /// §3.1: the frame's extent comes from its tag and the payload's own length fields.
    fn next_plain(&mut self) -> Result<Option<Decoded>, FrameError> {
        let Some(&tag) = self.buf.first() else {
            return Ok(None);
        };
        if Tag(tag) == Tag::MSG {
            if self.buf.len() < 1 + HEADER2_LEN {
                return Ok(None);
            }
            let header = MsgHeader2::read(
                &mut Reader::new(&self.buf[1..1 + HEADER2_LEN]),
                &self.limits,
            )?;
            // The three lengths were checked against their limits, so this fits comfortably.
            let total =
                usize::try_from(1 + HEADER2_LEN as u64 + header.sections_len()).map_err(|_| {
                    FrameError::TooLong {
                        len: 1 + HEADER2_LEN as u64 + header.sections_len(),
                        limit: usize::MAX as u64,
                    }
                })?;
            if self.buf.len() < total {
                self.pending = Some((total, Protection::Plain));
                return Ok(None);
            }
            let raw = self.buf.split_to(total).freeze();
            let msg = split_msg(header, raw.clone());
            // §6.1: a plain MSG carries CRCs, and they must match.
            if msg.header.flags & MSG_FLAG_CRC == 0 {
                return Err(DecodeError::Invalid {
                    what: "header2.flags (plain MSG without CRC)",
                }
                .into());
            }
            msg.verify_crcs()?;
            return Ok(Some(Decoded {
                frame: Frame::Msg(msg),
                raw,
            }));
        }
        let Some(max) = max_plain_len(Tag(tag)) else {
            return Err(DecodeError::UnknownTag(tag).into());
        };
        let mut r = Reader::new(&self.buf);
        match Frame::read_non_msg(&mut r) {
            Ok(frame) => {
                let used = r.position();
                let raw = self.buf.split_to(used).freeze();
                Ok(Some(Decoded { frame, raw }))
            }
            // Incomplete: wait, but never for more than this frame kind's largest size.
            Err(e) if e.is_truncated() && self.buf.len() < max => Ok(None),
            Err(e) if e.is_truncated() => Err(FrameError::TooLong {
                len: self.buf.len() as u64,
                limit: max as u64,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// §3.4: length check, wait for the whole frame, authenticate, only then decode.
    fn next_protected(&mut self, rx: &mut RxProtector) -> Result<Option<Decoded>, FrameError> {
        if self.buf.len() < PROTECTED_HEAD {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[16..PROTECTED_HEAD]);
        let length = u32::from_le_bytes(len);
        if length == 0 {
            return Err(DecodeError::Invalid {
                what: "protected frame length (zero)",
            }
            .into());
        }
        if length > self.limits.max_frame {
            return Err(FrameError::TooLong {
                len: length.into(),
                limit: self.limits.max_frame.into(),
            });
        }
        let protection = rx.protection();
        let total = PROTECTED_HEAD
            + length as usize
            + protection.sig_size()
            + protection.padding(length.into());
        if self.buf.len() < total {
            self.pending = Some((total, protection));
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total);
        let body = rx.open(&mut frame)?;
        let body = frame.freeze().slice(body);
        let frame = Frame::decode(body, &self.limits)?;
        if let Frame::Msg(m) = &frame {
            // §6.1: the MAC covers everything, so protected MSGs carry no CRCs.
            if m.header.flags & MSG_FLAG_CRC != 0 {
                return Err(DecodeError::Invalid {
                    what: "header2.flags (CRC in a protected frame)",
                }
                .into());
            }
            m.verify_crcs()?;
        }
        Ok(Some(Decoded {
            frame,
            raw: Bytes::new(),
        }))
    }
}
