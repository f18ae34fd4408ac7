//! What a new password set with the admin command must be (OWASP ASVS 5.0
//! V6.2.1, V6.2.4, V6.2.11, V6.2.12): long enough, not one of the most
//! common passwords, and not the user's own name.
//!
//! There are no composition rules (ASVS V6.2.5): length and a list of the
//! passwords attackers try first do more, and leave room for passphrases.
//! An operator importing existing accounts may override with a warning.

use std::fmt;

/// The shortest password accepted; `WEBAUTH_MIN_PASSWORD` may raise it.
pub const MIN_LENGTH: usize = 8;

/// Django's `common-passwords.txt.gz` (Django 5.2.19, three-clause BSD
/// licence, see `data/common-passwords.LICENSE`), decompressed: 19,640 of
/// the most common passwords from Royce Williams's list of 20,000, lower-cased
/// and deduplicated, one a line.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weakness {
    TooShort {
        length: usize,
        min: usize,
    },
    Common,
    /// The password is the username or one of the user's names (`what`),
    /// perhaps with digits around it.
    Personal {
        what: &'static str,
    },
}

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weakness::TooShort { length, min } => {
                write!(f, "the password has {length} characters; at least {min} are needed")
            }
            Weakness::Common => write!(f, "the password is one of the most common passwords, tried first by attackers"),
            Weakness::Personal { what } => write!(f, "the password is the user's {what}, which others know"),
        }
    }
}

impl Weakness {
    /// What to tell the operator: why, and what to choose instead.
    pub fn advice(&self) -> String {
        format!(
            "{self}. A passphrase of several random words (such as \"orange kettle under moonlight\") \
             is long and easy to remember"
        )
    }
}

/// The minimum length for a `WEBAUTH_MIN_PASSWORD` setting: a whole number
/// of characters, never below [`MIN_LENGTH`].
pub fn min_length(setting: Option<&str>) -> Result<usize, String> {
    match setting.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(MIN_LENGTH),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (MIN_LENGTH..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "WEBAUTH_MIN_PASSWORD={v:?} is invalid: expected a number of characters from {MIN_LENGTH} to 1024"
            )),
        },
    }
}

/// Whether `password` may be set for a user with these names: `personal`
/// holds the username, first and last names, each with what it is.
pub fn check(password: &str, min: usize, personal: &[(&'static str, &str)]) -> Result<(), Weakness> {
    // Characters, not bytes: eight CJK characters are a long password.
    // White space does not count: eight spaces are no password.
    let length = password.chars().filter(|c| !c.is_whitespace()).count();
    if length < min.max(MIN_LENGTH) {
        return Err(Weakness::TooShort { length, min: min.max(MIN_LENGTH) });
    }
    let lower = password.to_lowercase();
    if is_common(&lower) {
        return Err(Weakness::Common);
    }
    // Compared as letters and digits only: "John Smith", "john.smith" and
    // "johnsmith" are the same guess.
    let squash = |text: &str| -> String { text.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect() };
    let plain = squash(password);
    let core = plain.trim_matches(|c: char| c.is_ascii_digit());
    let value_of = |what: &str| personal.iter().find(|(w, _)| *w == what).map(|(_, v)| squash(v)).unwrap_or_default();
    let (first, last) = (value_of("first name"), value_of("last name"));
    let full_names = [("full name", format!("{first}{last}")), ("full name", format!("{last}{first}"))];
    let candidates = personal.iter().map(|(what, value)| (*what, squash(value))).chain(full_names);
    for (what, value) in candidates {
        if !value.is_empty() && (plain == value || core == value) {
            return Err(Weakness::Personal { what });
        }
    }
    Ok(())
}

/// Whether a lower-cased password is in the list of common passwords.
fn is_common(lower: &str) -> bool {
    COMMON_PASSWORDS.lines().any(|line| line == lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOHN: [(&str, &str); 3] = [("username", "john.smith"), ("first name", "John"), ("last name", "Smith")];

    #[test]
    fn the_full_name_and_blank_passwords_are_refused() {
        assert!(matches!(check("John Smith", 8, &JOHN), Err(Weakness::Personal { .. })));
        let jane = [("username", "jd"), ("first name", "Jane"), ("last name", "Doe")];
        assert_eq!(check("Jane Doe 1990", 8, &jane), Err(Weakness::Personal { what: "full name" }));
        assert_eq!(check("doe-jane-1990", 8, &jane), Err(Weakness::Personal { what: "full name" }));
        assert_eq!(check("        ", 8, &JOHN), Err(Weakness::TooShort { length: 0, min: 8 }));
        assert_eq!(check("John Smith's kettle sings", 8, &JOHN), Ok(()));
    }

    #[test]
    fn the_list_is_long_and_lower_cased() {
        assert!(COMMON_PASSWORDS.lines().count() >= 10_000);
        assert!(COMMON_PASSWORDS.lines().all(|l| !l.is_empty() && l == l.to_lowercase()));
    }

    #[test]
    fn passwords_table() {
        let too_short = |length| Err(Weakness::TooShort { length, min: 8 });
        let personal = |what| Err(Weakness::Personal { what });
        let cases: &[(&str, &str, Result<(), Weakness>)] = &[
            ("seven characters", "abcdefg", too_short(7)),
            ("empty", "", too_short(0)),
            ("eight characters counted as characters, not bytes", "äöüßéèêë", Ok(())),
            ("seven multibyte characters", "日本語のパスワ", too_short(7)),
            ("most common", "password", Err(Weakness::Common)),
            ("common in another case", "PassWord", Err(Weakness::Common)),
            ("common digits", "12345678", Err(Weakness::Common)),
            ("common word from further down the list", "wonderland", Err(Weakness::Common)),
            ("the username", "john.smith", personal("username")),
            ("the username in capitals", "JOHN.SMITH", personal("username")),
            ("the username with digits", "john.smith2024", personal("username")),
            ("the last name with digits around it", "1Smith12345", personal("last name")),
            ("a passphrase", "orange kettle under moonlight", Ok(())),
            ("a name inside a longer password", "smith-orange-kettle", Ok(())),
            ("random characters", "q7#Lm2!vXz", Ok(())),
        ];
        for (situation, password, verdict) in cases {
            assert_eq!(&check(password, 8, &JOHN), verdict, "{situation}: {password:?}");
        }
    }

    #[test]
    fn the_minimum_can_be_raised_never_lowered() {
        assert_eq!(min_length(None), Ok(8));
        assert_eq!(min_length(Some("")), Ok(8));
        assert_eq!(min_length(Some("12")), Ok(12));
        assert!(min_length(Some("6")).is_err());
        assert!(min_length(Some("ten")).is_err());
        assert_eq!(check("q7#Lm2!vXz", 12, &JOHN), Err(Weakness::TooShort { length: 10, min: 12 }));
        assert_eq!(check("abcdefg", 4, &JOHN), Err(Weakness::TooShort { length: 7, min: 8 }));
    }

    #[test]
    fn advice_says_why_and_suggests_a_passphrase() {
        let text = Weakness::Common.advice();
        assert!(text.contains("most common") && text.contains("passphrase"), "{text}");
    }
}
