//! One-direction stream decoders for `simplemsgr dump` (docs/PROTOCOL.md §3–§7, §10, §11).
//!
//! [`decode_stream`] takes the bytes one side of a TCP connection sent (raw, or
//! reassembled from a capture by [`crate::capture`]) and reports every frame as a
//! [`Record`] through a callback, so whatever decoded is shown before a failure. A
//! failure is a [`DumpError`] naming the byte offset in the stream where decoding stopped.
//!
//! - msgr2: the banner, plain frames, the sender's AUTH_DONE, and after it the signed or
//!   encrypted form its flags select. Protected frames are verified and decrypted with the
//!   keys of a key log (§11), found by the SHA-256 of the bytes before AUTH_DONE.
//! - v1: the banner and addresses, connect / connect_reply (the side is recognised from
//!   the bytes), then MSG / ACK / KEEPALIVE frames.
//!
//! Pure: no I/O; the caller reads files.

use std::fmt::{self, Write as _};

use ring::digest;

use crate::crypto::{KeyLogFile, Protection, RxProtector, DEFAULT_MAX_FRAMES};
use crate::wire::msgr2::{self, Banner, Deframer, Frame, Limits, MSG_FLAG_CHUNKED};
use crate::wire::types::EntityAddr;
use crate::wire::v1;
use crate::wire::{to_hex, Codec, Reader};

/// Which protocol a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoChoice {
    /// Decide from the banner: `ceph v027` is v1, any other `ceph ` banner msgr2.
    Auto,
    /// Legacy v1.
    V1,
    /// msgr2.
    Msgr2,
}

/// A field value of a [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Num(u64),
    /// Text.
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) if s.is_empty() || s.contains(' ') => write!(f, "{s:?}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// One decoded item of a stream: a banner, a handshake record or a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of its first byte in the stream.
    pub offset: u64,
    /// Its size on the wire.
    pub len: u64,
    /// What it is: `BANNER`, a tag name (`MSG`, `CHUNK`, …), `CONNECT`, ….
    pub kind: String,
    /// Its fields, in wire order.
    pub fields: Vec<(&'static str, Value)>,
}

impl Record {
    fn new(offset: usize, len: usize, kind: impl Into<String>) -> Self {
        Record {
            offset: offset as u64,
            len: len as u64,
            kind: kind.into(),
            fields: Vec::new(),
        }
    }

    fn num(mut self, k: &'static str, v: impl Into<u64>) -> Self {
        self.fields.push((k, Value::Num(v.into())));
        self
    }

    fn text(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.fields.push((k, Value::Str(v.into())));
        self
    }

    /// One line: `offset kind len=N key=value …`.
    pub fn to_line(&self) -> String {
        let mut s = format!("{:>10} {:<14} len={}", self.offset, self.kind, self.len);
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={v}");
        }
        s
    }

    /// One JSON object (a JSON line).
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"offset\":{},\"len\":{},\"frame\":{}",
            self.offset,
            self.len,
            json_str(&self.kind)
        );
        for (k, v) in &self.fields {
            let _ = match v {
                Value::Num(n) => write!(s, ",{}:{n}", json_str(k)),
                Value::Str(t) => write!(s, ",{}:{}", json_str(k), json_str(t)),
            };
        }
        s.push('}');
        s
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpError {
    /// Offset in the stream of the first byte that could not be decoded.
    pub offset: u64,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decoding failed at byte offset {}: {}",
            self.offset, self.what
        )
    }
}

impl std::error::Error for DumpError {}

fn fail(offset: usize, what: impl Into<String>) -> DumpError {
    DumpError {
        offset: offset as u64,
        what: what.into(),
    }
}

/// How to decode.
#[derive(Debug, Default)]
pub struct DumpOptions {
    /// The protocol (default: auto).
    pub proto: Option<ProtoChoice>,
    /// Keys for signed or encrypted msgr2 streams.
    pub keylog: Option<KeyLogFile>,
}

