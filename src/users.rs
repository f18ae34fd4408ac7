//! The users file: loading and checking it, verifying passwords, and writing
//! it atomically under a lock, for the admin command and for the one write a
//! login makes (upgrading a bcrypt hash to argon2id).
//!
//! The file is JSON keyed by username, as in the tutorial's `users.js`:
//! `{"john": {"first": "John", "last": "Smith", "password": "$argon2id$..."}}`.
//! A password that is not an argon2id or bcrypt hash makes the whole file a
//! load error: the programs log nobody in from it until it is fixed.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, Version};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 19456;
pub const ARGON2_PASSES: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

/// Longest username and password a login reads (SPEC: over-long is `400`).
pub const MAX_USERNAME: usize = 256;
pub const MAX_PASSWORD: usize = 1024;

/// An argon2id hash at the default cost of a password nobody knows: verified
/// when the username does not exist, so that answer takes the same time.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$d2ViYXV0aC1kdW1teS1zYWx0$WaBYimcoHwDrUq7m9QTozf6W6iG/bDlGOdXGfUdNz7A";
const DUMMY_SALT_AND_OUTPUT: &str = "$d2ViYXV0aC1kdW1teS1zYWx0$WaBYimcoHwDrUq7m9QTozf6W6iG/bDlGOdXGfUdNz7A";

/// The most a stored hash may cost to verify: every login for that user
/// pays it, so a hash above these is a load error rather than a DoS.
const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
const MAX_ARGON2_PASSES: u32 = 16;
const MAX_ARGON2_LANES: u32 = 16;
const MAX_BCRYPT_COST: u32 = 14;

/// The same username for counting failures, for lookup and for uniqueness:
/// trimmed, in Unicode compatibility form (NFKC) and lower-cased, so `John `,
/// `john` and fullwidth `ｊｏｈｎ` are one user.
pub fn normalize_username(name: &str) -> String {
    // Repeated until nothing changes, so that normalising a normalised name
    // (login, then lookup) changes nothing: NFKC can make a leading space
    // (U+00A8 is a space and a combining diaeresis) or a capital (U+210C,
    // black-letter H, has no lower case of its own), and lower case can undo
    // NFKC. The users_file fuzz target checks that a second call changes nothing.
    let mut name = name.trim().to_string();
    for _ in 0..8 {
        let next = name.nfkc().collect::<String>().to_lowercase().trim().to_string();
        if next == name {
            break;
        }
        name = next;
    }
    name
}

/// Whether a (normalized) username may be created by the admin command:
/// ASCII letters and digits and `. _ - @ +`, at most [`MAX_USERNAME`] bytes.
///
/// ASCII only, because a username is typed at a login form, sent to other
/// programs (`X-Webauth-User`, `REMOTE_USER`) and read in logs, where a
/// Cyrillic `јohn` or Greek `jοhn` looks like `john`. A rule that allowed one
/// non-Latin script per name would still admit whole-script look-alikes
/// (Cyrillic `сор` is Latin `cop`) and needs Unicode script data; names in
/// any script belong in the first and last name fields. Files written by
/// hand may hold other usernames; logins normalise those the same way.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
}

/// A username as an error message shows it: quoted, escaped, and cut after
/// 64 characters so an over-long one does not flood a terminal or a log.
pub fn shown_username(name: &str) -> String {
    const SHOWN: usize = 64;
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", &name[..cut]),
        None => format!("{name:?}"),
    }
}

#[derive(Debug, Clone)]
enum Stored {
    Argon2id(String),
    Bcrypt(String),
}

impl Stored {
    /// A hash of a password nobody knows that costs the same to verify as
    /// this one, and the name of that cost class.
    fn dummy(&self) -> (String, Stored) {
        match self {
            Stored::Argon2id(hash) => {
                let params = PasswordHash::new(hash).ok().and_then(|h| Params::try_from(&h).ok());
                let (m, t, p) = params
                    .map_or((ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES), |p| (p.m_cost(), p.t_cost(), p.p_cost()));
                let dummy = format!("$argon2id$v=19$m={m},t={t},p={p}{DUMMY_SALT_AND_OUTPUT}");
                (format!("argon2id m={m} t={t} p={p}"), Stored::Argon2id(dummy))
            }
            Stored::Bcrypt(hash) => {
                let cost = bcrypt_cost(hash).unwrap_or(10);
                // Made at cost 4 (a millisecond), then given the real cost:
                // verifying it takes the time of that cost. Made once: a
                // file of many bcrypt users paid that millisecond per user.
                static CHEAP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let cheap = CHEAP.get_or_init(|| {
                    bcrypt::hash_with_salt("webauth-dummy", 4, *b"webauth-dummy-sa")
                        .map(|h| h.format_for_version(bcrypt::Version::TwoB))
                        .unwrap_or_default()
                });
                let dummy = format!("$2b${cost:02}${}", cheap.get(7..).unwrap_or(""));
                (format!("bcrypt {cost}"), Stored::Bcrypt(dummy))
            }
        }
    }
}

fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

/// A user as the pages see it: every string field but the password (and
/// the second factor, which is not a string field and never reaches a page).
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub fields: Map<String, Value>,
    stored: Stored,
    /// The second factor, when the user has one.
    pub totp: Option<UserTotp>,
}

/// A user's second factor as the users file keeps it:
/// `"totp": {"secret": "BASE32", "recovery": ["<hex SHA-256>", ...]}`.
#[derive(Debug, Clone)]
pub struct UserTotp {
    pub secret: crate::totp::Secret,
    /// The SHA-256 (hex) of each recovery code not yet known to be used.
    pub recovery: Vec<String>,
    /// The time step of the code typed at enrolment (`"step"`): it and those
    /// before it never log in (it was seen on the operator's screen). Kept
    /// in the file because the store may not exist yet at enrolment.
    pub enrolled_step: i64,
}

impl UserTotp {
    /// Reads the `totp` entry of a user. A malformed one is a load error,
    /// never "no second factor": that would let the password alone in.
    fn parse(value: &Value) -> Result<UserTotp, String> {
        let Value::Object(map) = value else {
            return Err("\"totp\" must be an object with a secret".into());
        };
        let secret = match map.get("secret") {
            Some(Value::String(s)) => {
                crate::totp::Secret::from_base32(s).map_err(|why| format!("TOTP secret {why}"))?
            }
            _ => return Err("\"totp\" has no secret".into()),
        };
        let recovery = match map.get("recovery") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Ok(h.to_ascii_lowercase())
                    }
                    _ => Err("a TOTP recovery code that is not a SHA-256 hash".to_string()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("TOTP \"recovery\" must be a list of hashes".into()),
        };
        let enrolled_step = match map.get("step") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().filter(|n| *n >= 0).ok_or("TOTP \"step\" must be a whole number")?,
        };
        Ok(UserTotp { secret, recovery, enrolled_step })
    }

    /// Whether `code` (canonical, see [`crate::totp::parse_code`]) is one of
    /// the recovery codes; every hash is compared, in constant time.
    pub fn has_recovery(&self, hash: &str) -> bool {
        self.recovery
            .iter()
            .fold(false, |found, h| found | crate::totp::constant_time_eq(h.as_bytes(), hash.as_bytes()))
    }
}

impl User {
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// Whether the stored hash is bcrypt, which looks at only the first 72
    /// bytes of a password: upgraded at the next login (see [`upgrade_after_login`]).
    pub fn needs_rehash(&self) -> bool {
        matches!(self.stored, Stored::Bcrypt(_))
    }
}

/// Why the users file cannot be used.
#[derive(Debug)]
pub enum UsersError {
    Missing(PathBuf),
    Unreadable {
        path: PathBuf,
        cause: String,
    },
    Malformed {
        path: PathBuf,
        cause: String,
    },
    BadUser {
        path: PathBuf,
        user: String,
        why: String,
    },
    /// A user's `totp` entry is malformed: nobody logs in (the user must not
    /// get in on the password alone, the others must not miss it).
    BadTotp {
        path: PathBuf,
        user: String,
        why: String,
    },
    /// Opening the file for a change failed: permission denied, read-only.
    NotWritable {
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Missing(p) => write!(
                f,
                "users file {}: not found (create it with `webauth user add`, or set WEBAUTH_USERS)",
                p.display()
            ),
            UsersError::Unreadable { path, cause } => write!(f, "users file {}: {cause}", path.display()),
            UsersError::Malformed { path, cause } => {
                write!(f, "users file {}: not valid JSON: {cause}", path.display())
            }
            UsersError::NotWritable { path, cause } => {
                write!(f, "users file {}: cannot write: {cause}", path.display())
            }
            UsersError::BadTotp { path, user, why } => write!(
                f,
                "users file {}: user {}: {why}; nobody can log in until it is fixed \
                 (`webauth user totp disable {}` removes it, then enable it again)",
                path.display(),
                shown_username(user),
                shown_username(user)
            ),
            UsersError::BadUser { path, user, why } => write!(
                f,
                "users file {}: user {}: {why}; nobody can log in until it is fixed \
                 (set the password with `webauth user passwd {}`)",
                path.display(),
                shown_username(user),
                shown_username(user)
            ),
        }
    }
}

