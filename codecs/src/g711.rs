//! G.711 A-law and µ-law (PCMA, PCMU), bit-exact with the ITU-T G.191
//! reference (`g711.c` of the Software Tool Library).
//!
//! No maintained crate implements G.711 with G.191's exact rounding, so the
//! reference arithmetic is reproduced here once, in `const fn`s, and turned
//! into tables at compile time: 256 entries to expand, and 16,384 (µ-law, 14
//! significant bits) or 4,096 (A-law, 12 bits after the shift) to compress. The
//! hot path is one table load per sample. Packet loss concealment for G.711
//! is the caller's repeat of the last frame (the jitter buffer's job).

use crate::{AudioDecoder, AudioEncoder, CodecError, Pcm, Repeat};

/// G.191 `alaw_compress` for one 16-bit sample (its 13 most significant bits count).
const fn alaw_compress_ref(lin: i16) -> u8 {
    // One's complement for negatives, then the 12 magnitude bits.
    let mut ix: i32 = if lin < 0 {
        (!(lin as i32)) >> 4
    } else {
        (lin as i32) >> 4
    };
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if lin >= 0 {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

/// G.191 `alaw_expand`.
const fn alaw_expand_ref(a: u8) -> i16 {
    let ix = ((a ^ 0x55) & 0x7f) as i32;
    let iexp = ix >> 4;
    let mut mant = ix & 0x0f;
    if iexp > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 8;
    if iexp > 1 {
        mant <<= iexp - 1;
    }
    (if a > 127 { mant } else { -mant }) as i16
}

/// G.191 `ulaw_compress` for one 16-bit sample (its 14 most significant bits count).
const fn ulaw_compress_ref(lin: i16) -> u8 {
    let mut absno: i32 = if lin < 0 {
        ((!(lin as i32)) >> 2) + 33
    } else {
        ((lin as i32) >> 2) + 33
    };
    if absno > 0x1fff {
        absno = 0x1fff;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high = 8 - segno;
    let low = 0x0f - ((absno >> segno) & 0x0f);
    let mut out = (high << 4) | low;
    if lin >= 0 {
        out |= 0x80;
    }
    out as u8
}

/// G.191 `ulaw_expand`.
const fn ulaw_expand_ref(u: u8) -> i16 {
    let sign: i32 = if u < 0x80 { -1 } else { 1 };
    let mantissa = !(u as i32);
    let exponent = (mantissa >> 4) & 0x07;
    let segment = exponent + 1;
    let mantissa = mantissa & 0x0f;
    let step = 4 << segment;
    (sign * ((0x80 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
}

/// Builds a 256-entry expand table from a reference function.
macro_rules! expand_table {
    ($f:ident) => {{
        let mut t = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = $f(i as u8);
            i += 1;
        }
        t
    }};
}

/// Builds a compress table indexed by the sample's significant bits
/// (`lin >> shift`, offset to be non-negative): every sample sharing those
/// bits compresses alike in the reference.
macro_rules! compress_table {
    ($f:ident, $n:expr, $shift:expr) => {{
        let mut t = [0u8; $n];
        let mut i = 0;
        while i < $n {
            t[i] = $f(((i as i32 - ($n as i32 / 2)) << $shift) as i16);
            i += 1;
        }
        t
    }};
}

static ALAW_EXPAND: [i16; 256] = expand_table!(alaw_expand_ref);
static ULAW_EXPAND: [i16; 256] = expand_table!(ulaw_expand_ref);
static ALAW_COMPRESS: [u8; 4096] = compress_table!(alaw_compress_ref, 4096, 4);
static ULAW_COMPRESS: [u8; 16384] = compress_table!(ulaw_compress_ref, 16384, 2);

/// A-law code for a sample.
#[inline]
pub fn alaw_encode(lin: i16) -> u8 {
    ALAW_COMPRESS[((i32::from(lin) >> 4) + 2048) as usize]
}

/// Sample for an A-law code.
#[inline]
pub fn alaw_decode(a: u8) -> i16 {
    ALAW_EXPAND[usize::from(a)]
}

/// µ-law code for a sample.
#[inline]
pub fn ulaw_encode(lin: i16) -> u8 {
    ULAW_COMPRESS[((i32::from(lin) >> 2) + 8192) as usize]
}

/// Sample for a µ-law code.
#[inline]
pub fn ulaw_decode(u: u8) -> i16 {
    ULAW_EXPAND[usize::from(u)]
}

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law, RTP payload type 0, `PCMU`.
    Ulaw,
    /// A-law, RTP payload type 8, `PCMA`.
    Alaw,
}

/// A G.711 encoder or decoder (8 kHz mono). The only state is the last
/// decoded frame, which concealment repeats.
#[derive(Debug, Clone)]
pub struct G711 {
    law: Law,
    repeat: Repeat,
}

impl G711 {
    /// A codec for `law`.
    pub fn new(law: Law) -> Self {
        Self {
            law,
            repeat: Repeat::default(),
        }
    }
}

impl AudioEncoder for G711 {
    fn encode(&mut self, pcm: &Pcm, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if pcm.sample_rate != 8000 || pcm.channels != 1 {
            return Err(CodecError::InvalidInput);
        }
        out.clear();
        let f = match self.law {
            Law::Ulaw => ulaw_encode,
            Law::Alaw => alaw_encode,
        };
        out.extend(pcm.samples.iter().map(|&s| f(s)));
        Ok(())
    }
}

impl AudioDecoder for G711 {
    fn decode(&mut self, payload: &[u8], out: &mut Pcm) -> Result<(), CodecError> {
        out.sample_rate = 8000;
        out.channels = 1;
        out.samples.clear();
        // Nothing to decode: the caller conceals (and the history stays).
        if payload.is_empty() {
            return Err(CodecError::InvalidPayload);
        }
        let f = match self.law {
            Law::Ulaw => ulaw_decode,
            Law::Alaw => alaw_decode,
        };
        out.samples.extend(payload.iter().map(|&b| f(b)));
        self.repeat.remember(&out.samples);
        Ok(())
    }

    /// Repeats the last frame, halving its level for each further lost one.
    fn conceal(
        &mut self,
        _next: Option<&[u8]>,
        samples: usize,
        out: &mut Pcm,
    ) -> Result<(), CodecError> {
        self.repeat.conceal(8000, samples, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_equal_the_reference_arithmetic_for_every_sample() {
        for lin in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(lin), ulaw_compress_ref(lin), "{lin}");
            assert_eq!(alaw_encode(lin), alaw_compress_ref(lin), "{lin}");
        }
    }

    /// Against an independent implementation (Python's audioop, from the
    /// Sun/CCITT reference code), every sample and every code. The two agree
    /// everywhere except negative µ-law samples: audioop takes their magnitude
    /// by negation, G.191 by one's complement (`!x`, so -1 is "negative zero",
    /// 0x7f). The negative half is therefore checked through G.191's symmetry:
    /// `ulaw(x) == ulaw(!x) ^ 0x80`, with the positive half checked byte for byte.
    #[test]
    fn golden_files_match_for_every_input() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/g711");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let (ue, ae) = (read("ulaw_encode.bin"), read("alaw_encode.bin"));
        for (i, lin) in (i16::MIN..=i16::MAX).enumerate() {
            assert_eq!(alaw_encode(lin), ae[i], "A-law encode {lin}");
            if lin >= 0 {
                assert_eq!(ulaw_encode(lin), ue[i], "µ-law encode {lin}");
            } else {
                assert_eq!(
                    ulaw_encode(lin),
                    ulaw_encode(!lin) ^ 0x80,
                    "µ-law encode {lin}"
                );
            }
        }
        let (ud, ad) = (read("ulaw_decode.bin"), read("alaw_decode.bin"));
        for c in 0..=255u8 {
            let at = |t: &[u8]| i16::from_le_bytes([t[2 * c as usize], t[2 * c as usize + 1]]);
            assert_eq!(ulaw_decode(c), at(&ud), "µ-law decode {c:#x}");
            assert_eq!(alaw_decode(c), at(&ad), "A-law decode {c:#x}");
        }
    }

    #[test]
    fn known_codes() {
        // Silence, full scale and the smallest steps, as G.711 tabulates them.
        assert_eq!((ulaw_encode(0), ulaw_encode(-1)), (0xff, 0x7f));
        assert_eq!((ulaw_encode(i16::MAX), ulaw_encode(i16::MIN)), (0x80, 0x00));
        assert_eq!((alaw_encode(0), alaw_encode(-1)), (0xd5, 0x55));
        assert_eq!((alaw_encode(i16::MAX), alaw_encode(i16::MIN)), (0xaa, 0x2a));
        assert_eq!(
            (ulaw_decode(0x80), ulaw_decode(0x00), ulaw_decode(0xff)),
            (32124, -32124, 0)
        );
        assert_eq!(
            (alaw_decode(0xaa), alaw_decode(0x2a), alaw_decode(0xd5)),
            (32256, -32256, 8)
        );
    }

    #[test]
    fn decode_then_encode_is_identity_on_codes() {
        for c in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#x}");
            // µ-law has two zeros (0x7f and 0xff); both decode to 0, which encodes as 0xff.
            let back = ulaw_encode(ulaw_decode(c));
            assert!(
                back == c || (c == 0x7f && back == 0xff),
                "µ-law {c:#x} -> {back:#x}"
            );
        }
    }

    #[test]
    fn the_trait_checks_the_pcm_shape() {
        let mut e = G711::new(Law::Ulaw);
        let mut out = vec![];
        let pcm = Pcm {
            sample_rate: 8000,
            channels: 1,
            samples: vec![0, 1000, -1000],
        };
        e.encode(&pcm, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        let mut back = Pcm {
            sample_rate: 0,
            channels: 0,
            samples: vec![],
        };
        G711::new(Law::Ulaw).decode(&out, &mut back).unwrap();
        assert_eq!(back.samples[0], 0);
        assert!((back.samples[1] - 1000).abs() < 40);
        let wide = Pcm {
            sample_rate: 16000,
            ..pcm
        };
        assert_eq!(e.encode(&wide, &mut out), Err(CodecError::InvalidInput));
    }
}
