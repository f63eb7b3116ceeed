//! Rust values as event fields: each type knows its [`FieldType`] and encodes
//! itself, so a typed event ([`crate::event!`]) writes its fields without any
//! runtime type dispatch.
//!
//! Encodings are those of [`super::Value`]: little-endian, byte-aligned, back to
//! back.

use super::schema::FieldType;

/// A value that can be an event field.
///
/// Implemented for `u8`, `u16`, `u32`, `u64`, `i8`, `i16`, `i32`, `i64`, `f32`,
/// `f64`, `bool`, `&str`, `&[u8]` and fixed arrays `[T; N]` of the integer, float
/// and bool types. `&str` and `&[u8]` are a `u32` length then the bytes; a value
/// longer than `u32::MAX` bytes is cut to its first `u32::MAX` bytes (no
/// sub-buffer holds that much anyway: writing it fails as too big).
///
/// Implementing it for a type of your own (say, a newtype around `u32`) is allowed;
/// `encode` must then write exactly `size()` bytes in the encoding of `TYPE`, or
/// the event is unreadable (a longer write panics on the slice bounds).
pub trait Field {
    /// Its type in the metadata.
    const TYPE: FieldType;
    /// Encoded bytes (a constant for fixed-size types, so that the size of an
    /// event whose fields are all fixed folds to a constant).
    fn size(&self) -> usize;
    /// Writes exactly `self.size()` bytes at the start of `out` (which holds at
    /// least that many) and returns `self.size()`.
    fn encode(&self, out: &mut [u8]) -> usize;
}

/// A [`Field`] type that can be the element of a fixed array `[T; N]`: the
/// integers, the floats and `bool`.
pub trait Element: Field + Copy + sealed::Sealed {
    /// `Self::TYPE`, as a `'static` reference for [`FieldType::Array`].
    const ELEMENT: &'static FieldType;
    /// Encoded bytes of one element.
    const SIZE: usize;
    /// Encodes `items` back to back at the start of `out`; returns the bytes
    /// written (`items.len() * SIZE`).
    #[inline(always)]
    fn encode_all(items: &[Self], out: &mut [u8]) -> usize {
        let mut at = 0;
        for item in items {
            at += item.encode(&mut out[at..]);
        }
        at
    }
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! scalar {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl Field for $t {
            const TYPE: FieldType = FieldType::$variant;
            #[inline(always)]
            fn size(&self) -> usize {
                core::mem::size_of::<$t>()
            }
            #[inline(always)]
            fn encode(&self, out: &mut [u8]) -> usize {
                let bytes = self.to_le_bytes();
                out[..bytes.len()].copy_from_slice(&bytes);
                bytes.len()
            }
        }
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const ELEMENT: &'static FieldType = &FieldType::$variant;
            const SIZE: usize = core::mem::size_of::<$t>();
        }
    )*};
}

scalar!(
    u16 => U16, u32 => U32, u64 => U64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    f32 => F32, f64 => F64,
);

impl Field for u8 {
    const TYPE: FieldType = FieldType::U8;
    #[inline(always)]
    fn size(&self) -> usize {
        1
    }
    #[inline(always)]
    fn encode(&self, out: &mut [u8]) -> usize {
        out[0] = *self;
        1
    }
}
impl sealed::Sealed for u8 {}
impl Element for u8 {
    const ELEMENT: &'static FieldType = &FieldType::U8;
    const SIZE: usize = 1;
    #[inline(always)]
    fn encode_all(items: &[Self], out: &mut [u8]) -> usize {
        out[..items.len()].copy_from_slice(items);
        items.len()
    }
}

impl Field for bool {
    const TYPE: FieldType = FieldType::Bool;
    #[inline(always)]
    fn size(&self) -> usize {
        1
    }
    #[inline(always)]
    fn encode(&self, out: &mut [u8]) -> usize {
        out[0] = *self as u8;
        1
    }
}
impl sealed::Sealed for bool {}
impl Element for bool {
    const ELEMENT: &'static FieldType = &FieldType::Bool;
    const SIZE: usize = 1;
}

/// `[u8; N]` is [`FieldType::Bytes`]; other arrays are [`FieldType::Array`].
impl<T: Element, const N: usize> Field for [T; N] {
    const TYPE: FieldType = match T::ELEMENT {
        FieldType::U8 => FieldType::Bytes(N),
        _ => FieldType::Array(T::ELEMENT, N),
    };
    #[inline(always)]
    fn size(&self) -> usize {
        N * T::SIZE
    }
    #[inline(always)]
    fn encode(&self, out: &mut [u8]) -> usize {
        T::encode_all(self, out)
    }
}

/// The bytes of a length-prefixed field, cut to what a `u32` length can say.
#[inline(always)]
fn prefixed(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(u32::MAX as usize)]
}

#[inline(always)]
fn encode_prefixed(bytes: &[u8], out: &mut [u8]) -> usize {
    let bytes = prefixed(bytes);
    out[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    out[4..4 + bytes.len()].copy_from_slice(bytes);
    4 + bytes.len()
}

/// A `u32` length then the UTF-8 bytes, no terminator ([`FieldType::String`]).
impl Field for &str {
    const TYPE: FieldType = FieldType::String;
    #[inline(always)]
    fn size(&self) -> usize {
        4 + prefixed(self.as_bytes()).len()
    }
    #[inline(always)]
    fn encode(&self, out: &mut [u8]) -> usize {
        encode_prefixed(self.as_bytes(), out)
    }
}

/// A `u32` length then the bytes ([`FieldType::Sequence`]).
impl Field for &[u8] {
    const TYPE: FieldType = FieldType::Sequence;
    #[inline(always)]
    fn size(&self) -> usize {
        4 + prefixed(self).len()
    }
    #[inline(always)]
    fn encode(&self, out: &mut [u8]) -> usize {
        encode_prefixed(self, out)
    }
}