/// What a decode found, besides the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Records reported.
    pub records: usize,
    /// Bytes decoded (the whole stream on success).
    pub bytes: u64,
}

/// Decode one direction's bytes, calling `out` for each record in stream order.
pub fn decode_stream(
    bytes: &[u8],
    opts: &DumpOptions,
    out: &mut dyn FnMut(&Record),
) -> Result<Summary, DumpError> {
    if bytes.is_empty() {
        // A direction that sent nothing (a probe, a refused connection) has no frames.
        return Ok(Summary {
            records: 0,
            bytes: 0,
        });
    }
    let proto = match opts.proto.unwrap_or(ProtoChoice::Auto) {
        ProtoChoice::Auto => {
            if bytes.starts_with(v1::BANNER) {
                ProtoChoice::V1
            } else if bytes.starts_with(b"ceph ") {
                ProtoChoice::Msgr2
            } else {
                let n = bytes.len().min(5);
                if bytes[..n] == b"ceph "[..n] {
                    return Err(fail(bytes.len(), "stream ends inside the banner"));
                }
                return Err(fail(0, "not a Ceph stream (no \"ceph \" banner)"));
            }
        }
        p => p,
    };
    let mut count = 0usize;
    let mut emit = |r: Record| {
        count += 1;
        out(&r);
    };
    match proto {
        ProtoChoice::V1 => decode_v1(bytes, &mut emit)?,
        _ => decode_msgr2(bytes, opts.keylog.as_ref(), &mut emit)?,
    }
    Ok(Summary {
        records: count,
        bytes: bytes.len() as u64,
    })
}