impl std::error::Error for UsersError {}

/// The users of one users file.
#[derive(Debug)]
pub struct UserDb {
    users: HashMap<String, User>,
    /// Verified for unknown usernames: of the cost most of the file's hashes
    /// have, so an unknown user takes as long as a typical known one.
    dummy: Stored,
}

impl Default for UserDb {
    fn default() -> UserDb {
        UserDb { users: HashMap::new(), dummy: Stored::Argon2id(DUMMY_HASH.to_string()) }
    }
}

impl UserDb {
    pub fn load(path: &Path) -> Result<UserDb, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => UsersError::Missing(path.to_path_buf()),
            _ => UsersError::Unreadable { path: path.to_path_buf(), cause: e.to_string() },
        })?;
        UserDb::parse(&text, path)
    }

    /// Parses and checks a users file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<UserDb, UsersError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| UsersError::Malformed { path: path.to_path_buf(), cause: e.to_string() })?;
        let Value::Object(map) = value else {
            return Err(UsersError::Malformed {
                path: path.to_path_buf(),
                cause: "expected an object keyed by username".into(),
            });
        };
        let bad = |user: &str, why: &str| UsersError::BadUser {
            path: path.to_path_buf(),
            user: user.to_string(),
            why: why.to_string(),
        };
        let mut users = HashMap::with_capacity(map.len());
        let mut classes: HashMap<String, (usize, Stored)> = HashMap::new();
        for (name, record) in map {
            let Value::Object(mut fields) = record else {
                return Err(bad(&name, "expected an object with first, last and password"));
            };
            let Some(Value::String(password)) = fields.remove("password") else {
                return Err(bad(&name, "no password hash"));
            };
            let stored = parse_stored(&password).map_err(|why| bad(&name, why))?;
            let totp = match fields.remove("totp") {
                None | Some(Value::Null) => None,
                Some(value) => Some(UserTotp::parse(&value).map_err(|why| UsersError::BadTotp {
                    path: path.to_path_buf(),
                    user: name.clone(),
                    why,
                })?),
            };
            let (class, dummy) = stored.dummy();
            classes.entry(class).or_insert((0, dummy)).0 += 1;
            fields.retain(|_, v| v.is_string());
            let username = normalize_username(&name);
            if users.contains_key(&username) {
                return Err(bad(
                    &name,
                    "listed twice (usernames are compared trimmed, lower-cased and in compatibility form: \
                     fullwidth ｊｏｈｎ is john)",
                ));
            }
            users.insert(username.clone(), User { username, fields, stored, totp });
        }
        let dummy = classes
            .into_values()
            .max_by_key(|(count, _)| *count)
            .map_or_else(|| Stored::Argon2id(DUMMY_HASH.to_string()), |(_, d)| d);
        Ok(UserDb { users, dummy })
    }

    pub fn get(&self, username: &str) -> Option<&User> {
        self.users.get(&normalize_username(username))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user, if the password is theirs. Does one hash verification whether
    /// or not the user exists, so both failures take the same time.
    pub fn verify(&self, username: &str, password: &str) -> Option<&User> {
        match self.get(username) {
            Some(user) => verify_stored(&user.stored, password).then_some(user),
            None => {
                let _ = verify_stored(&self.dummy, password);
                None
            }
        }
    }
}

