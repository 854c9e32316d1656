use super::*;
use crate::wire::ceph_crc32c;
use crate::wire::from_hex;
use crate::wire::message::Message;
use crate::wire::msgr2::MSG_FLAG_CRC;
use crate::wire::msgr2::{AUTH_NONE, AUTH_SECRET};
use crate::wire::types::EntityName;

/// One representative instance of every frame type (also used by the vectors).
pub(crate) fn samples() -> Vec<Frame> {
    crate::wire::msgr2::sample_frames(true)
}

fn enc(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode(&mut v);
    v
}

#[test]
fn every_sample_round_trips_and_knows_its_length() {
    let limits = Limits::default();
    let s = samples();
    assert_eq!(s.len(), 22, "one sample per frame type");
    for f in s {
        let bytes = enc(&f);
        assert_eq!(bytes[0], f.tag().0);
        assert_eq!(f.encoded_len(), bytes.len(), "{:?}", f.tag());
        assert_eq!(
            Frame::decode(Bytes::from(bytes.clone()), &limits).unwrap(),
            f
        );
    }
}

#[test]
fn exact_bytes() {
    let f = Frame::AuthMethods(AuthMethods {
        methods: vec![AUTH_SECRET, AUTH_NONE],
    });
    assert_eq!(enc(&f), from_hex("01 02000000 10000000 01000000").unwrap());
    let f = Frame::Close(Close {
        reason: CloseReason::AUTH_FAILED,
        message: "no".into(),
    });
    assert_eq!(enc(&f), from_hex("24 02000000 02000000 6e6f").unwrap());
    let f = Frame::Start(Start {
        flags: 0,
        global_seq: 0x0102,
    });
    assert_eq!(
        enc(&f),
        from_hex("19 0000000000000000 0201000000000000").unwrap()
    );
    assert_eq!(enc(&Frame::ReconnectReset), vec![0x18]);
    let m = Msg::from_message(
        &Message::new(7, &b"hi"[..]),
        1,
        0,
        EntityName::new(EntityType::CLIENT, 4),
        true,
    );
    let bytes = enc(&Frame::Msg(m.clone()));
    assert_eq!(bytes.len(), 1 + 73 + 2);
    assert_eq!(&bytes[1..9], &1u64.to_le_bytes());
    assert_eq!(&bytes[1 + 22..1 + 26], &2u32.to_le_bytes());
    assert_eq!(bytes[1 + 36], 0x08);
    assert_eq!(&bytes[1 + 47..1 + 49], &MSG_FLAG_CRC.to_le_bytes());
    assert_eq!(&bytes[1 + 57..1 + 61], &ceph_crc32c(0, b"hi").to_le_bytes());
    assert_eq!(
        &bytes[1 + 69..1 + 73],
        &ceph_crc32c(0, &bytes[1..1 + 69]).to_le_bytes()
    );
    m.verify_crcs().unwrap();
}

