//! The protobuf wire format: reading fields from a byte slice without copying, and writing
//! them. Only what OTLP needs: varints, fixed 32/64-bit values, length-delimited payloads and
//! (to skip them) groups.
//!
//! Reading follows upb, the parser behind Python's protobuf, so that what it rejects we reject:
//! a varint is at most 10 bytes (bits past 64 are ignored), field number 0 and wire types 6
//! and 7 are errors, a length may not run past its message, an end-group tag must close the
//! group it ends.
#![forbid(unsafe_code)]

use std::fmt;

pub const VARINT: u8 = 0;
pub const I64: u8 = 1;
pub const LEN: u8 = 2;
pub const SGROUP: u8 = 3;
pub const EGROUP: u8 = 4;
pub const I32: u8 = 5;

/// Why bytes are not a well-formed message. Small on purpose (no text until it is shown):
/// results of the readers below are returned by the million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// From the start of the request.
    pub offset: usize,
    pub kind: WireErrorKind,
    /// The field (or group) number concerned, where there is one.
    pub number: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireErrorKind {
    TruncatedVarint,
    LongVarint,
    FieldNumber,
    Truncated,
    LengthOverflow,
    UnexpectedEndGroup,
    WireType(u8),
    TooDeep,
    UnclosedGroup,
    MismatchedEndGroup(u32),
    Utf8,
    NoField,
}

impl WireError {
    pub fn new(offset: usize, kind: WireErrorKind) -> Self {
        WireError {
            offset,
            kind,
            number: 0,
        }
    }

    fn field(offset: usize, kind: WireErrorKind, number: u32) -> Self {
        WireError {
            offset,
            kind,
            number,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.number;
        match self.kind {
            WireErrorKind::TruncatedVarint => write!(f, "truncated varint"),
            WireErrorKind::LongVarint => write!(f, "varint longer than 10 bytes"),
            WireErrorKind::FieldNumber => write!(f, "invalid field number {n}"),
            WireErrorKind::Truncated => write!(f, "field {n} runs past the end of its message"),
            WireErrorKind::LengthOverflow => write!(f, "field {n}: length overflows"),
            WireErrorKind::UnexpectedEndGroup => write!(f, "unexpected end-group tag {n}"),
            WireErrorKind::WireType(t) => write!(f, "field {n}: invalid wire type {t}"),
            WireErrorKind::TooDeep => write!(f, "message nested too deeply (more than 100 levels)"),
            WireErrorKind::UnclosedGroup => write!(f, "group {n} has no end-group tag"),
            WireErrorKind::MismatchedEndGroup(end) => {
                write!(f, "group {n} closed by end-group tag {end}")
            }
            WireErrorKind::Utf8 => write!(f, "field {n}: string is not valid UTF-8"),
            WireErrorKind::NoField => write!(f, "no field where one was expected"),
        }?;
        write!(f, " (at byte {})", self.offset)
    }
}

impl std::error::Error for WireError {}

pub type WireResult<T> = Result<T, WireError>;

/// One field's value as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// A length-delimited payload, and its offset in the whole request.
    Len(&'a [u8], usize),
    /// A group, skipped (its nested fields are validated by `skip_group`).
    Group,
}

/// A cursor over one message's fields. `base` is the message's offset in the whole request,
/// for error messages.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    #[inline]
    pub fn read_varint(&mut self) -> WireResult<u64> {
        match self.buf.get(self.pos) {
            Some(&byte) if byte < 0x80 => {
                self.pos += 1;
                Ok(u64::from(byte)) // tags and short lengths: the common case
            }
            _ => self.read_long_varint(),
        }
    }