fn parse_stored(hash: &str) -> Result<Stored, &'static str> {
    if hash.starts_with("$argon2id$") {
        let parsed = PasswordHash::new(hash).map_err(|_| "unparsable argon2id hash")?;
        let p = Params::try_from(&parsed).map_err(|_| "argon2id hash with invalid parameters")?;
        if p.m_cost() > MAX_ARGON2_MEMORY_KIB || p.t_cost() > MAX_ARGON2_PASSES || p.p_cost() > MAX_ARGON2_LANES {
            return Err("argon2id hash too costly to verify (over 256 MiB, 16 passes or 16 lanes)");
        }
        Ok(Stored::Argon2id(hash.to_string()))
    } else if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        hash.parse::<bcrypt::HashParts>().map_err(|_| "unparsable bcrypt hash")?;
        if bcrypt_cost(hash).is_none_or(|c| c > MAX_BCRYPT_COST) {
            return Err("bcrypt hash too costly to verify (cost over 14)");
        }
        Ok(Stored::Bcrypt(hash.to_string()))
    } else if hash.starts_with('$') {
        Err("unsupported hash (expected argon2id, or bcrypt $2y$/$2b$)")
    } else {
        Err("plaintext password (expected an argon2id hash from `webauth hash`)")
    }
}

/// Whether a hash from an Apache `.htpasswd` line may be imported: only
/// bcrypt (`htpasswd -B`); the message names any other kind and what to do.
pub fn check_htpasswd_hash(hash: &str) -> Result<(), String> {
    let kind = if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        return parse_stored(hash).map(|_| ()).map_err(str::to_string);
    } else if hash.starts_with("$apr1$") {
        "an Apache MD5 ($apr1$) hash"
    } else if hash.starts_with("{SHA}") {
        "an unsalted SHA-1 ({SHA}) hash"
    } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a crypt(3) MD5 or SHA-2 hash"
    } else if hash.starts_with("$argon2id$") {
        return parse_stored(hash).map(|_| ()).map_err(str::to_string);
    } else {
        "a DES crypt hash or a plaintext password"
    };
    Err(format!(
        "{kind}: only bcrypt (htpasswd -B) can be imported; add this user with `webauth user add` and a new password"
    ))
}

fn verify_stored(stored: &Stored, password: &str) -> bool {
    match stored {
        Stored::Argon2id(hash) => verify_argon2(hash, password.as_bytes()),
        Stored::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
    }
}

/// The argon2 memory of this process, reused by every verification.
///
/// `Argon2::verify_password` allocates its 19 MiB anew each time, and glibc
/// then keeps freed blocks of that size in the heap (its mmap threshold
/// rises to the largest block freed): a FastCGI `login` worker grew to
/// 60-140 MiB. One block, kept and reused, holds it at 19 MiB plus the rest.
/// It grows to the largest cost a hash in the users file asks for.
static ARGON2_MEMORY: std::sync::Mutex<Vec<argon2::Block>> = std::sync::Mutex::new(Vec::new());

/// What `Argon2::verify_password` does (same parameters, salt, version and
/// output length from the PHC string, constant-time comparison of the
/// output), hashing into [`ARGON2_MEMORY`].
fn verify_argon2(hash: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else { return false };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut output = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    // A panic while hashing leaves nothing in the memory that matters.
    let mut memory = ARGON2_MEMORY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    if argon2.hash_password_into_with_memory(password, salt, &mut output, &mut memory[..]).is_err() {
        return false;
    }
    argon2::password_hash::phc::Output::new(&output).is_ok_and(|computed| &computed == expected)
}

/// The argon2id PHC string of a password at OWASP's minimum cost.
pub fn hash_password(password: &str) -> Result<String, String> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None).map_err(|e| e.to_string())?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// The users file as the admin command edits it: every field kept as written.
///
/// [`UsersFile::open`] reads it to look; [`UsersFile::lock`] reads it to
/// change it, holding a lock until the value is dropped, so two writers (the
/// admin command, a login that upgrades a bcrypt hash) never lose each
/// other's changes. A symlinked file is read and written at its target.
pub struct UsersFile {
    /// The path as configured (`WEBAUTH_USERS`), for messages.
    pub path: PathBuf,
    pub entries: Map<String, Value>,
    /// The file itself, through any symlinks.
    target: PathBuf,
    /// The locked users file, while this value changes it.
    _lock: Option<std::fs::File>,
}

