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

/// Why bytes are not a well-formed message. `offset` is from the start of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub what: String,
}

impl WireError {
    pub fn new(offset: usize, what: impl Into<String>) -> Self {
        WireError {
            offset,
            what: what.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.what, self.offset)
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

    pub fn read_varint(&mut self) -> WireResult<u64> {
        let start = self.offset();
        let mut result: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError::new(start, "truncated varint"));
            };
            self.pos += 1;
            // bits beyond 64 (the 10th byte's upper bits) are ignored, as upb does
            result |= u64::from(byte & 0x7f).wrapping_shl(7 * i);
            if byte < 0x80 {
                return Ok(result);
            }
        }
        Err(WireError::new(start, "varint longer than 10 bytes"))
    }

    /// The next field's number and wire type.
    pub fn read_tag(&mut self) -> WireResult<(u32, u8)> {
        let start = self.offset();
        let key = self.read_varint()?;
        let number = key >> 3;
        let wire_type = (key & 7) as u8;
        if number == 0 || number >= 1 << 29 {
            return Err(WireError::new(
                start,
                format!("invalid field number {number}"),
            ));
        }
        Ok((number as u32, wire_type))
    }

    fn take(&mut self, n: usize, what: &str) -> WireResult<&'a [u8]> {
        let start = self.pos;
        let left = self.buf.len() - start;
        if n > left {
            return Err(WireError::new(
                self.base + start,
                format!("{what}: {n} bytes run past the end of the message ({left} left)"),
            ));
        }
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    /// Reads the value of a field whose tag was just read; a group is skipped through its
    /// end tag, entering nested groups at most `depth_left` levels deep.
    pub fn read_value(
        &mut self,
        number: u32,
        wire_type: u8,
        depth_left: u32,
    ) -> WireResult<Value<'a>> {
        match wire_type {
            VARINT => Ok(Value::Varint(self.read_varint()?)),
            I64 => {
                let b = self.take(8, "fixed64 value")?;
                Ok(Value::Fixed64(u64::from_le_bytes(
                    b.try_into().expect("8 bytes"),
                )))
            }
            I32 => {
                let b = self.take(4, "fixed32 value")?;
                Ok(Value::Fixed32(u32::from_le_bytes(
                    b.try_into().expect("4 bytes"),
                )))
            }
            LEN => {
                let at = self.offset();
                let len = self.read_varint()?;
                let len =
                    usize::try_from(len).map_err(|_| WireError::new(at, "length overflows"))?;
                let payload_at = self.offset();
                let payload = self.take(len, "length-delimited field")?;
                Ok(Value::Len(payload, payload_at))
            }
            SGROUP => {
                self.skip_group(number, depth_left)?;
                Ok(Value::Group)
            }
            EGROUP => Err(WireError::new(
                self.offset(),
                format!("unexpected end-group tag {number}"),
            )),
            _ => Err(WireError::new(
                self.offset(),
                format!("invalid wire type {wire_type}"),
            )),
        }
    }

    /// Skips a group whose start tag (field `number`) was just read. A group counts as one
    /// level of nesting, as in upb; `depth_left` is how many more levels are allowed.
    fn skip_group(&mut self, number: u32, depth_left: u32) -> WireResult<()> {
        if depth_left == 0 {
            return Err(WireError::new(
                self.offset(),
                "message nested too deeply (more than 100 levels)",
            ));
        }
        loop {
            if self.at_end() {
                return Err(WireError::new(
                    self.offset(),
                    format!("group {number} has no end-group tag"),
                ));
            }
            let (inner, inner_type) = self.read_tag()?;
            if inner_type == EGROUP {
                if inner != number {
                    return Err(WireError::new(
                        self.offset(),
                        format!("group {number} closed by end-group tag {inner}"),
                    ));
                }
                return Ok(());
            }
            self.read_value(inner, inner_type, depth_left - 1)?;
        }
    }

    /// The next field: (number, value), or None at the end of the message.
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