    fn read_long_varint(&mut self) -> WireResult<u64> {
        let start = self.offset();
        let mut result: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError::new(start, WireErrorKind::TruncatedVarint));
            };
            self.pos += 1;
            // bits beyond 64 (the 10th byte's upper bits) are ignored, as upb does
            result |= u64::from(byte & 0x7f).wrapping_shl(7 * i);
            if byte < 0x80 {
                return Ok(result);
            }
        }
        Err(WireError::new(start, WireErrorKind::LongVarint))
    }

    /// The next field's number and wire type.
    #[inline]
    pub fn read_tag(&mut self) -> WireResult<(u32, u8)> {
        let start = self.pos;
        let key = self.read_varint()?;
        let number = key >> 3;
        if number == 0 || number >= 1 << 29 {
            return Err(WireError::field(
                self.base + start,
                WireErrorKind::FieldNumber,
                number as u32,
            ));
        }
        Ok((number as u32, (key & 7) as u8))
    }

    #[inline]
    fn take(&mut self, n: usize, number: u32) -> WireResult<&'a [u8]> {
        let start = self.pos;
        if n > self.buf.len() - start {
            return Err(WireError::field(
                self.base + start,
                WireErrorKind::Truncated,
                number,
            ));
        }
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    /// The payload of a length-delimited field whose tag was just read, and its offset in the
    /// request.
    #[inline]
    pub fn read_len(&mut self, number: u32) -> WireResult<(&'a [u8], usize)> {
        let at = self.pos;
        let len = self.read_varint()?;
        let len = usize::try_from(len)
            .map_err(|_| WireError::field(self.base + at, WireErrorKind::LengthOverflow, number))?;
        let payload_at = self.offset();
        Ok((self.take(len, number)?, payload_at))
    }

    #[inline]
    pub fn read_fixed64(&mut self, number: u32) -> WireResult<u64> {
        let b = self.take(8, number)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    /// Skips the value of a field whose tag was just read (a group through its end tag).
    #[inline]
    pub fn skip(&mut self, number: u32, wire_type: u8, depth_left: u32) -> WireResult<()> {
        match wire_type {
            LEN => self.read_len(number).map(|_| ()),
            VARINT => self.read_varint().map(|_| ()),
            I64 => self.take(8, number).map(|_| ()),
            I32 => self.take(4, number).map(|_| ()),
            _ => self.read_value(number, wire_type, depth_left).map(|_| ()),
        }
    }

    /// Reads the value of a field whose tag was just read; a group is skipped through its
    /// end tag, entering nested groups at most `depth_left` levels deep.
    #[inline]
    pub fn read_value(
        &mut self,
        number: u32,
        wire_type: u8,
        depth_left: u32,
    ) -> WireResult<Value<'a>> {
        match wire_type {
            LEN => {
                let (payload, payload_at) = self.read_len(number)?;
                Ok(Value::Len(payload, payload_at))
            }
            VARINT => Ok(Value::Varint(self.read_varint()?)),
            I64 => {
                let b = self.take(8, number)?;
                Ok(Value::Fixed64(u64::from_le_bytes(
                    b.try_into().unwrap_or_default(),
                )))
            }
            I32 => {
                let b = self.take(4, number)?;
                Ok(Value::Fixed32(u32::from_le_bytes(
                    b.try_into().unwrap_or_default(),
                )))
            }
            SGROUP => {
                self.skip_group(number, depth_left)?;
                Ok(Value::Group)
            }
            EGROUP => Err(WireError::field(
                self.offset(),
                WireErrorKind::UnexpectedEndGroup,
                number,
            )),
            _ => Err(WireError::field(
                self.offset(),
                WireErrorKind::WireType(wire_type),
                number,
            )),
        }
    }

    /// Skips a group whose start tag (field `number`) was just read. A group counts as one
    /// level of nesting, as in upb; `depth_left` is how many more levels are allowed.
    fn skip_group(&mut self, number: u32, depth_left: u32) -> WireResult<()> {
        if depth_left == 0 {
            return Err(WireError::field(
                self.offset(),
                WireErrorKind::TooDeep,
                number,
            ));
        }
        loop {
            if self.at_end() {
                return Err(WireError::field(
                    self.offset(),
                    WireErrorKind::UnclosedGroup,
                    number,
                ));
            }
            let (inner, inner_type) = self.read_tag()?;
            if inner_type == EGROUP {
                if inner != number {
                    return Err(WireError::field(
                        self.offset(),
                        WireErrorKind::MismatchedEndGroup(inner),
                        number,
                    ));
                }
                return Ok(());
            }
            self.read_value(inner, inner_type, depth_left - 1)?;
        }
    }

    /// The next field: (number, value), or None at the end of the message.
    #[inline]
    pub fn next_field(&mut self, depth_left: u32) -> WireResult<Option<(u32, Value<'a>)>> {
        if self.at_end() {
            return Ok(None);
        }
        let (number, wire_type) = self.read_tag()?;
        let value = self.read_value(number, wire_type, depth_left)?;
        Ok(Some((number, value)))
    }

    /// Position of the cursor within this message (the start of the next field).
    pub fn position(&self) -> usize {
        self.pos
    }
}