impl UsersFile {
    /// Reads the file for looking at; a missing file is an empty one.
    pub fn open(path: &Path) -> Result<UsersFile, UsersError> {
        let unreadable = |e: std::io::Error| UsersError::Unreadable { path: path.to_path_buf(), cause: e.to_string() };
        let target = resolve_links(path).map_err(unreadable)?;
        let text = match std::fs::read_to_string(&target) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unreadable(e)),
        };
        let entries = parse_entries(text.as_deref(), path)?;
        Ok(UsersFile { path: path.to_path_buf(), entries, target, _lock: None })
    }

    /// Reads the file for changing it, and locks it until the value is
    /// dropped (waiting for another writer's lock). Needs write permission
    /// on the file: `Unreadable` with the OS error otherwise.
    pub fn lock(path: &Path) -> Result<UsersFile, UsersError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let unreadable = |e: std::io::Error| UsersError::Unreadable { path: path.to_path_buf(), cause: e.to_string() };
        let target = resolve_links(path).map_err(unreadable)?;
        loop {
            let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(&target) {
                Ok(f) => f,
                // A new file: nothing to lock yet (two first `user add`s at once race).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(UsersFile { path: path.to_path_buf(), entries: Map::new(), target, _lock: None })
                }
                Err(e) if is_not_writable(&e) => {
                    return Err(UsersError::NotWritable { path: path.to_path_buf(), cause: e })
                }
                Err(e) => return Err(unreadable(e)),
            };
            crate::files::lock(&file, crate::files::Wait::Yes).map_err(unreadable)?;
            // A writer that held the lock before us renamed a new file into
            // place: our lock is on the old one, so lock the new one.
            let locked = file.metadata().map_err(unreadable)?;
            match std::fs::metadata(&target) {
                Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unreadable(e)),
            }
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(unreadable)?;
            let entries = parse_entries(Some(&text), path)?;
            return Ok(UsersFile { path: path.to_path_buf(), entries, target, _lock: Some(file) });
        }
    }

    /// The key under which a user is stored, found the way logins find it.
    pub fn key_of(&self, username: &str) -> Option<String> {
        let wanted = normalize_username(username);
        self.entries.keys().find(|k| normalize_username(k) == wanted).cloned()
    }

    /// Writes the file atomically: a new temporary file beside it (created
    /// exclusively, never through a planted symlink, readable by no one until
    /// it has the old file's owner, group and mode), synced, then renamed
    /// over it, so a reader sees the old file or the new, never half. A
    /// symlink stays a link: its target is replaced.
    pub fn save(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        let dir = match self.target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self.target.file_name().and_then(|n| n.to_str()).unwrap_or("users.json");
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
        let old = std::fs::metadata(&self.target).ok();
        let mut text = serde_json::to_string_pretty(&Value::Object(self.entries.clone()))?;
        text.push('\n');
        let result = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            if let Some(m) = &old {
                // The web server's group must keep reading it after root edits it.
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
            let mode = old.as_ref().map_or(0o640, |m| m.mode() & 0o777);
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.target)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Whether an error says this process may not write there.
fn is_not_writable(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}

/// What came of upgrading a user's bcrypt hash after a login.
#[derive(Debug)]
pub enum Upgrade {
    /// The file now holds an argon2id hash of the password for the user.
    Done,
    /// The users file (or its directory) is not writable by this process.
    NotWritable,
    /// The user's hash in the file is no longer the one that was verified
    /// (changed or upgraded meanwhile): left as it is.
    Changed,
    Failed(String),
}

/// Replaces `user`'s bcrypt hash in the users file at `path` with an
/// argon2id hash of `password`, which has just verified against it.
///
/// Under the users file's lock, the file is read again and the hash
/// replaced only if it is still the bcrypt hash that was verified, so two
/// logins at once, or a login beside `webauth user passwd`, lose no write.
pub fn upgrade_hash(path: &Path, user: &User, password: &str) -> Upgrade {
    let Stored::Bcrypt(old) = &user.stored else {
        return Upgrade::Changed;
    };
    let hash = match hash_password(password) {
        Ok(h) => h,
        Err(e) => return Upgrade::Failed(e),
    };
    let mut file = match UsersFile::lock(path) {
        Ok(f) => f,
        Err(UsersError::NotWritable { .. }) => return Upgrade::NotWritable,
        Err(e) => return Upgrade::Failed(e.to_string()),
    };
    let Some(key) = file.key_of(&user.username) else {
        return Upgrade::Changed;
    };
    match file.entries.get_mut(&key).and_then(Value::as_object_mut) {
        Some(fields) if fields.get("password").and_then(Value::as_str) == Some(old.as_str()) => {
            fields.insert("password".into(), hash.into());
        }
        _ => return Upgrade::Changed,
    }
    match file.save() {
        Ok(()) => Upgrade::Done,
        Err(e) if is_not_writable(&e) => Upgrade::NotWritable,
        Err(e) => Upgrade::Failed(format!("users file {}: {e}", path.display())),
    }
}

/// After a successful login: upgrades a bcrypt hash (see [`upgrade_hash`])
/// unless `rehash` is off, and says on stderr what came of it. That the
/// file is not writable is said once per user and process: the operator
/// opts in to upgrades by making the file writable to the programs.
pub fn upgrade_after_login(path: &Path, rehash: bool, user: &User, password: &str) {
    static TOLD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if !rehash || !user.needs_rehash() {
        return;
    }
    let name = &user.username;
    match upgrade_hash(path, user, password) {
        Upgrade::Done => eprintln!("webauth: user {name:?} rehashed (bcrypt to argon2id)"),
        Upgrade::Changed => {}
        Upgrade::NotWritable => {
            let mut told = TOLD.lock().unwrap_or_else(|e| e.into_inner());
            if !told.contains(name) {
                told.push(name.clone());
                eprintln!("webauth: user {name:?} needs rehash (bcrypt; the users file is not writable)");
            }
        }
        Upgrade::Failed(e) => crate::audit::fault(&format!("user {name:?} not rehashed: {e}")),
    }
}

/// After a recovery code was used: removes its hash from the user's entry
/// in the users file, when this process may write it, so the file shows
/// what is left. Only a convenience: the store's record of used codes is
/// what keeps a code from working twice, file or no file.
pub fn forget_recovery_code(path: &Path, username: &str, hash: &str) {
    let mut file = match UsersFile::lock(path) {
        Ok(f) => f,
        Err(UsersError::NotWritable { .. }) => return,
        Err(e) => return crate::audit::fault(&format!("user {username:?}: used recovery code kept in the file: {e}")),
    };
    let Some(key) = file.key_of(username) else { return };
    let codes = file.entries.get_mut(&key).and_then(|u| u.get_mut("totp")).and_then(|t| t.get_mut("recovery"));
    let Some(Value::Array(codes)) = codes else { return };
    let before = codes.len();
    codes.retain(|c| c.as_str().is_none_or(|c| !c.eq_ignore_ascii_case(hash)));
    if codes.len() == before {
        return;
    }
    match file.save() {
        Ok(()) => {}
        Err(e) if is_not_writable(&e) => {}
        Err(e) => crate::audit::fault(&format!("user {username:?}: used recovery code kept in the file: {e}")),
    }
}

/// The users file's entries from its text (`None`: no file yet).
fn parse_entries(text: Option<&str>, path: &Path) -> Result<Map<String, Value>, UsersError> {
    match text.map(serde_json::from_str) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(map))) => Ok(map),
        Some(Ok(_)) => Err(UsersError::Malformed {
            path: path.to_path_buf(),
            cause: "expected an object keyed by username".into(),
        }),
        Some(Err(e)) => Err(UsersError::Malformed { path: path.to_path_buf(), cause: e.to_string() }),
    }
}

