//! `webauth bundle shared-host DIR --mount /members/`: lays out the folder a
//! shared-host user uploads to an Apache host with `.htaccess` and CGI: the
//! three programs as `index.cgi`, `login.cgi` and `logout.cgi`, an
//! `.htaccess` that routes the mount's `/`, `login` and `logout` to them, sets
//! the configuration with `SetEnv` and denies everything else in the folder,
//! and a private data folder with the users file, with modes a suexec host
//! accepts (programs 0755, data 0700 and 0600, nothing group- or
//! world-writable).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::is_mount_path;

/// What to lay out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The folder to create (or fill, if empty), e.g. `upload/members`.
    pub dir: PathBuf,
    /// The URL path it will be served at, ending in `/`.
    pub mount: String,
    /// Where the users file and the store live on the host: an absolute path
    /// outside the web root, or `None` for `DIR/data`, inside and denied.
    pub data: Option<PathBuf>,
    /// The folder holding the `index`, `login` and `logout` programs.
    pub programs: PathBuf,
}

const PROGRAMS: [&str; 3] = ["index", "login", "logout"];
/// The first line of every `.htaccess` we write: how `check` knows the folder.
pub const MARKER: &str = "# webauth shared-host folder";

/// The `.htaccess` for a plan: routing, configuration, and a deny for
/// everything that is not one of the three programs.
pub fn htaccess(plan: &Plan) -> String {
    let (users, store) = data_paths(plan);
    format!(
        "{MARKER}, mounted at {mount} (made by `webauth bundle shared-host`).\n\
         # Apache runs the programs as CGI (mod_cgi, or suexec on a shared host);\n\
         # relative paths below are relative to this folder.\n\
         Options +ExecCGI -Indexes -MultiViews\n\
         AddHandler cgi-script .cgi\n\
         DirectoryIndex index.cgi\n\
         SetEnv WEBAUTH_USERS {users}\n\
         SetEnv WEBAUTH_STORE sqlite:{store}\n\
         SetEnv WEBAUTH_MOUNT {mount}\n\
         \n\
         RewriteEngine On\n\
         # The folder's URL, also when an Alias (deploy/apache/cgi.conf) serves it.\n\
         RewriteBase {mount}\n\
         RewriteRule ^$ index.cgi [END]\n\
         RewriteRule ^login$ login.cgi [END]\n\
         RewriteRule ^logout$ logout.cgi [END]\n\
         RewriteRule ^(index|login|logout)\\.cgi$ - [END]\n\
         # Everything else in this folder (data/, this file) is refused.\n\
         RewriteRule ^ - [F]\n\
         \n\
         # The programs refuse bodies over 64 KiB; let Apache refuse them first.\n\
         LimitRequestBody 65536\n",
        mount = plan.mount,
    )
}

/// The users file and the store as the `.htaccess` names them.
fn data_paths(plan: &Plan) -> (String, String) {
    match &plan.data {
        Some(dir) => (dir.join("users.json").display().to_string(), dir.join("sessions.db").display().to_string()),
        None => ("data/users.json".to_string(), "data/sessions.db".to_string()),
    }
}

/// Where the users file is on this machine (the `.htaccess` may name it
/// relative to the folder).
pub fn users_path(plan: &Plan) -> PathBuf {
    plan.data.clone().unwrap_or_else(|| plan.dir.join("data")).join("users.json")
}

