//! What the kernel and the parser can do: AppArmor on or off, profile
//! stacking, the caller's namespace view, mount mediation, and rules the
//! parser accepts (probed by compiling small profiles).
//!
//! The kernel side is read below a [`Root`] so unit tests run against a
//! fake securityfs tree; the parser side runs the real `apparmor_parser`.

use std::path::Path;

use serde::Serialize;

use super::feature_set::{read_features_file, Apparmor4, Source};
use super::parser::{Parser, ParserError};
use super::securityfs::Root;
use super::securityfs::{status_at, KernelStatus};

/// The oldest `features/domain/version` that can stack (`a//&b`).
pub const STACKING_MIN_VERSION: (u32, u32) = (1, 2);

/// Rules probed by compiling a one-rule profile: name and rule text. A
/// rule that starts with `abi ` is compiled before an empty profile.
pub const PROBES: &[(&str, &str)] = &[
    ("abi/4.0", "abi <abi/4.0>,"),
    ("userns", "userns,"),
    ("io_uring", "io_uring,"),
    ("mqueue", "mqueue,"),
    (
        "mount_nosymfollow",
        "mount options=(ro, nosymfollow) -> /aa-virt-probe/,",
    ),
];

/// Parse a `major.minor` version (`"1.2\n"`) into numbers, so that `1.10`
/// sorts after `1.2` and `2.0` after `1.9`.
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let (maj, min) = s.split_once('.').unwrap_or((s, "0"));
    let min = min.split('.').next().unwrap_or("0");
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// The outcome of one parser probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Short name (`userns`).
    pub name: String,
    /// The rule compiled.
    pub rule: String,
    /// True when the parser accepted it.
    pub supported: bool,
}

/// What the parser accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParserFeatures {
    /// `apparmor_parser --version`, first line.
    pub version: Option<String>,
    /// Why the parser could not be used, when it could not.
    pub error: Option<String>,
    /// The probes, in [`PROBES`] order.
    pub probes: Vec<Probe>,
    /// The policy ABI files the parser can name (`3.0`, `4.0`: the files
    /// in its base directory's `abi/`).
    pub abi_files: Vec<String>,
}

impl ParserFeatures {
    /// True when the probe `name` compiled.
    pub fn supports(&self, name: &str) -> bool {
        self.probes.iter().any(|p| p.name == name && p.supported)
    }
}