/// The file `path` names, through any symlinks (relative ones from the
/// link's directory), even when the last target does not exist yet.
/// Whether a symlink owned by `owner` may be followed by user `me`: only
/// root's and our own (the rule of the kernel's protected_symlinks).
fn may_follow(owner: u32, me: u32) -> bool {
    owner == 0 || owner == me
}

fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                // Like the kernel's protected_symlinks: follow only a link of
                // root's or our own. One planted by the web server's user
                // (who may write the folder to let logins upgrade hashes)
                // must not lead root's admin command to write elsewhere.
                use std::os::unix::fs::MetadataExt;
                if !may_follow(m.uid(), rustix::process::geteuid().as_raw()) {
                    return Err(std::io::Error::other(format!(
                        "{} is a symbolic link owned by another user (uid {}); refusing to follow it",
                        path.display(),
                        m.uid()
                    )));
                }
                let target = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(text: &str) -> Result<UserDb, UsersError> {
        UserDb::parse(text, Path::new("users.json"))
    }

    #[test]
    fn argon2_verification_in_reused_memory_agrees_with_the_crate() {
        use argon2::PasswordVerifier;
        // Ours and a cheaper one, so that the reused memory is larger than
        // the second needs and holds the first's blocks.
        let ours = hash_password("correct horse").unwrap();
        let params = Params::new(1024, 1, 1, None).unwrap();
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"battery staple")
            .unwrap()
            .to_string();
        for _ in 0..2 {
            for (hash, right, wrong) in [(&ours, "correct horse", "correct horsE"), (&small, "battery staple", "")] {
                let parsed = PasswordHash::new(hash).unwrap();
                assert!(verify_argon2(hash, right.as_bytes()), "{hash}");
                assert!(Argon2::default().verify_password(right.as_bytes(), &parsed).is_ok());
                assert!(!verify_argon2(hash, wrong.as_bytes()), "{hash}");
            }
        }
        // A hash from elsewhere: the RFC 9106 parameters PHP and libsodium use too.
        let php = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$";
        assert!(!verify_argon2(php, b"x"), "no output: never a match");
        assert!(!verify_argon2("$argon2id$v=19$m=19456,t=2,p=1$bad", b"x"));
    }

    #[test]
    fn dummy_hash_is_a_valid_default_cost_hash() {
        let h = PasswordHash::new(DUMMY_HASH).unwrap();
        let p = Params::try_from(&h).unwrap();
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES));
    }

    #[test]
    fn hashes_verify_and_carry_owasp_parameters() {
        let hash = hash_password("johnpass").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        let text = serde_json::json!({"John": {"first": "John", "last": "Smith", "password": hash, "n": 3}});
        let users = db(&text.to_string()).unwrap();
        let user = users.verify("john", "johnpass").expect("right password");
        assert_eq!(user.username, "john");
        assert_eq!(user.field("first"), "John");
        assert!(user.fields.get("password").is_none());
        assert!(user.fields.get("n").is_none(), "only string fields reach the pages");
        assert!(users.verify(" JOHN ", "johnpass").is_some(), "usernames are normalized");
        assert!(users.verify("john", "wrong").is_none());
        assert!(users.verify("nobody", "johnpass").is_none());
    }

    #[test]
    fn plaintext_password_is_a_load_error_naming_the_user() {
        let err = db(r#"{"john": {"first": "John", "password": "johnpass"}}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"john\"") && text.contains("plaintext"), "{text}");
    }

    #[test]
    fn unparsable_hashes_are_load_errors() {
        for bad in ["$argon2id$garbage", "$2y$10$short", "$1$md5crypt$abc", ""] {
            let text = serde_json::json!({"jane": {"password": bad}}).to_string();
            assert!(matches!(db(&text), Err(UsersError::BadUser { .. })), "{bad:?}");
        }
        assert!(matches!(db(r#"{"jane": {}}"#), Err(UsersError::BadUser { .. })));
        assert!(matches!(db("[1]"), Err(UsersError::Malformed { .. })));
        assert!(matches!(db("{"), Err(UsersError::Malformed { .. })));
    }

    #[test]
    fn bcrypt_from_htpasswd_is_accepted() {
        let hash = bcrypt::hash("janepass", 4).unwrap().replacen("$2b$", "$2y$", 1);
        let users = db(&serde_json::json!({"jane": {"password": hash}}).to_string()).unwrap();
        assert!(users.verify("jane", "janepass").is_some());
        assert!(users.verify("jane", "nope").is_none());
    }

    #[test]
    fn unknown_users_are_verified_against_the_files_usual_cost() {
        let bcrypt_hash = bcrypt::hash("x", 5).unwrap();
        let text = serde_json::json!({"a": {"password": bcrypt_hash}, "b": {"password": bcrypt_hash}}).to_string();
        let users = db(&text).unwrap();
        match &users.dummy {
            Stored::Bcrypt(h) => {
                assert!(h.starts_with("$2b$05$"), "{h}");
                assert!(h.parse::<bcrypt::HashParts>().is_ok());
                assert!(!bcrypt::verify("x", h).unwrap());
            }
            other => panic!("expected a bcrypt dummy, got {other:?}"),
        }
        let argon = hash_password("y").unwrap();
        let cheap = argon.replace("m=19456,t=2,p=1", "m=8192,t=1,p=1");
        let users = db(&serde_json::json!({"c": {"password": cheap}}).to_string()).unwrap();
        match &users.dummy {
            Stored::Argon2id(h) => assert!(h.contains("m=8192,t=1,p=1") && PasswordHash::new(h).is_ok(), "{h}"),
            other => panic!("expected an argon2id dummy, got {other:?}"),
        }
    }

    #[test]
    fn hashes_too_costly_to_verify_are_load_errors() {
        let argon = hash_password("y").unwrap().replace("m=19456", "m=4194304");
        assert!(matches!(
            db(&serde_json::json!({"c": {"password": argon}}).to_string()),
            Err(UsersError::BadUser { .. })
        ));
        let b = bcrypt::hash("x", 4).unwrap().replacen("$04$", "$31$", 1);
        assert!(matches!(db(&serde_json::json!({"c": {"password": b}}).to_string()), Err(UsersError::BadUser { .. })));
    }

    #[test]
    fn usernames_that_collide_after_normalizing_are_refused() {
        let h = hash_password("x").unwrap();
        let text = serde_json::json!({"john": {"password": h}, "John": {"password": h}}).to_string();
        assert!(matches!(db(&text), Err(UsersError::BadUser { .. })));
    }

    #[test]
    fn missing_file_says_how_to_create_it() {
        let err = UserDb::load(Path::new("/nonexistent/users.json")).unwrap_err();
        assert!(err.to_string().contains("webauth user add"));
    }

    #[test]
    fn save_keeps_the_mode_and_leaves_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("webauth-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        let mut file = UsersFile::open(&path).unwrap();
        file.entries.insert("x".into(), serde_json::json!({"password": "h", "extra": [1]}));
        file.save().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o604);
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["x"]["extra"], serde_json::json!([1]));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_writer_waits_and_sees_the_first_writers_change() {
        let dir = std::env::temp_dir().join(format!("webauth-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.json");
        std::fs::write(&path, "{}").unwrap();
        let mut first = UsersFile::lock(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let second = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut file = UsersFile::lock(&path).unwrap();
                tx.send(()).unwrap();
                file.entries.insert("b".into(), serde_json::json!({}));
                file.save().unwrap();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "the second writer waits for the lock");
        first.entries.insert("a".into(), serde_json::json!({}));
        first.save().unwrap();
        drop(first);
        second.join().unwrap();
        let back = UsersFile::open(&path).unwrap();
        assert!(back.entries.contains_key("a") && back.entries.contains_key("b"), "{:?}", back.entries);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn look_alike_usernames() {
        assert_eq!(normalize_username(" ｊｏｈｎ "), "john", "fullwidth is a compatibility form");
        assert_eq!(normalize_username("ＪＯＨＮ"), "john");
        assert_eq!(normalize_username("John"), "john");
        assert_eq!(normalize_username("ﬁona"), "fiona", "ligature");
        for odd in ["\u{a8}john", "\u{210c}ans", "İstanbul", "ǅ"] {
            let once = normalize_username(odd);
            assert_eq!(normalize_username(&once), once, "{odd:?} normalises to a fixed point");
        }
        for confusable in ["јohn", "jοhn", "jöhn", "jo\u{200b}hn", "john\u{0301}", "ʝohn"] {
            assert!(!valid_username(&normalize_username(confusable)), "{confusable:?}");
        }
        let users =
            serde_json::json!({"john": {"password": hash_password("x").unwrap()}, "ｊｏｈｎ": {"password": "h"}});
        assert!(matches!(db(&users.to_string()), Err(UsersError::BadUser { .. })), "listed twice");
    }

    #[test]
    fn shown_usernames_are_cut() {
        assert_eq!(shown_username("john"), "\"john\"");
        let long = "ж".repeat(300);
        let shown = shown_username(&long);
        assert_eq!(shown.chars().count(), 64 + 3, "{shown}");
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn only_roots_and_our_own_symlinks_are_followed() {
        assert!(may_follow(0, 0) && may_follow(0, 1000) && may_follow(1000, 1000));
        assert!(!may_follow(33, 0), "root does not follow the web server's link");
        assert!(!may_follow(1001, 1000));
    }

    #[test]
    fn htpasswd_hash_kinds() {
        assert!(check_htpasswd_hash(&bcrypt::hash("x", 4).unwrap()).is_ok());
        for (hash, named) in [
            ("$apr1$x9Yh3AGN$bIsKx0e3rDVxAnzhq4I0a/", "MD5"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("$6$salt$hash", "crypt(3)"),
            ("rqXexS6ZhobKA", "DES"),
            ("$2y$31$short", "bcrypt"),
        ] {
            let why = check_htpasswd_hash(hash).unwrap_err();
            assert!(why.contains(named), "{hash}: {why}");
        }
    }

    #[test]
    fn username_rules() {
        assert!(valid_username("john.smith@example.org"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username("<script>"));
        assert!(!valid_username(&"a".repeat(MAX_USERNAME + 1)));
    }
}
