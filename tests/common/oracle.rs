//! The references the differential test compares aa-virt with: Debian 12's
//! `virt-aa-helper` (libvirt 9.0) on the host, and Debian 13's (libvirt
//! 11.3) in the chroot that `scripts/trixie-chroot.sh` builds and caches,
//! whose AppArmor 4.1 `apparmor_parser` also compiles every profile.

use std::path::{Path, PathBuf};
use std::process::Command;

use aa_virt::guest::Guest;
use aa_virt::libvirt::profile::{self, Rendered};
use aa_virt::policy::abi::HostSupport;
use aa_virt::policy::Templates;

/// The reference helper's path (on the host, or inside the chroot).
pub const HELPER: &str = "/usr/lib/libvirt/virt-aa-helper";

/// The chroot script, relative to the crate.
const CHROOT_SCRIPT: &str = "scripts/trixie-chroot.sh";

/// What one dry run printed (stdout and stderr together) and whether it
/// exited 0.
pub struct Output {
    /// Exit status 0.
    pub ok: bool,
    /// The output.
    pub text: String,
}

/// One reference implementation.
pub struct Reference {
    /// `Debian 12, libvirt 9.0.0-4+deb12u2`.
    pub label: String,
    /// The release tag that `tests/deliberate-differences.tsv` may qualify
    /// an entry with (`path@11.3`): `9.0` or `11.3`.
    pub release: String,
    /// The Debian 13 chroot, for the second reference.
    pub root: Option<PathBuf>,
    /// The summary file under `CARGO_TARGET_TMPDIR`.
    pub summary: &'static str,
    /// The release's `apparmor_parser --version`, short (`AppArmor 4.1.0`).
    pub parser: String,
}