/// Creates the folder, copies the programs, writes the `.htaccess` and makes
/// the data folder. The users file is the caller's (it asks for a password).
pub fn lay_out(plan: &Plan) -> Result<(), String> {
    if !is_mount_path(&plan.mount) || !plan.mount.ends_with('/') {
        return Err(format!("--mount {:?}: expected an absolute path ending in /, such as /members/", plan.mount));
    }
    if let Some(data) = &plan.data {
        if data.is_relative() {
            return Err(format!("--data {}: give an absolute path on the host (outside the web root)", data.display()));
        }
        // It goes into SetEnv lines, which Apache splits at spaces.
        let text = data.to_string_lossy();
        if text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '\'' | '$' | '%')) {
            return Err(format!("--data {text:?}: use a path without spaces, quotes or control characters"));
        }
    }
    make_dir(&plan.dir, 0o755)?;
    // Whatever is there already is written over: never through a symlink
    // that someone with access to the folder put there.
    for name in ["index.cgi", "login.cgi", "logout.cgi", ".htaccess", "data", "data/.htaccess", "data/users.json"] {
        let path = plan.dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("{} is a symbolic link; refusing to write through it", path.display()));
        }
    }
    let unexpected: Vec<String> = fs::read_dir(&plan.dir)
        .map_err(|e| format!("{}: {e}", plan.dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !matches!(n.as_str(), "index.cgi" | "login.cgi" | "logout.cgi" | ".htaccess" | "data"))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!(
            "{} already holds other files ({}); give an empty or new folder",
            plan.dir.display(),
            unexpected.join(", ")
        ));
    }
    for program in PROGRAMS {
        let from = plan.programs.join(program);
        let to = plan.dir.join(format!("{program}.cgi"));
        fs::copy(&from, &to).map_err(|e| {
            format!(
                "cannot copy {}: {e} (build the programs first, or name their folder with --programs)",
                from.display()
            )
        })?;
        set_mode(&to, 0o755)?;
    }
    write_file(&plan.dir.join(".htaccess"), htaccess(plan).as_bytes(), 0o644)?;
    let data = plan.data.clone().unwrap_or_else(|| plan.dir.join("data"));
    make_dir(&data, 0o700)?;
    if plan.data.is_none() {
        // A second lock on the door, should the folder's rules be overridden.
        write_file(&data.join(".htaccess"), b"Require all denied\n", 0o644)?;
    }
    Ok(())
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), String> {
    match fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        Ok(()) if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) => {
            Err(format!("{} is a symbolic link; refusing to use it", dir.display()))
        }
        Ok(()) => set_mode(dir, mode),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    set_mode(path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(data: Option<&str>) -> Plan {
        Plan {
            dir: PathBuf::from("/x/members"),
            mount: "/members/".into(),
            data: data.map(PathBuf::from),
            programs: PathBuf::from("/bin"),
        }
    }

    #[test]
    fn the_htaccess_routes_configures_and_denies_the_rest() {
        let text = htaccess(&plan(None));
        assert!(text.starts_with(MARKER));
        for line in [
            "SetEnv WEBAUTH_USERS data/users.json",
            "SetEnv WEBAUTH_STORE sqlite:data/sessions.db",
            "SetEnv WEBAUTH_MOUNT /members/",
            "RewriteBase /members/",
            "RewriteRule ^login$ login.cgi [END]",
            "RewriteRule ^ - [F]",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let outside = htaccess(&plan(Some("/home/u/webauth-data")));
        assert!(outside.contains("SetEnv WEBAUTH_USERS /home/u/webauth-data/users.json"), "{outside}");
    }

    #[test]
    fn a_bad_mount_or_data_folder_is_refused() {
        let mut p = plan(None);
        p.mount = "members".into();
        assert!(lay_out(&p).unwrap_err().contains("--mount"));
        for data in ["data", "/my data", "/d\nRewriteRule ^data - [END]\n#", "/a\"b"] {
            assert!(lay_out(&plan(Some(data))).unwrap_err().contains("--data"), "{data:?}");
        }
    }

    #[test]
    fn symlinks_in_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("precious.txt");
        fs::write(&victim, "keep").unwrap();
        let folder = dir.path().join("m");
        fs::create_dir(&folder).unwrap();
        std::os::unix::fs::symlink(&victim, folder.join(".htaccess")).unwrap();
        let p = Plan { dir: folder, mount: "/m/".into(), data: None, programs: PathBuf::from("/nonexistent") };
        assert!(lay_out(&p).unwrap_err().contains("symbolic link"));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    }
}
