//! SRTP and SRTCP (RFC 3711) with the suites SDES (RFC 4568) negotiates for
//! SIP legs: AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 and
//! AEAD_AES_128_GCM (RFC 7714), on RustCrypto's `aes`, `ctr`, `hmac`, `sha1`
//! and `aes-gcm`.
//!
//! Owns: master keys and their `inline:` form, the key derivation function,
//! per-SSRC rollover counters, the 64-packet replay window, and packet
//! protection in the caller's buffer. One [`Context`] protects one direction
//! (ours to the peer, or the peer's to us). It must not parse SDP beyond the
//! key parameters nor touch sockets.
//!
//! Written here instead of on rtc-srtp because that crate allocates a new
//! buffer and re-parses the RTP header (into a `Vec`-holding struct) for every
//! packet; the relay path protects in place with no allocation. Debian's
//! libsrtp was measured 7x slower than RustCrypto's AES-NI path here.

use std::fmt;

use aes::Aes128;
use aes_gcm::{AeadInOut, Aes128Gcm, KeyInit};
use base64::Engine as _;
use ctr::cipher::{InnerIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::rtp::{RtpHeader, SeqTracker};

type AesCtr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// Protection suite names as in SDP `a=crypto` (RFC 4568, RFC 7714).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit RTP tag (80-bit on RTCP).
    AesCm128HmacSha1_32,
    /// AES-128 GCM with a 128-bit tag.
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite, in our order of preference for offers.
    pub const ALL: [Self; 3] = [
        Self::AeadAes128Gcm,
        Self::AesCm128HmacSha1_80,
        Self::AesCm128HmacSha1_32,
    ];

    /// The SDP name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// Looks a suite up by its SDP name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master salt length in bytes (14 for AES-CM, 12 for GCM).
    pub fn salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
            Self::AeadAes128Gcm => 16,
        }
    }

    fn rtcp_tag_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 16,
            _ => 10,
        }
    }
}

/// Why a packet was not protected or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Not a well-formed RTP/RTCP packet, or too short for the tag.
    Malformed,
    /// The authentication tag did not verify.
    AuthFailed,
    /// Already received (or older than the replay window).
    Replayed,
    /// A key parameter could not be read.
    BadKey(&'static str),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed SRTP/SRTCP packet"),
            Self::AuthFailed => f.write_str("SRTP authentication failed"),
            Self::Replayed => f.write_str("SRTP packet replayed or too old"),
            Self::BadKey(why) => write!(f, "bad SRTP key parameter: {why}"),
        }
    }
}

impl std::error::Error for SrtpError {}