fn decode_msgr2(
    bytes: &[u8],
    keylog: Option<&KeyLogFile>,
    emit: &mut dyn FnMut(Record),
) -> Result<(), DumpError> {
    let (banner, used) = match Banner::parse(bytes) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(fail(bytes.len(), "stream ends inside the msgr2 banner")),
        Err(e) => return Err(fail(0, format!("bad msgr2 banner: {e}"))),
    };
    emit(
        Record::new(0, used, "BANNER")
            .text("supported", format!("0x{:x}", banner.supported))
            .text("required", format!("0x{:x}", banner.required)),
    );
    let mut d = Deframer::new(Limits::default());
    d.push(&bytes[used..]);
    let mut rx = RxProtector::plain();
    let mut form = "plain";
    let mut pos = used;
    let mut before_done = true;
    loop {
        let frame = match d.next_frame(&mut rx) {
            Ok(Some(f)) => f.frame,
            Ok(None) => break,
            Err(e) => return Err(fail(pos, format!("{e} (form {form})"))),
        };
        let end = bytes.len() - d.buffered();
        let mut rec = frame_record(&frame, pos, end - pos);
        if form != "plain" {
            rec = rec.text("form", form);
        }
        if let (Frame::AuthDone(done), true) = (&frame, before_done) {
            before_done = false;
            let p = Protection::from_flags(done.flags)
                .ok_or_else(|| fail(pos, "AUTH_DONE flags invalid"))?;
            if p != Protection::Plain {
                let t: [u8; 32] = {
                    let h = digest::digest(&digest::SHA256, &bytes[..pos]);
                    let mut a = [0u8; 32];
                    a.copy_from_slice(h.as_ref());
                    a
                };
                rec = rec.text("transcript", to_hex(&t));
                let name = if p == Protection::Signed {
                    "signed"
                } else {
                    "encrypted"
                };
                let entry = keylog.and_then(|k| k.find(&t)).ok_or_else(|| {
                    fail(
                        end,
                        format!(
                            "the rest of this direction is {name} (AUTH_DONE flags {}) and no key-log \
                             entry has transcript {} (give --keylog FILE)",
                            done.flags,
                            to_hex(&t)
                        ),
                    )
                });
                emit(rec);
                let entry = entry?;
                rx = RxProtector::new(p, &entry.keys, DEFAULT_MAX_FRAMES);
                form = name;
                pos = end;
                continue;
            }
        }
        emit(rec);
        pos = end;
    }
    if d.buffered() > 0 {
        return Err(fail(
            pos,
            format!(
                "truncated: {} bytes of an incomplete {} frame at the end (form {form})",
                d.buffered(),
                bytes
                    .get(pos)
                    .map(|&t| if form == "plain" {
                        msgr2::Tag(t).name().unwrap_or("unknown").to_string()
                    } else {
                        "protected".into()
                    })
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn frame_record(frame: &Frame, pos: usize, len: usize) -> Record {
    let name = frame
        .tag()
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("0x{:02x}", frame.tag().0));
    let r = Record::new(pos, len, name);
    match frame {
        Frame::Msg(m) => {
            let h = &m.header;
            let mut r = if h.flags & MSG_FLAG_CHUNKED != 0 {
                r.num("xid", h.seq)
            } else {
                r.num("seq", h.seq)
            };
            r = r
                .num("tid", h.tid)
                .num("type", h.ty)
                .num("prio", h.priority)
                .num("version", h.version)
                .num("front_len", h.front_len)
                .num("middle_len", h.middle_len)
                .num("data_len", h.data_len)
                .text("src", h.src.to_string())
                .num("flags", h.flags)
                .num("ack_seq", h.ack_seq);
            if h.flags & MSG_FLAG_CHUNKED != 0 {
                r = r.text("chunked", "yes");
            }
            r
        }
        Frame::Chunk(c) => r
            .num("xid", c.xid)
            .num("offset", c.offset)
            .num("seq", c.seq)
            .num("bytes", c.data.len() as u64),
        Frame::ChunkAbort(a) => r
            .num("xid", a.xid)
            .num("code", a.code)
            .text("message", a.message.clone()),
        Frame::Ack(a) => r.num("seq", a.seq),
        Frame::Keepalive2(k) => r.num("sec", k.stamp.sec).num("nsec", k.stamp.nsec),
        Frame::Keepalive2Ack(k) => r.num("sec", k.stamp.sec).num("nsec", k.stamp.nsec),
        Frame::AuthDone(a) => r.num("flags", a.flags),
        Frame::AuthSetMethod(a) => r.num("method", a.method),
        Frame::AuthBadMethod(a) => r.num("method", a.method),
        Frame::AuthMethods(a) => r.text(
            "methods",
            a.methods
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Frame::Auth(a) => r.num("payload_len", a.payload.len() as u64),
        Frame::Ident(i) => r
            .text("addrs", format!("{:?}", i.addrs))
            .num("entity_type", i.entity_type.0)
            .num("protocol_version", i.protocol_version)
            .text("features", format!("0x{:x}", i.features_supported))
            .num("flags", i.flags)
            .text("cookie", format!("0x{:x}", i.cookie)),
        Frame::Reconnect(x) => r
            .text("cookie", format!("0x{:x}", x.cookie))
            .num("global_seq", x.global_seq)
            .num("connect_seq", x.connect_seq)
            .num("msg_seq", x.msg_seq),
        Frame::ReconnectOk(x) => r.num("msg_seq", x.msg_seq).num("global_seq", x.global_seq),
        Frame::Start(x) => r.num("flags", x.flags).num("global_seq", x.global_seq),
        Frame::Close(c) => r
            .text("reason", format!("{:?}", c.reason))
            .text("message", c.message.clone()),
        Frame::IdentMissingFeatures(x) => r.text("missing", format!("0x{:x}", x.missing)),
        Frame::IdentBadProtocol(x) => r.num("protocol_version", x.protocol_version),
        Frame::ReconnectRetrySession(x) => r.num("connect_seq", x.connect_seq),
        Frame::ReconnectRetryGlobal(x) => r.num("global_seq", x.global_seq),
        Frame::ReconnectWait | Frame::ReconnectReset => r,
    }
}

/// v1 frame tags after the handshake.
fn is_v1_frame_tag(b: u8) -> bool {
    matches!(b, 0x06 | 0x07 | 0x08 | 0x09 | 0x0e | 0x0f)
}

fn decode_v1(bytes: &[u8], emit: &mut dyn FnMut(Record)) -> Result<(), DumpError> {
    let mut r = Reader::new(bytes);
    let err = |r: &Reader<'_>, e: &dyn fmt::Display| fail(r.position(), e.to_string());
    v1::read_banner(&mut r).map_err(|e| err(&Reader::new(bytes), &e))?;
    emit(Record::new(0, v1::BANNER.len(), "V1_BANNER"));
    // The server's hello carries two addresses; the client sends one, then a connect
    // whose host_type bytes cannot look like a sockaddr family (BE 00 02 / 00 0a).
    let server_side = {
        let at = v1::BANNER.len() + crate::wire::types::LEGACY_ADDR_LEN + 8;
        matches!(bytes.get(at..at + 2), Some([0, 2]) | Some([0, 10]))
    };
    let addr = |r: &mut Reader<'_>, kind: &str, emit: &mut dyn FnMut(Record)| {
        let start = r.position();
        let a = EntityAddr::read_legacy(r).map_err(|e| err(r, &e))?;
        emit(
            Record::new(start, r.position() - start, kind.to_string()).text("addr", a.to_string()),
        );
        Ok::<(), DumpError>(())
    };
    let with_sig;
    if server_side {
        addr(&mut r, "SERVER_ADDR", emit)?;
        addr(&mut r, "CLIENT_ADDR_SEEN", emit)?;
        // Replies until READY or SEQ; others mean the client connects again.
        loop {
            let start = r.position();
            let reply = v1::ConnectReply::read(&mut r).map_err(|e| fail(start, e.to_string()))?;
            emit(
                Record::new(start, r.position() - start, "CONNECT_REPLY")
                    .text("tag", reply.tag.name().unwrap_or("UNKNOWN"))
                    .text("features", format!("0x{:x}", reply.features))
                    .num("global_seq", reply.global_seq)
                    .num("connect_seq", reply.connect_seq)
                    .num("protocol_version", reply.protocol_version)
                    .num("flags", reply.flags)
                    .num("authorizer_len", reply.authorizer.len() as u64),
            );
            if reply.tag == v1::Tag::SEQ {
                let s = r.position();
                let seq = r.le64("SEQ in_seq").map_err(|e| fail(s, e.to_string()))?;
                emit(Record::new(s, 8, "IN_SEQ").num("seq", seq));
            }
            if reply.tag == v1::Tag::READY || reply.tag == v1::Tag::SEQ {
                with_sig = reply.features & v1::features::MSG_AUTH != 0;
                break;
            }
            if r.is_empty() {
                return Ok(());
            }
        }
    } else {
        addr(&mut r, "CLIENT_ADDR", emit)?;
        let mut features;
        loop {
            let start = r.position();
            let c = v1::ConnectMsg::read(&mut r).map_err(|e| fail(start, e.to_string()))?;
            features = c.features;
            emit(
                Record::new(start, r.position() - start, "CONNECT")
                    .text("features", format!("0x{:x}", c.features))
                    .num("host_type", c.host_type)
                    .num("global_seq", c.global_seq)
                    .num("connect_seq", c.connect_seq)
                    .num("protocol_version", c.protocol_version)
                    .num("flags", c.flags)
                    .num("authorizer_len", c.authorizer.len() as u64),
            );
            let rest = r.rest();
            // After SEQ the client sends its in_seq (small); then frames follow.
            if rest.len() >= 8 {
                let v = u64::from_le_bytes(rest[..8].try_into().unwrap_or([0xff; 8]));
                if v < 1 << 40 && rest.get(8).map_or(true, |&b| is_v1_frame_tag(b)) {
                    let s = r.position();
                    let _ = r.le64("in_seq");
                    emit(Record::new(s, 8, "IN_SEQ").num("seq", v));
                    break;
                }
            }
            if rest.first().map_or(true, |&b| is_v1_frame_tag(b)) {
                break;
            }
        }
        with_sig = features & v1::features::MSG_AUTH != 0;
    }
    let limits = v1::Limits::default();
    while !r.is_empty() {
        let start = r.position();
        let rest = r.rest();
        let (frame, used) = match v1::Frame::parse(rest, with_sig, &limits) {
            Ok(Some(x)) => x,
            Ok(None) => {
                return Err(fail(
                    start,
                    format!(
                        "truncated: {} bytes of an incomplete {} frame at the end",
                        rest.len(),
                        v1::Tag(rest[0])
                    ),
                ))
            }
            Err(e) => return Err(fail(start, e.to_string())),
        };
        let rec = Record::new(start, used, frame.tag().name().unwrap_or("UNKNOWN"));
        emit(match &frame {
            v1::Frame::Msg(m) => {
                let h = &m.header;
                rec.num("seq", h.seq)
                    .num("tid", h.tid)
                    .num("type", h.ty)
                    .num("prio", h.priority)
                    .num("version", h.version)
                    .num("front_len", h.front_len)
                    .num("middle_len", h.middle_len)
                    .num("data_len", h.data_len)
                    .text("src", h.src.to_string())
                    .text("crc", if m.verify().is_ok() { "ok" } else { "BAD" })
            }
            v1::Frame::Ack(s) => rec.num("seq", *s),
            v1::Frame::Keepalive2(t) | v1::Frame::Keepalive2Ack(t) => {
                rec.num("sec", t.sec).num("nsec", t.nsec)
            }
            v1::Frame::Keepalive | v1::Frame::Close => rec,
        });
        let _ = r.take(used, "frame");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msgr2::sample_frames;

    fn collect(bytes: &[u8]) -> (Vec<Record>, Result<Summary, DumpError>) {
        let mut v = Vec::new();
        let r = decode_stream(bytes, &DumpOptions::default(), &mut |r| v.push(r.clone()));
        (v, r)
    }

    #[test]
    fn plain_msgr2_frames_and_truncation() {
        let mut wire = b"ceph 1 0\n".to_vec();
        for f in sample_frames(true).iter().skip(15) {
            f.encode(&mut wire);
        }
        let (recs, r) = collect(&wire);
        assert_eq!(r.unwrap().records, 8);
        assert_eq!(recs[1].kind, "MSG");
        assert!(
            recs[1].to_line().contains("seq=1 tid=7"),
            "{}",
            recs[1].to_line()
        );
        assert_eq!(recs[6].kind, "CHUNK");
        assert!(recs[6].to_json().contains("\"offset\":4"));
        let (recs, r) = collect(&wire[..wire.len() - 3]);
        let e = r.unwrap_err();
        assert_eq!(recs.len(), 7, "everything before the cut decoded");
        assert_eq!(e.offset, recs[6].offset + recs[6].len);
        assert!(e.to_string().contains("truncated"), "{e}");
        let (recs, r) = collect(b"GET / HTTP/1.1");
        assert!(recs.is_empty());
        assert_eq!(r.unwrap_err().offset, 0);
    }

    #[test]
    fn garbage_after_frames_names_its_offset() {
        let mut wire = b"ceph 0 0\n".to_vec();
        sample_frames(true)[16].encode(&mut wire);
        let at = wire.len();
        wire.extend_from_slice(&[0xee; 10]);
        let (recs, r) = collect(&wire);
        assert_eq!(recs.len(), 2);
        let e = r.unwrap_err();
        assert_eq!(e.offset, at as u64);
        assert!(
            e.to_string().contains("0xee") || e.to_string().contains("tag"),
            "{e}"
        );
    }
}
