//! The second factor: time-based one-time passwords (RFC 6238: HMAC-SHA1,
//! 6 digits, 30-second steps, one step of clock skew either way) and
//! single-use recovery codes. Pure functions; what is used up is kept in the
//! store (see [`crate::store::SessionStore::use_totp_step`]).
//!
//! HMAC-SHA1 is RustCrypto's `hmac` and `sha1`; base32 is `data-encoding`
//! (a small, dependency-free, fuzzed crate) rather than a hand-written codec.

use data_encoding::BASE32_NOPAD;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Seconds per time step (RFC 6238's X).
pub const STEP: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps of clock skew accepted on each side of the current one.
pub const SKEW: i64 = 1;
/// Bytes of a new secret: 160 bits, the length of HMAC-SHA1's output, as
/// RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// The shortest secret accepted from a users file or `--secret`: RFC 4226
/// says at least 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;
/// The longest: HMAC hashes a key longer than SHA-1's block anyway.
pub const MAX_SECRET_BYTES: usize = 64;
/// Recovery codes made at a time.
pub const RECOVERY_CODES: usize = 10;
/// Bytes of a recovery code: 80 bits, 16 base32 characters.
const RECOVERY_BYTES: usize = 10;
/// The longest code field read: a recovery code with generous separators.
/// Anything longer is not a code, whatever it holds.
pub const MAX_CODE_FIELD: usize = 64;

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// A TOTP secret (never printed by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new 160-bit secret from the OS random source.
    pub fn generate() -> Result<Secret, getrandom::Error> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Secret(bytes))
    }

    /// A secret in base32 as authenticator apps show it: case, spaces and
    /// `=` padding do not matter. `Err` says what is wrong.
    pub fn from_base32(text: &str) -> Result<Secret, &'static str> {
        let clean: String =
            text.chars().filter(|c| !c.is_whitespace() && *c != '=').map(|c| c.to_ascii_uppercase()).collect();
        let bytes = BASE32_NOPAD.decode(clean.as_bytes()).map_err(|_| "not base32 (A-Z and 2-7)")?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err("shorter than 128 bits (26 base32 characters)");
        }
        if bytes.len() > MAX_SECRET_BYTES {
            return Err("longer than 512 bits");
        }
        Ok(Secret(bytes))
    }

    /// Base32 without padding, as the users file and `otpauth://` URIs carry it.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// The code for time step `step`.
    pub fn code_at(&self, step: i64) -> String {
        format!("{:0width$}", hotp(&self.0, step as u64, DIGITS), width = DIGITS as usize)
    }

    /// The code for the time `now` (seconds since the epoch).
    pub fn code_now(&self, now: i64) -> String {
        self.code_at(step_of(now))
    }

    /// The step whose code `code` is, among the current one and [`SKEW`]
    /// either side, if any. Every candidate is computed and compared in
    /// constant time, so the time taken says nothing about which matched.
    pub fn matching_step(&self, code: &str, now: i64) -> Option<i64> {
        let current = step_of(now);
        let mut found = None;
        for step in current - SKEW..=current + SKEW {
            if constant_time_eq(self.code_at(step).as_bytes(), code.as_bytes()) {
                found = Some(step);
            }
        }
        found
    }

    /// The `otpauth://` URI an authenticator app reads from a QR code.
    pub fn uri(&self, issuer: &str, username: &str) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20");
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
            enc(issuer),
            enc(username),
            self.to_base32(),
            enc(issuer)
        )
    }
}

/// The time step of `now` (RFC 6238's T, with T0 = 0).
pub fn step_of(now: i64) -> i64 {
    now.div_euclid(STEP)
}

/// RFC 4226 HOTP: HMAC-SHA1 of the counter, dynamically truncated, the last
/// `digits` decimal digits.
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([hash[offset], hash[offset + 1], hash[offset + 2], hash[offset + 3]]) & 0x7fff_ffff;
    binary % 10u32.pow(digits)
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What a visitor typed in the code field.
#[derive(Debug, PartialEq, Eq)]
pub enum Code {
    /// Six digits from the authenticator app.
    Totp(String),
    /// A recovery code, in its canonical form (16 base32 letters, upper case).
    Recovery(String),
}

/// Reads the code field: six digits (spaces allowed, as apps group them
/// `123 456`), or a recovery code (dashes and spaces allowed, any case).
/// `None`: it is neither, and counts as a wrong code.
pub fn parse_code(field: &str) -> Option<Code> {
    if field.len() > MAX_CODE_FIELD {
        return None;
    }
    let clean: String = field.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    if clean.len() == DIGITS as usize && clean.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Code::Totp(clean));
    }
    let upper = clean.to_ascii_uppercase();
    let is_recovery = upper.len() == 16 && BASE32_NOPAD.decode(upper.as_bytes()).is_ok();
    is_recovery.then_some(Code::Recovery(upper))
}