fn libvirt_version(root: Option<&Path>) -> String {
    let mut c = match root {
        Some(r) => {
            let mut c = Command::new("chroot");
            c.arg(r).arg("dpkg-query");
            c
        }
        None => Command::new("dpkg-query"),
    };
    let out = c
        .args(["-W", "-f", "${Version}", "libvirt-daemon"])
        .output()
        .expect("run dpkg-query");
    assert!(
        out.status.success(),
        "libvirt-daemon is not installed{} (it provides the reference helper)",
        root.map(|r| format!(" in {}", r.display()))
            .unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `AppArmor 4.1.0` from `apparmor_parser --version`.
fn parser_version(mut c: Command) -> String {
    let out = c
        .arg("--version")
        .output()
        .expect("run apparmor_parser --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .next()
        .unwrap_or("")
        .rsplit(' ')
        .next()
        .unwrap_or("?");
    format!("AppArmor {v}")
}

/// `9.0` from `9.0.0-4+deb12u2`.
pub fn release_of(version: &str) -> String {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

impl Reference {
    /// Debian 12's helper, installed on the host.
    pub fn host() -> Reference {
        assert!(
            Path::new(HELPER).exists(),
            "{HELPER} is missing: install Debian's libvirt-daemon package (scripts/install-deps.sh)"
        );
        let v = libvirt_version(None);
        Reference {
            label: format!("{HELPER} (host, libvirt {v})"),
            release: release_of(&v),
            root: None,
            summary: "differential-summary.txt",
            parser: parser_version(Command::new("apparmor_parser")),
        }
    }

    /// Debian 13's helper in the cached chroot: `AA_VIRT_TRIXIE_ROOT`, or
    /// what `scripts/trixie-chroot.sh --path` names. A missing chroot is a
    /// failure (`make test` builds it first), never a skip.
    pub fn trixie() -> Reference {
        let root = match std::env::var_os("AA_VIRT_TRIXIE_ROOT") {
            Some(r) => PathBuf::from(r),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(CHROOT_SCRIPT);
                let out = Command::new(&script)
                    .arg("--path")
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                assert!(
                    out.status.success(),
                    "the Debian 13 chroot is missing: {} (build it with {CHROOT_SCRIPT}; make test does)",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        assert!(
            root.join(HELPER.trim_start_matches('/')).exists(),
            "{} has no {HELPER} (rebuild it with {CHROOT_SCRIPT})",
            root.display()
        );
        let v = libvirt_version(Some(&root));
        Reference {
            label: format!("{HELPER} (Debian 13 chroot, libvirt {v})"),
            release: release_of(&v),
            summary: "differential-summary-trixie.txt",
            parser: parser_version({
                let mut c = Command::new("chroot");
                c.arg(&root).arg("apparmor_parser");
                c
            }),
            root: Some(root),
        }
    }

    /// What the release's parser supports for profile text: its policy
    /// ABI files (aa-virt renders profiles for each release with that
    /// release's ABI, and compiles them with that release's parser).
    pub fn host_support(&self) -> HostSupport {
        let root = self.root.as_deref().unwrap_or(Path::new("/"));
        HostSupport::from_files(&root.join("etc/apparmor.d"))
    }

    /// Run `virt-aa-helper --dryrun -r -u libvirt-UUID < FILE` for every
    /// file, on `threads` workers, each one shell loop over its share (one
    /// process start per worker instead of one chroot entry per file);
    /// the outputs in input order. Inside the chroot the loop runs with
    /// the host's `/proc`, `/sys` and `/dev` (`scripts/trixie-chroot.sh
    /// run`), so both references see the same devices.
    pub fn run_all(&self, files: &[PathBuf], uuids: &[String], threads: usize) -> Vec<Output> {
        let base = match &self.root {
            Some(r) => r.join("tmp"),
            None => std::env::temp_dir(),
        };
        let scratch = tempfile::Builder::new()
            .prefix("aa-virt-differential.")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("scratch directory in {}: {e}", base.display()));
        let dir = scratch.path();
        std::fs::create_dir_all(dir.join("out")).expect("scratch out/");
        let mut jobs = vec![String::new(); threads];
        for (i, (f, u)) in files.iter().zip(uuids).enumerate() {
            // Copies: the chroot cannot see the corpus (and uniform names
            // keep the shell loop free of quoting questions).
            std::fs::copy(f, dir.join(format!("{i}.xml")))
                .unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
            jobs[i % threads].push_str(&format!("{i} {u}\n"));
        }
        let inside = match &self.root {
            Some(r) => Path::new("/").join(dir.strip_prefix(r).expect("under the root")),
            None => dir.to_path_buf(),
        };
        const LOOP: &str = r#"cd "$1" || exit 125
            while read -r i u; do
                "$2" --dryrun -r -u "libvirt-$u" <"$i.xml" >"out/$i" 2>&1
                echo $? >"out/$i.rc"
            done <"$3""#;
        std::thread::scope(|s| {
            let workers: Vec<_> = jobs
                .iter()
                .enumerate()
                .map(|(w, job)| {
                    let job_file = format!("job.{w}");
                    std::fs::write(dir.join(&job_file), job).expect("write job file");
                    let inside = &inside;
                    s.spawn(move || {
                        let mut c = match &self.root {
                            Some(_) => {
                                let mut c = Command::new(
                                    Path::new(env!("CARGO_MANIFEST_DIR")).join(CHROOT_SCRIPT),
                                );
                                c.args(["run", "/bin/sh"]);
                                c
                            }
                            None => Command::new("/bin/sh"),
                        };
                        let st = c
                            .args(["-c", LOOP, "sh"])
                            .arg(inside)
                            .args([HELPER, &job_file])
                            .status()
                            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.label));
                        assert!(st.success(), "{}: the run loop failed: {st}", self.label);
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("reference worker");
            }
        });
        (0..files.len())
            .map(|i| {
                let read = |name: String| {
                    std::fs::read(dir.join("out").join(&name)).unwrap_or_else(|e| {
                        panic!(
                            "{}: no output {name} for {}: {e}",
                            self.label,
                            files[i].display()
                        )
                    })
                };
                Output {
                    ok: read(format!("{i}.rc")) == b"0\n",
                    text: String::from_utf8_lossy(&read(i.to_string())).into_owned(),
                }
            })
            .collect()
    }

    /// Compile `items` with the chroot's `apparmor_parser` (AppArmor 4.1,
    /// its shipped features file), laid out as installed in a scratch
    /// policy directory inside the chroot; the errors, one per profile the
    /// parser rejects (a failed batch is compiled again profile by profile
    /// to name every culprit). Empty for the host reference, whose parser
    /// the caller runs.
    pub fn compile_in_root(
        &self,
        items: &[(&Guest, &Rendered)],
        templates: &Templates,
    ) -> Vec<String> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let run = |items: &[(&Guest, &Rendered)]| -> Result<(), String> {
            let dir = tempfile::Builder::new()
                .prefix("aa-virt-compile.")
                .tempdir_in(root.join("tmp"))
                .map_err(|e| format!("scratch directory in {}: {e}", root.display()))?;
            let profs =
                profile::lay_out(dir.path(), items, templates).map_err(|e| e.to_string())?;
            let inside =
                |p: &Path| Path::new("/").join(p.strip_prefix(root).expect("under the root"));
            let out = Command::new("chroot")
                .arg(root)
                .args(["apparmor_parser", "-Q", "-K", "--skip-cache", "--quiet"])
                .args([
                    "-M",
                    "/usr/share/apparmor-features/features",
                    "-O",
                    "no-expr-simplify",
                ])
                .arg("-I")
                .arg(inside(dir.path()))
                .args(["-I", "/etc/apparmor.d", "-o", "/dev/null"])
                .args(profs.iter().map(|p| inside(p)))
                .output()
                .map_err(|e| format!("chroot {} apparmor_parser: {e}", root.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        };
        match run(items) {
            Ok(()) => Vec::new(),
            Err(_) => items
                .iter()
                .filter_map(|item| {
                    run(std::slice::from_ref(item))
                        .err()
                        .map(|e| format!("guest {} (AppArmor 4.1): {e}", item.0.name))
                })
                .collect(),
        }
    }
}

#[test]
fn releases_from_debian_versions() {
    assert_eq!(release_of("9.0.0-4+deb12u2"), "9.0");
    assert_eq!(release_of("11.3.0-3+deb13u3"), "11.3");
    assert_eq!(release_of("1:10.0.2+ds-2"), "10.0");
}
