//! The second factor in tests: enrol a user with a known secret through the
//! real admin command, and the codes an authenticator app would show.

use webauth::totp::{step_of, Secret};

use super::TestSite;

/// RFC 6238's SHA-1 test key ("12345678901234567890") in base32: 160 bits.
pub const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// A user's enrolment: the secret and the recovery codes the command printed.
pub struct Enrolled {
    pub secret: Secret,
    pub recovery: Vec<String>,
}

impl Enrolled {
    /// The code an app shows now.
    pub fn code(&self) -> String {
        self.secret.code_now(now())
    }

    /// The code of the next time step: accepted (one step of skew), and later
    /// than the current one, for a second login within the same 30 s.
    pub fn next_code(&self) -> String {
        self.secret.code_at(step_of(now()) + 1)
    }

    /// A six-digit code that is none of the accepted ones.
    pub fn wrong_code(&self) -> String {
        let step = step_of(now());
        let accepted: Vec<String> = (step - 2..=step + 2).map(|s| self.secret.code_at(s)).collect();
        (0..).map(|n| format!("{:06}", 123456 + n)).find(|c| !accepted.contains(c)).expect("a wrong code")
    }
}

pub fn now() -> i64 {
    webauth::session::now()
}

/// `webauth user totp enable USER --secret-stdin` on the site, with the
/// secret and a current code on stdin; the recovery codes from its output.
pub fn enable(site: &TestSite, user: &str) -> Enrolled {
    let secret = Secret::from_base32(SECRET).expect("the test secret");
    let stdin = format!("{SECRET}\n{}\n", enrolment_code(&secret));
    let out = site.admin(&["user", "totp", "enable", user, "--secret-stdin"], &stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "totp enable: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    Enrolled { secret, recovery: recovery_codes(&stdout) }
}

/// The code to type at enrolment: the previous step's (accepted, one step
/// of skew). The enrolment code is used up, and the tests then log in with
/// the current one.
pub fn enrolment_code(secret: &Secret) -> String {
    secret.code_at(step_of(now()) - 1)
}

/// The recovery codes in the admin command's output (indented lines after
/// the "Recovery codes" heading).
pub fn recovery_codes(stdout: &str) -> Vec<String> {
    let codes: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Recovery codes"))
        .skip(1)
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect();
    assert_eq!(codes.len(), 10, "ten recovery codes in {stdout}");
    codes
}