/// New recovery codes, grouped for reading (`ABCD-EFGH-IJKL-MNOP`), each
/// 80 bits from the OS random source.
pub fn new_recovery_codes() -> Result<Vec<String>, getrandom::Error> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; RECOVERY_BYTES];
            getrandom::fill(&mut bytes)?;
            let text = BASE32_NOPAD.encode(&bytes);
            Ok(text.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-"))
        })
        .collect()
}

/// What the users file keeps of a recovery code: the hex SHA-256 of its
/// canonical form. A fast hash is enough: the code has 80 random bits, so
/// there is no dictionary to try, unlike a password.
pub fn recovery_hash(code: &str) -> String {
    let canonical = match parse_code(code) {
        Some(Code::Recovery(c)) => c,
        _ => code.to_string(),
    };
    Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, the SHA-1 rows: the seed is the ASCII string
    /// "12345678901234567890", codes have 8 digits.
    #[test]
    fn rfc_6238_test_vectors() {
        let key = b"12345678901234567890";
        let table = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (time, expected) in table {
            assert_eq!(hotp(key, step_of(time) as u64, 8), expected, "T = {time}");
            // Six digits are the last six of the same truncation.
            let secret = Secret(key.to_vec());
            assert_eq!(secret.code_now(time), format!("{:06}", expected % 1_000_000), "T = {time}");
        }
    }

    /// RFC 4226 appendix D: HOTP values for counters 0 to 9.
    #[test]
    fn rfc_4226_hotp_values() {
        let expected = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        for (counter, value) in expected.iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", counter as u64, 6), *value);
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let secret = Secret(b"12345678901234567890".to_vec());
        let now = 1111111111;
        let step = step_of(now);
        for (offset, ok) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = secret.code_at(step + offset);
            // A code of a far step may by chance equal a near one's: skip those.
            let collides = (-1..=1).any(|o| o != offset && secret.code_at(step + o) == code);
            if !collides {
                assert_eq!(secret.matching_step(&code, now).is_some(), ok, "offset {offset}");
            }
        }
        assert_eq!(secret.matching_step(&secret.code_at(step), now), Some(step));
        assert_eq!(secret.matching_step("12345", now), None);
    }

    #[test]
    fn base32_secrets_round_trip_and_are_checked() {
        let secret = Secret::generate().unwrap();
        assert_eq!(secret.to_base32().len(), 32);
        assert_eq!(Secret::from_base32(&secret.to_base32()).unwrap(), secret);
        let spaced = secret
            .to_base32()
            .to_lowercase()
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(Secret::from_base32(&spaced).unwrap(), secret);
        assert!(Secret::from_base32("JBSWY3DPEHPK3PXP").is_err(), "80 bits is too short");
        assert!(Secret::from_base32("1!").is_err());
        assert!(Secret::from_base32(&"A".repeat(200)).is_err());
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn the_uri_names_issuer_account_and_parameters() {
        let secret = Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert_eq!(
            secret.uri("Example Site", "john@example.org"),
            "otpauth://totp/Example%20Site:john%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Example%20Site&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn the_code_field_reads_digits_or_a_recovery_code() {
        assert_eq!(parse_code("123456"), Some(Code::Totp("123456".into())));
        assert_eq!(parse_code(" 123 456 "), Some(Code::Totp("123456".into())));
        assert_eq!(parse_code("abcd-efgh-ijkl-mnop"), Some(Code::Recovery("ABCDEFGHIJKLMNOP".into())));
        for bad in ["", "12345", "1234567", "12345a", "abcd-efgh-ijkl-mno1", "١٢٣٤٥٦", &"1".repeat(1000)] {
            assert_eq!(parse_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn recovery_codes_are_grouped_distinct_and_hashed_canonically() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 19 && c.matches('-').count() == 3), "{codes:?}");
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
        let code = &codes[0];
        assert_eq!(recovery_hash(code), recovery_hash(&code.to_lowercase().replace('-', " ")));
        assert_eq!(recovery_hash(code).len(), 64);
        assert!(matches!(parse_code(code), Some(Code::Recovery(_))));
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"123456", b"123456"));
        assert!(!constant_time_eq(b"123456", b"123457"));
        assert!(!constant_time_eq(b"12345", b"123456"));
    }
}