/// Compile a profile holding just `rule` with `parser` (nothing is loaded).
/// `Ok(false)` when the parser rejects the rule; `Err` when the parser
/// cannot be run at all.
pub fn probe_rule(parser: &Parser, rule: &str) -> Result<bool, ParserError> {
    let dir = crate::store::tempdir().map_err(|source| ParserError::Spawn {
        bin: parser.bin.clone(),
        source,
    })?;
    let file = dir.join("aa-virt-probe");
    let text = if rule.starts_with("abi ") {
        format!("{rule}\nprofile aa-virt-probe {{\n}}\n")
    } else {
        format!("profile aa-virt-probe {{\n  {rule}\n}}\n")
    };
    let res = std::fs::write(&file, text)
        .map_err(|source| ParserError::Spawn {
            bin: parser.bin.clone(),
            source,
        })
        .and_then(|()| match parser.check(&file) {
            Ok(()) => Ok(true),
            Err(ParserError::Rejected { .. }) => Ok(false),
            Err(e) => Err(e),
        });
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Run every probe in [`PROBES`].
pub fn probe_parser(parser: &Parser) -> ParserFeatures {
    let version = parser.version().ok();
    let mut probes = Vec::new();
    let mut error = None;
    for (name, rule) in PROBES {
        match probe_rule(parser, rule) {
            Ok(supported) => probes.push(Probe {
                name: name.to_string(),
                rule: rule.to_string(),
                supported,
            }),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    ParserFeatures {
        version,
        error,
        probes,
        abi_files: abi_files(&parser.base_dir()),
    }
}

/// The ABI versions in `base/abi/` (`3.0`, `4.0`), sorted; the
/// `kernel-*` files there are not ABIs aa-virt would declare.
fn abi_files(base: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(base.join("abi"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| parse_version(n).is_some())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|n| parse_version(n));
    v
}

/// The AppArmor 4 mediation classes of the kernel, or, when the kernel
/// has no AppArmor, of the features file the parser compiles against
/// (`None` when neither can be read).
pub fn apparmor4(root: &Root, features_file: Option<&Path>) -> Option<Apparmor4> {
    if root.kernel_status().is_available() {
        return Some(Apparmor4::read(&Source::Kernel(root), "kernel"));
    }
    let f = features_file?;
    let map = read_features_file(f).ok()?;
    Some(Apparmor4::read(
        &Source::File(&map),
        &format!("features file {}", f.display()),
    ))
}

/// How an LXC container can be confined on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerMode {
    /// `PROFILE//&:NS:`: a profile stacked with the container's own policy
    /// namespace, so the guest can load its own policy.
    Stacked,
    /// A plain profile and no namespace: the host is itself a stacked
    /// container (`.ns_stacked` is `yes`), and AppArmor has only one
    /// namespace level in practice.
    Plain,
}

/// The kernel's AppArmor features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Features {
    /// AppArmor is enabled and securityfs is mounted.
    pub available: bool,
    /// Why not, when it is not.
    pub unavailable_reason: Option<String>,
    /// The securityfs directory.
    pub securityfs: String,
    /// `features/domain/stack` is `yes`.
    pub domain_stack: bool,
    /// `features/domain/version`, as the kernel prints it.
    pub domain_version: Option<String>,
    /// Stacking usable: `domain/stack` and version >= 1.2.
    pub stacking: bool,
    /// `.ns_stacked`: our own view is a stacked namespace.
    pub ns_stacked: Option<bool>,
    /// `.ns_name`: our own namespace.
    pub ns_name: Option<String>,
    /// `features/namespaces` exists.
    pub namespaces: bool,
    /// Mount mediation: `features/mount/mask` exists.
    pub mount: bool,
    /// User-namespace creation is mediated: `features/namespaces/mask`
    /// lists `userns_create` (upstream kernels) or
    /// `features/namespaces/userns_create` exists (Ubuntu's).
    pub userns_mediation: bool,
    /// AppArmor 4's mediation classes, from the kernel or, when it has no
    /// AppArmor and the parser was probed, from the parser's features file.
    pub apparmor4: Option<Apparmor4>,
    /// The parser's side, when probed.
    pub parser: Option<ParserFeatures>,
}

impl Features {
    /// Read the kernel's features below `root` (no parser probes).
    pub fn kernel(root: &Root) -> Features {
        let status = status_at(root.path());
        let view = root.ns_view();
        let (available, unavailable_reason) = match status {
            KernelStatus::Available { .. } => (true, None),
            KernelStatus::Unavailable(r) => (false, Some(r)),
        };
        let domain_stack = root.feature("domain/stack").as_deref() == Some("yes");
        let domain_version = root.feature("domain/version");
        let stacking = domain_stack
            && domain_version
                .as_deref()
                .and_then(parse_version)
                .is_some_and(|v| v >= STACKING_MIN_VERSION);
        Features {
            available,
            unavailable_reason,
            securityfs: root.apparmor_dir().display().to_string(),
            domain_stack,
            domain_version,
            stacking,
            ns_stacked: view.as_ref().map(|v| v.stacked),
            ns_name: view.map(|v| v.name),
            namespaces: root.has_feature("namespaces"),
            mount: root.has_feature("mount/mask"),
            userns_mediation: Apparmor4::read(&Source::Kernel(root), "kernel").userns,
            apparmor4: available.then(|| Apparmor4::read(&Source::Kernel(root), "kernel")),
            parser: None,
        }
    }

    /// Read the kernel's features and probe `parser`.
    pub fn detect(root: &Root, parser: &Parser) -> Features {
        let mut f = Features::kernel(root);
        f.parser = Some(probe_parser(parser));
        if f.apparmor4.is_none() {
            f.apparmor4 = apparmor4(root, parser.features.as_deref());
        }
        f
    }

    /// How a container can be confined, or why it cannot (the message is
    /// complete: it says what is missing and what to do).
    /// `allow_incomplete` accepts a kernel without mount mediation.
    pub fn container_mode(&self, allow_incomplete: bool) -> Result<ContainerMode, String> {
        if !self.available {
            return Err(format!(
                "AppArmor not available: {}",
                self.unavailable_reason
                    .as_deref()
                    .unwrap_or("unknown reason")
            ));
        }
        if !self.mount && !allow_incomplete {
            return Err(format!(
                "incomplete AppArmor support: this kernel has no mount mediation ({}/features/mount/mask is missing), so a container's profile cannot stop it from remounting its way around path rules; allow it explicitly (--allow-incomplete or AA_VIRT_ALLOW_INCOMPLETE=1) to start anyway",
                self.securityfs
            ));
        }
        if self.ns_stacked == Some(true) {
            return Ok(ContainerMode::Plain);
        }
        if !self.stacking {
            return Err(format!(
                "this kernel cannot stack AppArmor profiles (features/domain/stack is {}, domain/version is {}; stacking needs version {}.{} or later), so a container cannot get its own policy namespace",
                if self.domain_stack { "yes" } else { "missing" },
                self.domain_version.as_deref().unwrap_or("missing"),
                STACKING_MIN_VERSION.0,
                STACKING_MIN_VERSION.1
            ));
        }
        Ok(ContainerMode::Stacked)
    }

    /// A human-readable report, one fact per line.
    pub fn report(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        let mut s = String::new();
        if self.available {
            s.push_str(&format!(
                "AppArmor:              enabled ({})\n",
                self.securityfs
            ));
        } else {
            s.push_str(&format!(
                "AppArmor not available: {}\n",
                self.unavailable_reason
                    .as_deref()
                    .unwrap_or("unknown reason")
            ));
        }
        s.push_str(&format!(
            "stacking:              {} (domain/stack {}, domain/version {})\n",
            yn(self.stacking),
            if self.domain_stack { "yes" } else { "missing" },
            self.domain_version.as_deref().unwrap_or("missing")
        ));
        s.push_str(&format!(
            "own namespace:         {}{}\n",
            self.ns_name.as_deref().unwrap_or("unknown"),
            match self.ns_stacked {
                Some(true) => " (stacked: containers get a plain profile, no namespace)",
                Some(false) => " (not stacked)",
                None => "",
            }
        ));
        s.push_str(&format!("policy namespaces:     {}\n", yn(self.namespaces)));
        s.push_str(&format!("mount mediation:       {}\n", yn(self.mount)));
        s.push_str(&format!(
            "userns mediation:      {}\n",
            yn(self.userns_mediation)
        ));
        if let Some(p) = &self.parser {
            s.push_str(&format!(
                "parser:                {}\n",
                p.version.as_deref().unwrap_or("unknown version")
            ));
            if let Some(e) = &p.error {
                s.push_str(&format!("  parser error:        {e}\n"));
            }
            for pr in &p.probes {
                s.push_str(&format!(
                    "  rule {:<20}{}\n",
                    format!("{}:", pr.name),
                    yn(pr.supported)
                ));
            }
            s.push_str(&format!(
                "  policy ABI files:    {}\n",
                if p.abi_files.is_empty() {
                    "none".to_string()
                } else {
                    p.abi_files.join(" ")
                }
            ));
        }
        if let Some(a) = &self.apparmor4 {
            let or_no = |v: &Option<String>| v.clone().unwrap_or_else(|| "no".into());
            s.push_str(&format!("AppArmor 4 mediation:  ({})\n", a.source));
            s.push_str(&format!("  userns:              {}\n", yn(a.userns)));
            s.push_str(&format!("  io_uring:            {}\n", or_no(&a.io_uring)));
            s.push_str(&format!("  mqueue:              {}\n", or_no(&a.mqueue)));
            s.push_str(&format!("  unix (fine-grained): {}\n", yn(a.unix)));
            s.push_str(&format!(
                "  policy permstable32: {}\n",
                or_no(&a.permstable32)
            ));
        }
        s.push_str(&format!(
            "LXC containers:        {}\n",
            match self.container_mode(false) {
                Ok(ContainerMode::Stacked) =>
                    "stacked profile with a policy namespace per container".to_string(),
                Ok(ContainerMode::Plain) =>
                    "plain profile per container (no namespace)".to_string(),
                Err(e) => format!("cannot be confined: {e}"),
            }
        ));
        s
    }
}

/// Add to a [`FakeTree`](super::fake::FakeTree) at `dir` the feature
/// files of a kernel that can confine stacked containers: `domain/stack`,
/// `domain/version` (as given), `mount/mask` and `namespaces/` (tests).
#[cfg(any(test, feature = "test-util"))]
pub fn write_fake_features(dir: &std::path::Path, domain_version: &str) -> std::io::Result<()> {
    let f = Root::new(dir).apparmor_dir().join("features");
    std::fs::create_dir_all(f.join("domain"))?;
    std::fs::create_dir_all(f.join("mount"))?;
    std::fs::create_dir_all(f.join("namespaces"))?;
    std::fs::write(f.join("domain/stack"), "yes\n")?;
    std::fs::write(f.join("domain/version"), format!("{domain_version}\n"))?;
    std::fs::write(f.join("mount/mask"), "mount umount pivot_root\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeTree;

    fn fake(dir: &std::path::Path, version: &str) {
        FakeTree::new(dir).unwrap();
        write_fake_features(dir, version).unwrap();
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(parse_version("1.2\n"), Some((1, 2)));
        assert_eq!(parse_version("2"), Some((2, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("1.10").unwrap() > parse_version("1.2").unwrap());
        assert!(parse_version("2.0").unwrap() >= STACKING_MIN_VERSION);
        assert!(parse_version("1.1").unwrap() < STACKING_MIN_VERSION);
    }

    #[test]
    fn a_full_kernel_gives_stacked_containers() {
        let d = tempfile::tempdir().unwrap();
        fake(d.path(), "1.2");
        let f = Features::kernel(&Root::new(d.path()));
        assert!(f.available && f.stacking && f.mount);
        assert_eq!(f.container_mode(false), Ok(ContainerMode::Stacked));
        // 2.0 also stacks (a "minor >= 2" check would get this wrong).
        fake(d.path(), "2.0");
        assert!(Features::kernel(&Root::new(d.path())).stacking);
    }

    #[test]
    fn degraded_kernels() {
        let d = tempfile::tempdir().unwrap();
        fake(d.path(), "1.1");
        let root = Root::new(d.path());
        let e = Features::kernel(&root).container_mode(false).unwrap_err();
        assert!(e.contains("cannot stack") && e.contains("1.1"), "{e}");

        fake(d.path(), "1.2");
        let sfs = root.apparmor_dir();
        std::fs::write(sfs.join(".ns_stacked"), "yes\n").unwrap();
        assert_eq!(
            Features::kernel(&root).container_mode(false),
            Ok(ContainerMode::Plain)
        );
        std::fs::write(sfs.join(".ns_stacked"), "no\n").unwrap();

        std::fs::remove_dir_all(sfs.join("features/mount")).unwrap();
        let f = Features::kernel(&root);
        assert!(f
            .container_mode(false)
            .unwrap_err()
            .contains("mount mediation"));
        assert_eq!(f.container_mode(true), Ok(ContainerMode::Stacked));
    }

    #[test]
    fn no_apparmor_is_reported_plainly() {
        let d = tempfile::tempdir().unwrap();
        let f = Features::kernel(&Root::new(d.path()));
        assert!(!f.available);
        let e = f.container_mode(true).unwrap_err();
        assert!(e.starts_with("AppArmor not available: "), "{e}");
        assert!(f.report().starts_with("AppArmor not available: "));
    }

    #[test]
    fn parser_probes_compile_for_real() {
        let p = probe_parser(&Parser::new());
        assert!(p.error.is_none(), "{:?}", p.error);
        assert_eq!(p.probes.len(), PROBES.len());
        let v = p.version.clone().expect("apparmor_parser --version");
        assert!(v.contains("AppArmor parser version"), "{v}");
        // Parser 3.x has no userns rule; 4.x does. Either way the probe's
        // answer must agree with the parser's major version.
        let major: u32 = v
            .rsplit(' ')
            .next()
            .and_then(|x| x.split('.').next())
            .and_then(|x| x.parse().ok())
            .unwrap();
        assert_eq!(p.supports("userns"), major >= 4);
        // A rule that no parser accepts is reported as unsupported.
        assert!(!probe_rule(&Parser::new(), "no_such_rule_kind,").unwrap());
    }
}