/// A suite with its master key and salt, as SDES carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    /// Which suite the key is for.
    pub suite: Suite,
    key: [u8; 16],
    salt: [u8; 14],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A key from raw bytes; `salt` must have the suite's salt length.
    pub fn new(suite: Suite, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        if key.len() != 16 || salt.len() != suite.salt_len() {
            return Err(SrtpError::BadKey("wrong key or salt length"));
        }
        let mut k = Self {
            suite,
            key: [0; 16],
            salt: [0; 14],
        };
        k.key.copy_from_slice(key);
        k.salt[..salt.len()].copy_from_slice(salt);
        Ok(k)
    }

    /// A fresh random key for our side of a call.
    pub fn generate(suite: Suite) -> Self {
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        rand::fill(&mut key);
        rand::fill(&mut salt[..suite.salt_len()]);
        Self { suite, key, salt }
    }

    /// Reads the key parameter of an `a=crypto` line:
    /// `inline:<base64 key||salt>[|lifetime][|MKI:length]`. A lifetime is
    /// accepted and ignored (calls are far shorter); an MKI is refused, as
    /// this implementation does not carry one on the wire.
    pub fn from_inline(suite: Suite, param: &str) -> Result<Self, SrtpError> {
        let body = param
            .strip_prefix("inline:")
            .ok_or(SrtpError::BadKey("key method is not inline"))?;
        let mut parts = body.split('|');
        let b64 = parts.next().unwrap_or_default();
        for extra in parts {
            if extra.contains(':') {
                return Err(SrtpError::BadKey("MKI is not supported"));
            }
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| SrtpError::BadKey("key is not base64"))?;
        if raw.len() != 16 + suite.salt_len() {
            return Err(SrtpError::BadKey("key||salt has the wrong length"));
        }
        Self::new(suite, &raw[..16], &raw[16..])
    }

    /// The `inline:` key parameter for an `a=crypto` line.
    pub fn to_inline(&self) -> String {
        let mut raw = self.key.to_vec();
        raw.extend_from_slice(&self.salt[..self.suite.salt_len()]);
        format!(
            "inline:{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// RFC 3711 section 4.3.1 with a key derivation rate of 0: AES-CM keystream
/// from the master key, IV = (label at byte 7 XOR master salt) || 0x0000.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&master.salt);
    iv[7] ^= label;
    let mut ctr = ctr_stream(&Aes128::new(&master.key.into()), iv);
    out.fill(0);
    ctr.apply_keystream(out);
}

enum Keys {
    Cm {
        cipher: Aes128,
        salt: [u8; 14],
        auth: HmacSha1,
    },
    Gcm {
        cipher: Aes128Gcm,
        salt: [u8; 12],
    },
}

impl Keys {
    fn derive(master: &MasterKey, labels: [u8; 3]) -> Result<Self, SrtpError> {
        let mut key = [0u8; 16];
        derive(master, labels[0], &mut key);
        match master.suite {
            Suite::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                derive(master, labels[2], &mut salt);
                Ok(Self::Gcm {
                    cipher: Aes128Gcm::new(&key.into()),
                    salt,
                })
            }
            _ => {
                let mut auth = [0u8; 20];
                let mut salt = [0u8; 14];
                derive(master, labels[1], &mut auth);
                derive(master, labels[2], &mut salt);
                Ok(Self::Cm {
                    cipher: Aes128::new(&key.into()),
                    salt,
                    auth: <HmacSha1 as KeyInit>::new_from_slice(&auth)
                        .map_err(|_| SrtpError::BadKey("HMAC key"))?,
                })
            }
        }
    }
}

/// AES in counter mode from an expanded key (cheap to clone) and an IV.
fn ctr_stream(cipher: &Aes128, iv: [u8; 16]) -> AesCtr {
    AesCtr::from_core(ctr::CtrCore::inner_iv_init(cipher.clone(), &iv.into()))
}

/// AES-CM IV (RFC 3711 section 4.1.1): salt XOR SSRC << 64 XOR index << 16.
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}

/// GCM IV (RFC 7714 sections 8.1 and 9.1): 0x0000 || SSRC || 48-bit index,
/// XOR the salt. For SRTCP the index is the 31-bit SRTCP index.
fn gcm_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (d, s) in iv.iter_mut().zip(salt) {
        *d ^= s;
    }
    iv
}

fn hmac_tag(auth: &HmacSha1, parts: [&[u8]; 2], len: usize) -> [u8; 10] {
    let mut mac = auth.clone();
    mac.update(parts[0]);
    mac.update(parts[1]);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; 10];
    tag[..len].copy_from_slice(&full[..len]);
    tag
}

/// Checks a truncated HMAC-SHA1 tag over `parts` in constant time.
fn hmac_verify(auth: &HmacSha1, parts: [&[u8]; 2], tag: &[u8]) -> bool {
    let mut mac = auth.clone();
    mac.update(parts[0]);
    mac.update(parts[1]);
    mac.verify_truncated_left(tag).is_ok()
}

/// Replay window (RFC 3711 section 3.3.2) over 64 indices below the highest.
#[derive(Debug, Clone, Copy, Default)]
struct ReplayWindow {
    top: Option<u64>,
    bits: u64,
}

impl ReplayWindow {
    fn check(&self, index: u64) -> bool {
        match self.top {
            None => true,
            Some(top) if index > top => true,
            Some(top) => {
                let back = top - index;
                back < 64 && self.bits & (1 << back) == 0
            }
        }
    }