// --- writing ------------------------------------------------------------------------------

pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

pub fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// A length-delimited field holding `payload`.
pub fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// The header (tag and length) of a length-delimited field whose payload follows.
pub fn put_len_header(out: &mut Vec<u8>, number: u32, len: usize) {
    put_tag(out, number, LEN);
    put_varint(out, len as u64);
}

/// Bytes that `put_len_header` writes.
pub fn len_header_size(number: u32, len: usize) -> usize {
    varint_len((u64::from(number) << 3) | u64::from(LEN)) + varint_len(len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(bytes: &[u8]) -> WireResult<u64> {
        Reader::new(bytes, 0).read_varint()
    }

    #[test]
    fn varints_as_upb_reads_them() {
        assert_eq!(varint(&[0x05]), Ok(5));
        assert_eq!(varint(&[0xac, 0x02]), Ok(300));
        // ten bytes: the last one's upper bits fall past 64 and are ignored
        assert_eq!(
            varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Ok(u64::MAX)
        );
        assert!(varint(&[0xff; 11]).is_err());
        assert!(varint(&[0x80]).is_err());
    }

    #[test]
    fn round_trip_of_written_fields() {
        let mut out = Vec::new();
        put_len(&mut out, 2, b"abc");
        put_tag(&mut out, 3, VARINT);
        put_varint(&mut out, 1 << 40);
        let mut reader = Reader::new(&out, 0);
        assert_eq!(
            reader.next_field(100).unwrap(),
            Some((2, Value::Len(b"abc", 2)))
        );
        assert_eq!(
            reader.next_field(100).unwrap(),
            Some((3, Value::Varint(1 << 40)))
        );
        assert_eq!(reader.next_field(100).unwrap(), None);
        assert_eq!(len_header_size(2, 3), 2);
    }

    #[test]
    fn groups_are_skipped_within_the_depth_limit() {
        let nested = |n: usize| -> Vec<u8> {
            let mut b = Vec::new();
            for _ in 0..n {
                b.extend_from_slice(&[0xa3, 0x01]); // start group 20
            }
            for _ in 0..n {
                b.extend_from_slice(&[0xa4, 0x01]); // end group 20
            }
            b
        };
        let ok = |bytes: &[u8], depth: u32| {
            let mut r = Reader::new(bytes, 0);
            while r.next_field(depth)?.is_some() {}
            Ok::<(), WireError>(())
        };
        assert!(ok(&nested(100), 100).is_ok());
        assert!(ok(&nested(101), 100).is_err());
        assert!(ok(&[0xa3, 0x01, 0xac, 0x01], 100).is_err()); // closed by another field's tag
        assert!(ok(&[0xa4, 0x01], 100).is_err()); // an end without a start
        assert!(ok(&[0x0f], 100).is_err()); // wire type 7
        assert!(ok(&[0x00], 100).is_err()); // field 0
    }
}
