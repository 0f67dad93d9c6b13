//! Persistent per-guest allowances: `aa-virt allow GUEST PATH --perms P`.
//!
//! An allowance is one more resource of the guest, with origin
//! `allow: REASON`: it is vetted exactly like a disk ([`vet`]: exact path,
//! no control characters, resolved, never a restricted host path) when it
//! is added and again at every render, and it goes through the same rule
//! derivation and escaping. Allowances are stored one JSON file per guest
//! (keyed by libvirt UUID) under `/var/lib/aa-virt/guests`, written
//! atomically under their own lock, beside the guest's persistent mode
//! (`aa-virt mode GUEST complain|enforce`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::guest::{Access, Guest, Resource};
use crate::store::{self, StoreError};

use super::explain::Policy;
use super::rules::{push_resource, vet, RuleError, RuleSet};

/// Longest reason kept.
pub const MAX_REASON: usize = 200;
/// Mode of allowance files (they hold paths, not secrets).
const FILE_MODE: u32 = 0o644;

/// Why an allowance could not be added, removed or read.
#[derive(Debug, thiserror::Error)]
pub enum AllowError {
    /// The path is refused (control characters, restricted...).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The permissions are not ones an allowance grants.
    #[error("guest {guest}: permissions {perms:?} cannot be allowed: {why}")]
    Perms {
        /// Guest name.
        guest: String,
        /// As given.
        perms: String,
        /// Why.
        why: &'static str,
    },
    /// The reason holds a control character or `;` (it becomes a comment
    /// in the profile, where `; ` separates origins).
    #[error("guest {guest}: the reason must be one line without ';' (got {reason:?})")]
    Reason {
        /// Guest name.
        guest: String,
        /// As given.
        reason: String,
    },
    /// The path is not valid UTF-8 (allowances are stored as text).
    #[error("guest {guest}: path {path} is not valid UTF-8")]
    NotUtf8 {
        /// Guest name.
        guest: String,
        /// The path, printable.
        path: String,
    },
    /// The allowance file cannot be read or parsed.
    #[error("guest {guest}: allowances in {path} cannot be read: {why}")]
    Corrupt {
        /// Guest name.
        guest: String,
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A deny rule of the guest's profile covers the path: deny wins in
    /// AppArmor, so an allowance could never take effect.
    #[error("guest {guest}: {path}: a deny rule of its profile covers it ({rule} <- {from}); deny rules win over any allow, so an allowance cannot grant it")]
    Overridden {
        /// Guest name.
        guest: String,
        /// The path, printable.
        path: String,
        /// The deny rule.
        rule: String,
        /// Where it comes from.
        from: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// The path, as given (resolved and vetted again at every render).
    pub path: String,
    /// The permissions (`r`, `rw`, `rwk`...).
    pub perms: String,
    /// Why it was granted.
    pub reason: String,
    /// When (seconds since the epoch).
    pub date: u64,
}

impl Allowance {
    /// The rule origin: `allow: REASON`.
    pub fn origin(&self) -> String {
        format!("allow: {}", self.reason)
    }
}

/// The state file of one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct File {
    /// The guest's name when last written (for people reading the file).
    guest: String,
    /// Complain mode (`true`), enforce (`false`), or as the configuration
    /// says (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    complain: Option<bool>,
    #[serde(default)]
    allowances: Vec<Allowance>,
}

/// Where per-guest state (allowances, mode) lives under `root`.
pub fn dir_under(root: &Path) -> PathBuf {
    root.join("var/lib/aa-virt/guests")
}

/// The state file of guest `key` in `dir` (allowances and mode).
pub fn file_of(dir: &Path, key: &str) -> PathBuf {
    // Keys are UUIDs (written in one spelling) or, for a key that is not
    // one, a name that cannot leave the directory.
    let name = match uuid::Uuid::parse_str(key) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => key.replace(['/', '.'], "_"),
    };
    dir.join(format!("{name}.json"))
}

/// Parse permissions an allowance may grant: `r w a k l` (no `m`, no exec).
pub fn parse_perms(guest: &str, perms: &str) -> Result<Access, AllowError> {
    let bad = |why| AllowError::Perms {
        guest: guest.into(),
        perms: perms.into(),
        why,
    };
    if perms.contains(['m', 'x']) {
        return Err(bad(
            "executable mappings and exec are never allowed this way",
        ));
    }
    match Access::parse(perms) {
        Some(a) if !a.is_empty() => Ok(a),
        Some(_) => Err(bad("no permission given")),
        None => Err(bad("use the letters r, w, a, k, l")),
    }
}