    fn accept(&mut self, index: u64) {
        match self.top {
            Some(top) if index <= top => self.bits |= 1 << (top - index),
            Some(top) => {
                let shift = index - top;
                self.bits = if shift >= 64 { 0 } else { self.bits << shift };
                self.bits |= 1;
                self.top = Some(index);
            }
            None => {
                self.top = Some(index);
                self.bits = 1;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct StreamState {
    seq: SeqTracker,
    replay: ReplayWindow,
    rtcp_index: u32,
    rtcp_replay: ReplayWindow,
}

/// One direction of SRTP and SRTCP: ours to protect, or the peer's to check.
pub struct Context {
    suite: Suite,
    rtp: Keys,
    rtcp: Keys,
    /// Per-SSRC state; calls carry a handful of SSRCs, so a vector is fastest.
    streams: Vec<(u32, StreamState)>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// At most this many SSRCs are tracked per context; more is an attack.
const MAX_STREAMS: usize = 32;

impl Context {
    /// Derives the session keys for one direction.
    pub fn new(master: &MasterKey) -> Result<Self, SrtpError> {
        Ok(Self {
            suite: master.suite,
            rtp: Keys::derive(master, [0, 1, 2])?,
            rtcp: Keys::derive(master, [3, 4, 5])?,
            streams: Vec::new(),
        })
    }

    /// The negotiated suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|(s, _)| *s == ssrc)
    }

    /// The state at `pos` (from [`Self::find`]), created for `ssrc` when
    /// absent. Receivers call this only once a packet has authenticated, so
    /// forged SSRCs cannot fill the table.
    fn entry(&mut self, pos: Option<usize>, ssrc: u32) -> Result<&mut StreamState, SrtpError> {
        let pos = match pos {
            Some(pos) => pos,
            None if self.streams.len() >= MAX_STREAMS => return Err(SrtpError::Malformed),
            None => {
                self.streams.push((ssrc, StreamState::default()));
                self.streams.len() - 1
            }
        };
        Ok(&mut self.streams[pos].1)
    }

    fn stream(&mut self, ssrc: u32) -> Result<&mut StreamState, SrtpError> {
        self.entry(self.find(ssrc), ssrc)
    }

    /// A copy of the receive state for `ssrc` without creating it.
    fn peek(&self, ssrc: u32) -> (Option<usize>, StreamState) {
        let pos = self.find(ssrc);
        (pos, pos.map(|i| self.streams[i].1).unwrap_or_default())
    }

    /// Encrypts and authenticates the RTP packet in `packet`, appending the tag.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = RtpHeader::parse_header(packet).map_err(|_| SrtpError::Malformed)?;
        let state = self.stream(header.ssrc)?;
        let index = state.seq.estimate(header.sequence);
        state.seq.accept(index);
        self.seal_rtp(packet, &header, index)
    }

    fn seal_rtp(
        &self,
        packet: &mut Vec<u8>,
        header: &RtpHeader,
        index: u64,
    ) -> Result<(), SrtpError> {
        let hl = header.header_len;
        match &self.rtp {
            Keys::Cm { cipher, salt, auth } => {
                let iv = cm_iv(salt, header.ssrc, index);
                ctr_stream(cipher, iv).apply_keystream(&mut packet[hl..]);
                let roc = ((index >> 16) as u32).to_be_bytes();
                let len = self.suite.rtp_tag_len();
                let tag = hmac_tag(auth, [packet, &roc], len);
                packet.extend_from_slice(&tag[..len]);
            }
            Keys::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, header.ssrc, index);
                let (aad, body) = packet.split_at_mut(hl);
                let tag = cipher
                    .encrypt_inout_detached(&iv.into(), aad, body.into())
                    .map_err(|_| SrtpError::Malformed)?;
                packet.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `packet`, removing the tag.
    /// Replays and forgeries are refused and leave the state untouched.
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let body_len = packet
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::Malformed)?;
        // The header without the tag; the padding count is still encrypted.
        let header =
            RtpHeader::parse_header(&packet[..body_len]).map_err(|_| SrtpError::Malformed)?;
        let hl = header.header_len;
        let (pos, state) = self.peek(header.ssrc);
        let index = state.seq.estimate(header.sequence);
        if !state.replay.check(index) {
            return Err(SrtpError::Replayed);
        }
        match &self.rtp {
            Keys::Cm { cipher, salt, auth } => {
                let roc = ((index >> 16) as u32).to_be_bytes();
                let (body, tag) = packet.split_at(body_len);
                if !hmac_verify(auth, [body, &roc], tag) {
                    return Err(SrtpError::AuthFailed);
                }
                packet.truncate(body_len);
                let iv = cm_iv(salt, header.ssrc, index);
                ctr_stream(cipher, iv).apply_keystream(&mut packet[hl..]);
            }
            Keys::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, header.ssrc, index);
                let (rest, tag) = packet.split_at_mut(body_len);
                let (aad, body) = rest.split_at_mut(hl);
                let tag: &[u8; 16] = (&*tag).try_into().map_err(|_| SrtpError::Malformed)?;
                cipher
                    .decrypt_inout_detached(&iv.into(), aad, body.into(), &(*tag).into())
                    .map_err(|_| SrtpError::AuthFailed)?;
                packet.truncate(body_len);
            }
        }
        let state = self.entry(pos, header.ssrc)?;
        state.seq.accept(index);
        state.replay.accept(index);
        Ok(())
    }