#[test]
fn every_truncation_is_truncated_and_trailing_bytes_are_refused() {
    let limits = Limits::default();
    for f in samples() {
        let bytes = enc(&f);
        for i in 0..bytes.len() {
            let err = Frame::decode(Bytes::copy_from_slice(&bytes[..i]), &limits).unwrap_err();
            assert!(err.is_truncated(), "{:?} prefix {i}: {err}", f.tag());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = Frame::decode(Bytes::from(longer), &limits).unwrap_err();
        assert!(
            matches!(err, DecodeError::TrailingBytes { count: 1, .. }),
            "{:?}: {err}",
            f.tag()
        );
    }
}

#[test]
fn unknown_tags_are_refused() {
    let known: Vec<u8> = samples().iter().map(|f| f.tag().0).collect();
    for t in 0..=255u8 {
        if known.contains(&t) {
            continue;
        }
        let err = Frame::decode(
            Bytes::from(vec![t, 0, 0, 0, 0, 0, 0, 0, 0]),
            &Limits::default(),
        );
        assert_eq!(err, Err(DecodeError::UnknownTag(t)));
        assert!(max_plain_len(Tag(t)).is_none() && Tag(t).name().is_none());
        assert_eq!(format!("{:?}", Tag(t)), format!("Tag(0x{t:02x})"));
    }
    assert_eq!(format!("{:?}", Tag::MSG), "MSG");
    assert_eq!(format!("{:?}", CloseReason::REKEY), "REKEY");
}

#[test]
fn samples_fit_their_maximum_plain_length() {
    for f in samples() {
        if let Some(max) = max_plain_len(f.tag()) {
            assert!(enc(&f).len() <= max, "{:?}", f.tag());
        }
    }
}

#[test]
fn limits_and_invalid_values() {
    let d = Limits::default();
    let check =
        |hex: &str, limits: &Limits| Frame::decode(Bytes::from(from_hex(hex).unwrap()), limits);
    assert!(matches!(
        check("01 11000000", &d),
        Err(DecodeError::TooLarge { len: 17, .. })
    ));
    assert!(matches!(
        check("01 00000000", &d),
        Err(DecodeError::Invalid { .. })
    ));
    assert!(matches!(
        check("04 01000100", &d),
        Err(DecodeError::TooLarge { len: 65_537, .. })
    ));
    assert!(matches!(
        check("24 00000000 01040000", &d),
        Err(DecodeError::TooLarge { len: 1_025, .. })
    ));
    assert!(matches!(
        check("24 00000000 01000000 ff", &d),
        Err(DecodeError::Invalid { .. })
    ));
    let flags3 = format!("05 0300000000000000 {}", "00".repeat(32));
    assert!(matches!(
        check(&flags3, &d),
        Err(DecodeError::Invalid { .. })
    ));
    // MSG: each section length is checked against its own limit before anything else.
    let small = Limits {
        max_front: 10,
        max_middle: 10,
        max_data: 10,
        max_frame: 1000,
    };
    for (off, name) in [
        (22, "header2.front_len"),
        (26, "header2.middle_len"),
        (30, "header2.data_len"),
    ] {
        let mut h = vec![0u8; 1 + HEADER2_LEN];
        h[0] = 0x20;
        h[1 + off..1 + off + 4].copy_from_slice(&11u32.to_le_bytes());
        let err = Frame::decode(Bytes::from(h), &small).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                what: name,
                len: 11,
                limit: 10
            }
        );
    }
    let mut h = vec![0u8; 1 + HEADER2_LEN];
    h[0] = 0x20;
    h[1 + 47] = 4;
    assert!(matches!(
        Frame::decode(Bytes::from(h), &small),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn ident_must_be_canonical_and_flags_defined() {
    let Frame::Ident(mut ident) = samples()
        .into_iter()
        .find(|f| f.tag() == Tag::IDENT)
        .unwrap()
    else {
        unreachable!()
    };
    let good = enc(&Frame::Ident(ident.clone()));
    // Version byte of the first address changed from 1 to 2: decodable by types.rs but not canonical.
    let mut odd = good.clone();
    odd[1 + 5 + 1] = 2;
    assert!(matches!(
        Frame::decode(Bytes::from(odd), &Limits::default()),
        Err(DecodeError::Invalid { .. })
    ));
    ident.flags = 4;
    let bad = enc(&Frame::Ident(ident));
    assert!(matches!(
        Frame::decode(Bytes::from(bad), &Limits::default()),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn msg_sections_are_zero_copy_and_crcs_checked() {
    let msg = Message::new(0x10, &b"front"[..])
        .with_middle(&b"mid"[..])
        .with_data(vec![7u8; 5000]);
    let m = Msg::from_message(&msg, 3, 2, EntityName::new(EntityType::OSD, 1), true);
    let bytes = Bytes::from(enc(&Frame::Msg(m.clone())));
    let Frame::Msg(back) = Frame::decode(bytes.clone(), &Limits::default()).unwrap() else {
        unreachable!()
    };
    assert_eq!(back, m);
    assert_eq!(
        back.data.as_ptr(),
        bytes[1 + 73 + 8..].as_ptr(),
        "data is a slice of the input"
    );
    back.verify_crcs().unwrap();
    let again = back.clone().into_message();
    assert_eq!(
        (again.seq, again.src, again.front.clone()),
        (3, EntityName::new(EntityType::OSD, 1), msg.front.clone())
    );
    let mut bad = back.clone();
    bad.header.data_crc ^= 1;
    assert!(bad.verify_crcs().is_err());
    let plain = Msg::from_message(&msg, 3, 2, EntityName::new(EntityType::OSD, 1), false);
    assert_eq!(plain.header.flags, 0);
    plain.verify_crcs().unwrap();
    let mut bad = plain;
    bad.header.header_crc = 1;
    assert!(bad.verify_crcs().is_err());
}
