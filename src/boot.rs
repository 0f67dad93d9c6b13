//! `aa-virt boot-load`: at boot, before libvirt starts, load every managed
//! libvirt guest's policy from the files on disk (compiled-policy cache
//! when it is current), so autostarted guests find their profile in the
//! kernel (`apparmor.service` loads only the top of `/etc/apparmor.d`, not
//! `libvirt/`). Each guest is loaded on its own, under its lock: one whose
//! policy fails is reported and never stops the others. For each, the log
//! says whether the cache could be used or it was compiled, and how long
//! it took. Guests are loaded on as many threads as the host has CPUs: after
//! an upgrade every cache is stale, and a boot must not wait for hundreds
//! of compiles one after the other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::apparmor::{install_profile, Kernel, LoadError, LoadWhen, Parser};
use crate::libvirt::naming;
use crate::libvirt::profile::{made_by_aa_virt, Layout};
use crate::store::{self, Txn};

/// Where the policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cache was current (its record matches the files on disk) and
    /// its policy was loaded without compiling.
    Cache,
    /// Compiled afresh (no cache, or one made from other files).
    Compiled,
}

/// One guest's load at boot.
#[derive(Debug)]
pub struct Loaded {
    /// The profile name.
    pub profile: String,
    /// Its file.
    pub path: PathBuf,
    /// Cache or compile, or why it failed (the kernel has no policy for
    /// it; the guest will not start confined until it is fixed).
    pub result: Result<Source, LoadError>,
    /// How long the load took.
    pub took: Duration,
}

/// Load every `libvirt-<uuid>` profile file of `layout`, on up to `jobs`
/// threads (at least one); the result is in name order.
pub fn load_all(
    layout: &Layout,
    base: &Parser,
    kernel: &(dyn Kernel + Sync),
    jobs: usize,
) -> Vec<Loaded> {
    let parser = layout.parser(base);
    let parser = &parser;
    let mut names: Vec<String> = std::fs::read_dir(layout.libvirt_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| naming::parse_profile_name(n).is_some())
        .filter(|n| made_by_aa_virt(&layout.profile_path(n)))
        .collect();
    names.sort();
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Loaded>>> = names.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(profile) = names.get(i) else { break };
        let path = layout.profile_path(profile);
        let start = Instant::now();
        let result = load_one(layout, parser, kernel, profile, &path);
        let done = Loaded {
            profile: profile.clone(),
            path,
            result,
            took: start.elapsed(),
        };
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
    };
    std::thread::scope(|s| {
        for _ in 1..jobs.clamp(1, names.len().max(1)) {
            s.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// How many guests to load at once: one per CPU.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn load_one(
    layout: &Layout,
    parser: &Parser,
    kernel: &dyn Kernel,
    profile: &str,
    path: &Path,
) -> Result<Source, LoadError> {
    let _lock = store::lock(&layout.lock_dir, profile)?;
    let mut txn = Txn::new();
    let installed = install_profile(
        kernel,
        parser,
        &mut txn,
        profile,
        path,
        &[],
        LoadWhen::Always,
    )?;
    txn.commit();
    Ok(if installed.from_cache {
        Source::Cache
    } else {
        Source::Compiled
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeKernel;

    #[test]
    fn one_broken_guest_never_stops_the_others() {
        let d = tempfile::tempdir().unwrap();
        let k = FakeKernel::create(&d.path().join("fs")).unwrap();
        let layout = Layout::under(d.path());
        std::fs::create_dir_all(layout.libvirt_dir()).unwrap();
        let names = [
            "libvirt-00000000-0000-4000-8000-000000000001",
            "libvirt-00000000-0000-4000-8000-000000000002",
            "libvirt-00000000-0000-4000-8000-000000000003",
        ];
        for (i, n) in names.iter().enumerate() {
            let rule = if i == 1 { "/a bogus," } else { "/a r," };
            std::fs::write(
                layout.profile_path(n),
                format!("# <abstractions/aa-virt-qemu> stands in\nprofile {n} {{\n  {rule}\n}}\n"),
            )
            .unwrap();
        }
        // Not a profile aa-virt writes: left alone. Nor is one libvirt's own
        // helper wrote (its .files is gone once the guest stopped).
        std::fs::write(layout.libvirt_dir().join("notes.txt"), "x").unwrap();
        std::fs::write(
            layout.profile_path("libvirt-00000000-0000-4000-8000-000000000009"),
            "profile libvirt-00000000-0000-4000-8000-000000000009 {\n  #include <libvirt/libvirt-00000000-0000-4000-8000-000000000009.files>\n}\n",
        )
        .unwrap();
        // Three threads: the failure in the middle stops neither neighbour,
        // and the result keeps name order.
        let done = load_all(&layout, &Parser::new(), &k, 3);
        assert_eq!(done.len(), 3);
        let order: Vec<&str> = done.iter().map(|l| l.profile.as_str()).collect();
        assert_eq!(order, names);
        assert!(done[0].result.is_ok() && done[2].result.is_ok());
        assert!(matches!(done[1].result, Err(LoadError::Parser(_))));
        assert_eq!(k.loads(), 3);
        assert!(k.profile_mode(names[0]).unwrap().is_some());
        assert!(k.profile_mode(names[1]).unwrap().is_none());
        assert!(k.profile_mode(names[2]).unwrap().is_some());
        assert!(done.iter().all(|l| !matches!(l.result, Ok(Source::Cache))));
        // A cache whose record matches the files is used; a changed file
        // is compiled again.
        let p = layout.parser(&Parser::new());
        let rec = layout.cache_dir.join(crate::apparmor::parser::INPUTS_DIR);
        std::fs::create_dir_all(&rec).unwrap();
        let digest = p.inputs_digest(&layout.profile_path(names[0])).unwrap();
        std::fs::write(rec.join(names[0]), digest).unwrap();
        let done = load_all(&layout, &Parser::new(), &k, 1);
        assert!(matches!(done[0].result, Ok(Source::Cache)));
        assert!(matches!(done[2].result, Ok(Source::Compiled)));
        std::fs::write(
            layout.profile_path(names[0]),
            format!(
                "# <abstractions/aa-virt-qemu>\nprofile {} {{\n  /b r,\n}}\n",
                names[0]
            ),
        )
        .unwrap();
        let done = load_all(&layout, &Parser::new(), &k, 1);
        assert!(matches!(done[0].result, Ok(Source::Compiled)));
    }
}