    /// Encrypts and authenticates a compound RTCP packet, appending
    /// E||SRTCP index and the tag (RFC 3711 section 3.4, RFC 7714 section 9).
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        if packet.len() < 8 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let state = self.stream(ssrc)?;
        let index = state.rtcp_index;
        state.rtcp_index = (index + 1) & 0x7fff_ffff;
        self.seal_rtcp(packet, ssrc, index)
    }

    fn seal_rtcp(&self, packet: &mut Vec<u8>, ssrc: u32, index: u32) -> Result<(), SrtpError> {
        let e_index = (0x8000_0000 | index).to_be_bytes();
        match &self.rtcp {
            Keys::Cm { cipher, salt, auth } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr_stream(cipher, iv).apply_keystream(&mut packet[8..]);
                packet.extend_from_slice(&e_index);
                let tag = hmac_tag(auth, [packet, &[]], 10);
                packet.extend_from_slice(&tag);
            }
            Keys::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, ssrc, u64::from(index));
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&packet[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = cipher
                    .encrypt_inout_detached(&iv.into(), &aad, (&mut packet[8..]).into())
                    .map_err(|_| SrtpError::Malformed)?;
                packet.extend_from_slice(&tag);
                packet.extend_from_slice(&e_index);
            }
        }
        Ok(())
    }

    /// Checks and decrypts an SRTCP packet, leaving the plain compound packet.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.rtcp_tag_len();
        if packet.len() < 8 + 4 + tag_len {
            return Err(SrtpError::Malformed);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let n = packet.len();
        // CM: ... || E+index || tag. GCM: ... || tag || E+index.
        let e_at = match self.rtcp {
            Keys::Cm { .. } => n - tag_len - 4,
            Keys::Gcm { .. } => n - 4,
        };
        let e_index = u32::from_be_bytes([
            packet[e_at],
            packet[e_at + 1],
            packet[e_at + 2],
            packet[e_at + 3],
        ]);
        let encrypted = e_index & 0x8000_0000 != 0;
        let index = e_index & 0x7fff_ffff;
        let (pos, state) = self.peek(ssrc);
        if !state.rtcp_replay.check(u64::from(index)) {
            return Err(SrtpError::Replayed);
        }
        match &self.rtcp {
            Keys::Cm { cipher, salt, auth } => {
                let (body, tag) = packet.split_at(n - tag_len);
                if !hmac_verify(auth, [body, &[]], tag) {
                    return Err(SrtpError::AuthFailed);
                }
                packet.truncate(e_at);
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    ctr_stream(cipher, iv).apply_keystream(&mut packet[8..]);
                }
            }
            Keys::Gcm { cipher, salt } => {
                if !encrypted {
                    // Authentication-only SRTCP is never negotiated by SDES.
                    return Err(SrtpError::Malformed);
                }
                let iv = gcm_iv(salt, ssrc, u64::from(index));
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&packet[..8]);
                aad[8..].copy_from_slice(&e_index.to_be_bytes());
                let (rest, tail) = packet.split_at_mut(e_at - tag_len);
                let tag: &[u8; 16] = (&tail[..16]).try_into().map_err(|_| SrtpError::Malformed)?;
                cipher
                    .decrypt_inout_detached(
                        &iv.into(),
                        &aad,
                        (&mut rest[8..]).into(),
                        &(*tag).into(),
                    )
                    .map_err(|_| SrtpError::AuthFailed)?;
                packet.truncate(e_at - tag_len);
            }
        }
        self.entry(pos, ssrc)?.rtcp_replay.accept(u64::from(index));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(s).unwrap()
    }

    /// A context whose session keys are set directly (the RFC 3711 B.2 and
    /// RFC 7714 vectors give session keys, not master keys).
    fn with_session_keys(suite: Suite, key: &str, salt: &str) -> Context {
        let key: [u8; 16] = unhex(key).try_into().unwrap();
        let salt = unhex(salt);
        let keys = || match suite {
            Suite::AeadAes128Gcm => Keys::Gcm {
                cipher: Aes128Gcm::new(&key.into()),
                salt: salt.clone().try_into().unwrap(),
            },
            _ => Keys::Cm {
                cipher: Aes128::new(&key.into()),
                salt: salt.clone().try_into().unwrap(),
                auth: <HmacSha1 as KeyInit>::new_from_slice(&[0; 20]).unwrap(),
            },
        };
        Context {
            suite,
            rtp: keys(),
            rtcp: keys(),
            streams: Vec::new(),
        }
    }

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let ctx = with_session_keys(
            Suite::AesCm128HmacSha1_80,
            "2B7E151628AED2A6ABF7158809CF4F3C",
            "F0F1F2F3F4F5F6F7F8F9FAFBFCFD",
        );
        // SSRC 0, index 0: a zero payload encrypts to the keystream.
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[0; 48]);
        let header = RtpHeader::parse(&packet).unwrap();
        ctx.seal_rtp(&mut packet, &header, 0).unwrap();
        assert_eq!(
            packet[12..60],
            unhex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0"
            )
        );
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = MasterKey::new(
            Suite::AesCm128HmacSha1_80,
            &unhex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &unhex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive(&master, 0, &mut key);
        derive(&master, 2, &mut salt);
        derive(&master, 1, &mut auth);
        assert_eq!(key[..], unhex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(salt[..], unhex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(auth[..], unhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    /// libsrtp's `srtp_driver` AES_CM_128_HMAC_SHA1_80 packet: master key
    /// in, so it covers key derivation, AES-CM and the HMAC together.
    #[test]
    fn aes_cm_sha1_80_packet_matches_libsrtp() {
        let master = MasterKey::new(
            Suite::AesCm128HmacSha1_80,
            &unhex("e1f97a0d3e018be0d64fa32c06de4139"),
            &unhex("0ec675ad498afeebb6960b3aabe6"),
        )
        .unwrap();
        let plain = unhex("800f1234decafbadcafebabeabababababababababababababababab");
        let protected =
            unhex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb");
        let mut p = plain.clone();
        Context::new(&master).unwrap().protect_rtp(&mut p).unwrap();
        assert_eq!(p, protected);
        let mut rx = Context::new(&master).unwrap();
        rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p, plain);
        // The same packet again is a replay.
        let mut again = protected.clone();
        assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
        // A flipped bit fails authentication, and does not poison the state.
        let mut rx = Context::new(&master).unwrap();
        let mut bad = protected.clone();
        bad[14] ^= 1;
        assert_eq!(rx.unprotect_rtp(&mut bad), Err(SrtpError::AuthFailed));
        let mut good = protected;
        rx.unprotect_rtp(&mut good).unwrap();
    }

    const GCM_KEY: &str = "000102030405060708090a0b0c0d0e0f";
    const GCM_SALT: &str = "517569642070726f2071756f";

    #[test]
    fn rfc7714_16_1_rtp() {
        let plain = unhex(
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
             69736120 696e2070 61727465 73207472 6573",
        );
        let protected = unhex(
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        );
        let mut tx = with_session_keys(Suite::AeadAes128Gcm, GCM_KEY, GCM_SALT);
        let mut p = plain.clone();
        tx.protect_rtp(&mut p).unwrap();
        assert_eq!(p, protected);
        let mut rx = with_session_keys(Suite::AeadAes128Gcm, GCM_KEY, GCM_SALT);
        rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p, plain);
        let mut bad = protected;
        bad[20] ^= 1;
        let mut rx = with_session_keys(Suite::AeadAes128Gcm, GCM_KEY, GCM_SALT);
        assert_eq!(rx.unprotect_rtp(&mut bad), Err(SrtpError::AuthFailed));
    }

    #[test]
    fn rfc7714_17_1_rtcp() {
        let plain = unhex(
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
             deadbeef deadbeef deadbeef deadbeef deadbeef",
        );
        let protected = unhex(
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
             c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
             45d9eade 800005d4",
        );
        let mut tx = with_session_keys(Suite::AeadAes128Gcm, GCM_KEY, GCM_SALT);
        tx.stream(0x4d61_7273).unwrap().rtcp_index = 0x5d4;
        let mut p = plain.clone();
        tx.protect_rtcp(&mut p).unwrap();
        assert_eq!(p, protected);
        let mut rx = with_session_keys(Suite::AeadAes128Gcm, GCM_KEY, GCM_SALT);
        rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, plain);
        let mut again = protected;
        assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
    }

    #[test]
    fn every_suite_round_trips_rtp_and_rtcp_across_a_rollover() {
        for suite in Suite::ALL {
            let master = MasterKey::generate(suite);
            let inline = master.to_inline();
            let peer = MasterKey::from_inline(suite, &format!("{inline}|2^31")).unwrap();
            assert_eq!(peer, master);
            let (mut tx, mut rx) = (Context::new(&master).unwrap(), Context::new(&peer).unwrap());
            for i in 0..200u32 {
                let seq = (65_450 + i) as u16;
                let mut p = Vec::new();
                super::super::rtp::write(
                    &mut p,
                    &RtpHeader::new(0, seq, i * 160, 7, false),
                    &[i as u8; 160],
                );
                let plain = p.clone();
                tx.protect_rtp(&mut p).unwrap();
                assert_eq!(p.len(), plain.len() + suite.rtp_tag_len());
                rx.unprotect_rtp(&mut p).unwrap();
                assert_eq!(p, plain, "{suite:?} seq {seq}");
            }
            let mut r = Vec::new();
            super::super::rtcp::write_rr(&mut r, 7, &[]);
            let plain = r.clone();
            tx.protect_rtcp(&mut r).unwrap();
            rx.unprotect_rtcp(&mut r).unwrap();
            assert_eq!(r, plain);
        }
    }

    #[test]
    fn padded_packets_unprotect_whatever_the_encrypted_last_byte() {
        for suite in Suite::ALL {
            let master = MasterKey::generate(suite);
            let (mut tx, mut rx) = (
                Context::new(&master).unwrap(),
                Context::new(&master).unwrap(),
            );
            for seq in 0..64u16 {
                // 20 bytes of payload, then 4 of padding (P bit set, count 4).
                let mut p = Vec::new();
                super::super::rtp::write(
                    &mut p,
                    &RtpHeader::new(0, seq, 0, 9, false),
                    &[seq as u8; 20],
                );
                p[0] |= 0x20;
                p.extend_from_slice(&[0, 0, 0, 4]);
                let plain = p.clone();
                tx.protect_rtp(&mut p).unwrap();
                rx.unprotect_rtp(&mut p).unwrap();
                assert_eq!(p, plain, "{suite:?} seq {seq}");
                assert_eq!(RtpHeader::parse(&p).unwrap().padding, 4);
            }
        }
    }

    #[test]
    fn forged_packets_do_not_claim_stream_slots() {
        let master = MasterKey::generate(Suite::AesCm128HmacSha1_80);
        let mut rx = Context::new(&master).unwrap();
        for ssrc in 0..100u32 {
            let mut p = Vec::new();
            super::super::rtp::write(&mut p, &RtpHeader::new(0, 1, 0, ssrc, false), &[0; 30]);
            assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::AuthFailed));
        }
        assert!(rx.streams.is_empty());
        let mut tx = Context::new(&master).unwrap();
        let mut p = Vec::new();
        super::super::rtp::write(&mut p, &RtpHeader::new(0, 1, 0, 7, false), &[0; 30]);
        tx.protect_rtp(&mut p).unwrap();
        rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(rx.streams.len(), 1);
    }

    #[test]
    fn replay_window_accepts_reordering_within_64() {
        let mut w = ReplayWindow::default();
        for i in [10u64, 12, 11, 75] {
            assert!(w.check(i));
            w.accept(i);
        }
        assert!(!w.check(11));
        assert!(!w.check(11 - 1)); // 65 behind 75: too old
        assert!(w.check(74));
        assert!(!w.check(75));
    }

    #[test]
    fn bad_inline_keys_are_refused() {
        let s = Suite::AesCm128HmacSha1_80;
        assert!(MasterKey::from_inline(s, "inline:!!!").is_err());
        assert!(MasterKey::from_inline(s, "uri:foo").is_err());
        assert!(MasterKey::from_inline(s, "inline:AAAA").is_err());
        let good = MasterKey::generate(s).to_inline();
        assert!(MasterKey::from_inline(s, &format!("{good}|2^20|1:4")).is_err());
        assert!(MasterKey::from_inline(Suite::AeadAes128Gcm, &good).is_err());
        assert!(!format!("{:?}", MasterKey::generate(s)).contains("key:"));
    }
}