fn read(dir: &Path, key: &str, guest: &str) -> Result<File, AllowError> {
    let path = file_of(dir, key);
    let corrupt = |why: String| AllowError::Corrupt {
        guest: guest.into(),
        path: path.clone(),
        why,
    };
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<File>(&b).map_err(|e| corrupt(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

/// The allowances of guest `key` (none when it has no file).
pub fn load(dir: &Path, key: &str, guest: &str) -> Result<Vec<Allowance>, AllowError> {
    read(dir, key, guest).map(|f| f.allowances)
}

/// The guest's stored mode: `Some(true)` complain, `Some(false)` enforce,
/// `None` when `aa-virt mode` never set it.
pub fn mode(dir: &Path, key: &str, guest: &str) -> Result<Option<bool>, AllowError> {
    read(dir, key, guest).map(|f| f.complain)
}

/// Change the guest's state under its lock and write it back (the file
/// goes when nothing is left in it).
fn update(
    dir: &Path,
    key: &str,
    guest: &str,
    change: impl FnOnce(&mut File) -> bool,
) -> Result<bool, AllowError> {
    let _lock = store::lock(&dir.join(".lock"), key)?;
    let mut f = read(dir, key, guest)?;
    if !change(&mut f) {
        return Ok(false);
    }
    f.guest = guest.into();
    let path = file_of(dir, key);
    if f.allowances.is_empty() && f.complain.is_none() {
        store::remove(&path)?;
    } else {
        let text = serde_json::to_string_pretty(&f).expect("guest state serializes") + "\n";
        store::write_atomic(&path, text.as_bytes(), FILE_MODE)?;
    }
    Ok(true)
}

/// Store the guest's mode (`None`: back to what the configuration says).
pub fn set_mode(
    dir: &Path,
    key: &str,
    guest: &str,
    complain: Option<bool>,
) -> Result<(), AllowError> {
    update(dir, key, guest, |f| {
        f.complain = complain;
        true
    })
    .map(|_| ())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Vet a new allowance as [`add`] does, without storing it: its
/// permissions and its path, like a disk's. Gives the access.
pub fn vet_new(guest: &str, path: &Path, perms: &str) -> Result<Access, AllowError> {
    let access = parse_perms(guest, perms)?;
    let text = path.to_str().ok_or_else(|| AllowError::NotUtf8 {
        guest: guest.into(),
        path: super::escape::display_path(path),
    })?;
    vet(guest, &Resource::file(text, access, "allow"))?;
    Ok(access)
}

/// Vet and add (or replace, for the same path) an allowance of guest
/// `guest` keyed `key`. Refused paths are never stored.
pub fn add(
    dir: &Path,
    key: &str,
    guest: &str,
    path: &Path,
    perms: &str,
    reason: &str,
) -> Result<Allowance, AllowError> {
    let access = vet_new(guest, path, perms)?;
    let reason = reason.trim();
    if reason.chars().any(char::is_control) || reason.contains(';') {
        return Err(AllowError::Reason {
            guest: guest.into(),
            reason: reason.into(),
        });
    }
    let reason: String = reason.chars().take(MAX_REASON).collect();
    let reason = if reason.is_empty() {
        "no reason given".to_string()
    } else {
        reason
    };
    let a = Allowance {
        // UTF-8: vet_new checked it.
        path: path.to_string_lossy().into_owned(),
        perms: access.to_string(),
        reason,
        date: now(),
    };
    update(dir, key, guest, |f| {
        f.allowances.retain(|x| x.path != a.path);
        f.allowances.push(a.clone());
        true
    })?;
    Ok(a)
}

/// Remove the allowance for `path`; false when there was none.
pub fn remove(dir: &Path, key: &str, guest: &str, path: &str) -> Result<bool, AllowError> {
    update(dir, key, guest, |f| {
        let before = f.allowances.len();
        f.allowances.retain(|x| x.path != path);
        f.allowances.len() != before
    })
}

fn resource(a: &Allowance, access: Access) -> Resource {
    Resource::file(&a.path, access, a.origin())
}

/// Check a new allowance against the guest's current policy (read back
/// or rendered): refused when a deny rule covers the path (it could never
/// take effect); a note when other rules already grant it (an LXC profile's
/// broad `file,`): the allowance then only keeps the access should those
/// rules change.
pub fn against(
    policy: &Policy,
    guest: &str,
    path: &Path,
    perms: &str,
) -> Result<Option<String>, AllowError> {
    let access = parse_perms(guest, perms)?;
    let shown = super::escape::display_path(path);
    let v = policy.explain(path.as_os_str().as_encoded_bytes(), access);
    let letters = access.to_string();
    let overlaps = |a: Access| a.to_string().chars().any(|c| letters.contains(c));
    if let Some(d) = v.deny.iter().find(|d| overlaps(d.access)) {
        return Err(AllowError::Overridden {
            guest: guest.into(),
            path: shown,
            rule: d.text.clone(),
            from: d.source.describe(),
        });
    }
    if !v.allowed {
        return Ok(None);
    }
    let by: Vec<String> = v.allow.iter().map(|r| r.source.describe()).collect();
    Ok(Some(format!(
        "{guest}: {shown} is already granted {access} by {}; the allowance keeps it should that change",
        by.join(", ")
    )))
}

/// The rules of the stored allowances of guest `key` (an LXC container,
/// keyed by its profile name), each vetted like a disk ([`vet`]), with
/// origin `allow: REASON`.
pub fn rules(dir: &Path, key: &str, guest: &str) -> Result<RuleSet, AllowError> {
    let mut set = RuleSet::default();
    for a in load(dir, key, guest)? {
        let r = resource(&a, parse_perms(guest, &a.perms)?);
        let resolved = vet(guest, &r)?;
        push_resource(&mut set, &resolved, &r);
    }
    Ok(set)
}

/// The guest with its stored allowances added as resources (vetted with
/// every other resource when its rules are derived). The key is the
/// guest's UUID.
pub fn with_allowances(guest: &Guest, dir: &Path) -> Result<Guest, AllowError> {
    let Some(uuid) = guest.uuid else {
        return Ok(guest.clone());
    };
    let mut g = guest.clone();
    for a in load(dir, &uuid.hyphenated().to_string(), &guest.name)? {
        let access = parse_perms(&guest.name, &a.perms)?;
        g.add(resource(&a, access));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::GuestKind;
    use crate::policy::derive;

    const KEY: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    #[test]
    fn add_list_render_remove() {
        let d = tempfile::tempdir().unwrap();
        let a = add(
            d.path(),
            KEY,
            "vm1",
            Path::new("/srv/x [1].img"),
            "rw",
            "test disk",
        )
        .unwrap();
        assert_eq!(a.origin(), "allow: test disk");
        add(d.path(), KEY, "vm1", Path::new("/srv/y"), "r", "").unwrap();
        // Same path again replaces it.
        add(d.path(), KEY, "vm1", Path::new("/srv/y"), "rk", "lock").unwrap();
        let items = load(d.path(), KEY, "vm1").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].perms, "rk");
        let mut g = Guest::new(GuestKind::Qemu, "vm1");
        g.uuid = Some(uuid::Uuid::parse_str(KEY).unwrap());
        let g = with_allowances(&g, d.path()).unwrap();
        let set = derive(&g).unwrap();
        let r = set
            .rules()
            .iter()
            .find(|r| r.origins == ["allow: test disk"])
            .unwrap();
        assert_eq!(r.render(), r#"  "/srv/x \[1\].img" rw,"#);
        assert!(remove(d.path(), KEY, "vm1", "/srv/y").unwrap());
        assert!(!remove(d.path(), KEY, "vm1", "/srv/y").unwrap());
        set_mode(d.path(), KEY, "vm1", Some(true)).unwrap();
        assert!(remove(d.path(), KEY, "vm1", "/srv/x [1].img").unwrap());
        assert_eq!(mode(d.path(), KEY, "vm1").unwrap(), Some(true));
        set_mode(d.path(), KEY, "vm1", None).unwrap();
        assert!(!file_of(d.path(), KEY).exists());
    }

    #[test]
    fn checked_against_the_policy() {
        let mut p = Policy::default();
        p.add_text(
            "lxc/c1",
            "profile x {\n  file,\n  deny /srv/guarded/** w,\n}\n",
        );
        let e = against(&p, "c1", Path::new("/srv/guarded/f"), "rw").unwrap_err();
        assert!(matches!(e, AllowError::Overridden { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("deny /srv/guarded/** w <- profile lxc/c1:3")
                && e.to_string().contains("c1"),
            "{e}"
        );
        let note = against(&p, "c1", Path::new("/srv/guarded/f"), "r").unwrap();
        assert!(note.unwrap().contains("already granted r"));
        assert_eq!(
            against(&Policy::default(), "vm1", Path::new("/srv/a"), "r").unwrap(),
            None
        );
        assert!(against(&p, "c1", Path::new("/srv/a"), "x").is_err());
    }

    #[test]
    fn refuses_what_a_disk_would_be_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = add(d.path(), KEY, "vm1", Path::new("/etc/shadow"), "r", "x").unwrap_err();
        assert!(
            e.to_string().contains("/etc/shadow") && e.to_string().contains("vm1"),
            "{e}"
        );
        assert!(add(d.path(), KEY, "vm1", Path::new("/srv/a\nb"), "r", "x").is_err());
        assert!(add(d.path(), KEY, "vm1", Path::new("srv/a"), "r", "x").is_err());
        assert!(add(d.path(), KEY, "vm1", Path::new("/srv/a"), "rx", "x").is_err());
        assert!(add(d.path(), KEY, "vm1", Path::new("/srv/a"), "m", "x").is_err());
        assert!(add(d.path(), KEY, "vm1", Path::new("/srv/a"), "r", "a\nb").is_err());
        assert!(add(d.path(), KEY, "vm1", Path::new("/srv/a"), "r", "a; b").is_err());
        assert!(load(d.path(), KEY, "vm1").unwrap().is_empty());
        std::fs::write(file_of(d.path(), KEY), "{").unwrap();
        assert!(matches!(
            load(d.path(), KEY, "vm1"),
            Err(AllowError::Corrupt { .. })
        ));
    }
}
