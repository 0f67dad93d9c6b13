//! The steps of one `install` run (see [`super::install`]): write the
//! files, include aa-virt's snippet in the daemons' local files, prove the
//! policy, switch libvirt's helper, record the manifest.

use std::path::{Path, PathBuf};

use super::{
    block, digest, divert, load_error, load_manifest, read_opt, InstallError, Item, Manifest,
    Options, Report, DAEMONS, MANIFEST_PATH, PROFILE_NAME, PROFILE_PATH,
};
use crate::apparmor::{install_profile, Kernel, KernelStatus, LoadWhen, Parser};
use crate::store::Txn;

/// Why install no longer wants a file it may have written before.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retire {
    /// Said when the unchanged copy is removed.
    pub(super) removed: &'static str,
    /// Said when it is kept: edited since aa-virt wrote it, or not aa-virt's.
    pub(super) kept: &'static str,
}

/// Helper mode has no hook.
pub(super) const RETIRE_HOOK: Retire = Retire {
    removed: "helper mode: libvirt runs aa-virt as its helper instead",
    kept: "libvirt runs it as well as the helper, remove it yourself if you no longer need it",
};

/// The Debian package ships the boot unit and the daemons' drop-ins under
/// /lib/systemd/system; a second copy in /etc would override the package's
/// and stay behind at its upgrades.
pub(super) const RETIRE_BOOT: Retire = Retire {
    removed: "the aa-virt package ships it under /lib/systemd/system",
    kept: "it overrides the aa-virt package's copy under /lib/systemd/system; remove it yourself unless you mean to",
};

/// One `install` run: the manifests before and after, the report, and the
/// transaction every step writes through.
pub(super) struct Run<'a> {
    o: &'a Options,
    /// What the last install recorded.
    pub(super) old: Manifest,
    /// What this one will record.
    new: Manifest,
    rep: Report,
    txn: Txn,
    /// Daemons whose profile needs reloading (their local files changed).
    touched_daemons: Vec<&'static str>,
    /// aa-virt's own profile file changed.
    profile_changed: bool,
    /// libvirt's helper was diverted or restored.
    helper_changed: bool,
}

impl<'a> Run<'a> {
    /// Read the last install's manifest.
    pub(super) fn start(o: &'a Options) -> Result<Run<'a>, InstallError> {
        Ok(Run {
            o,
            old: load_manifest(o)?.unwrap_or_default(),
            new: Manifest {
                mode: o.mode,
                ..Manifest::default()
            },
            rep: Report::default(),
            txn: Txn::new(),
            touched_daemons: Vec::new(),
            profile_changed: false,
            helper_changed: false,
        })
    }

    /// Write every file the mode needs, leaving alone those edited since
    /// aa-virt wrote them (and files that are the admin's to edit).
    pub(super) fn write_files(&mut self, items: Vec<Item>) -> Result<(), InstallError> {
        let o = self.o;
        for it in items {
            let shown = o.show(&it.path);
            let want = it.content.as_bytes();
            let recorded = self.old.files.get(&shown).cloned();
            if let Some(why) = it.retire {
                self.retire(&it.path, &shown, recorded, why)?;
                continue;
            }
            match read_opt(&it.path)? {
                None => {
                    self.txn.create_once(&it.path, want, it.mode)?;
                    self.new.files.insert(shown.clone(), digest(want));
                    self.rep.say(true, format!("created   {shown}"));
                }
                Some(cur) if cur == want => {
                    // Recorded only when aa-virt put it there: a file that was
                    // already present (a package's copy, say) is not ours to
                    // remove on uninstall.
                    if let Some(h) = recorded {
                        self.new.files.insert(shown.clone(), h);
                        self.rep.say(false, format!("unchanged {shown}"));
                    } else {
                        self.rep.say(
                            false,
                            format!("unchanged {shown} (already present; not aa-virt install's)"),
                        );
                    }
                    continue;
                }
                Some(_) if it.create_only => {
                    if let Some(h) = recorded {
                        self.new.files.insert(shown.clone(), h);
                    }
                    self.rep
                        .say(false, format!("kept      {shown} (exists; yours to edit)"));
                    continue;
                }
                Some(cur) if recorded.as_deref() == Some(digest(&cur).as_str()) => {
                    self.txn.write_if_changed(&it.path, want, it.mode)?;
                    self.new.files.insert(shown.clone(), digest(want));
                    self.rep.say(true, format!("updated   {shown}"));
                }
                Some(_) => {
                    if let Some(h) = recorded {
                        self.new.files.insert(shown.clone(), h);
                    }
                    self.rep.say(
                        false,
                        format!(
                            "kept      {shown}: differs from what aa-virt installs and was edited (or not written by aa-virt); left alone"
                        ),
                    );
                    continue;
                }
            }
            if it.path == o.at(PROFILE_PATH) {
                self.profile_changed = true;
            }
            for d in DAEMONS {
                if it.path == o.at(&format!("etc/apparmor.d/local/{d}.aa-virt")) {
                    self.touched_daemons.push(d);
                }
            }
        }
        Ok(())
    }

    /// A file this setup does not want (helper mode's hook, the boot unit
    /// the package ships): remove the copy an earlier install wrote, when
    /// it is unchanged; keep (and report) an edited one or one that is not
    /// aa-virt's.
    fn retire(
        &mut self,
        path: &Path,
        shown: &str,
        recorded: Option<String>,
        why: Retire,
    ) -> Result<(), InstallError> {
        let Some(cur) = read_opt(path)? else {
            return Ok(());
        };
        if recorded.as_deref() == Some(digest(&cur).as_str()) {
            self.txn.remove(path)?;
            self.rep
                .say(true, format!("removed   {shown} ({})", why.removed));
            return Ok(());
        }
        if let Some(h) = recorded {
            self.new.files.insert(shown.to_string(), h);
        }
        self.rep.say(
            false,
            format!(
                "kept      {shown}: edited since aa-virt installed it (or not aa-virt's); {}",
                why.kept
            ),
        );
        Ok(())
    }

    /// The include block in each daemon's local file.
    pub(super) fn include_in_daemons(&mut self) -> Result<(), InstallError> {
        let o = self.o;
        for d in DAEMONS {
            if !o.at(&format!("etc/apparmor.d/{d}")).exists() {
                continue;
            }
            let local = o.at(&format!("etc/apparmor.d/local/{d}"));
            let shown = o.show(&local);
            let cur = read_opt(&local)?.unwrap_or_default();
            let text = String::from_utf8_lossy(&cur).into_owned();
            self.new.includes.push(shown.clone());
            if text.contains(&block(d)) {
                self.rep.say(
                    false,
                    format!("unchanged {shown} (includes local/{d}.aa-virt)"),
                );
                continue;
            }
            let mut t = text;
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(&block(d));
            self.txn.write_if_changed(&local, t.as_bytes(), 0o644)?;
            self.rep.say(
                true,
                format!("updated   {shown} (includes local/{d}.aa-virt)"),
            );
            if !self.touched_daemons.contains(d) {
                self.touched_daemons.push(d);
            }
        }
        Ok(())
    }

    /// Prove the policy: load it on a live host with AppArmor; otherwise
    /// compile it. Either failure restores every file.
    pub(super) fn prove_policy(
        &mut self,
        parser: &Parser,
        kernel: &dyn Kernel,
    ) -> Result<(), InstallError> {
        let o = self.o;
        let mut p = parser.clone();
        if !o.is_live() {
            p.includes.insert(0, o.at("etc/apparmor.d"));
            p.includes.push(PathBuf::from("/etc/apparmor.d"));
        }
        let mut targets = vec![(PROFILE_NAME, o.at(PROFILE_PATH), self.profile_changed)];
        for d in DAEMONS {
            if o.at(&format!("etc/apparmor.d/{d}")).exists() {
                targets.push((
                    d,
                    o.at(&format!("etc/apparmor.d/{d}")),
                    self.touched_daemons.contains(d),
                ));
            }
        }
        match (o.is_live(), kernel.status()) {
            (true, KernelStatus::Available { .. }) => {
                for (what, path, changed) in &targets {
                    let when = match (*changed, *what == PROFILE_NAME) {
                        (true, _) => LoadWhen::Always,
                        (false, true) => LoadWhen::ChangedOrNotLoaded,
                        (false, false) => continue,
                    };
                    let done = install_profile(kernel, &p, &mut self.txn, what, path, &[], when)
                        .map_err(|e| load_error(o, path, e))?;
                    if done.loaded {
                        self.rep
                            .say(true, format!("loaded    {} into the kernel", o.show(path)));
                    }
                }
            }
            (live, k) => {
                for (_, path, _) in &targets {
                    p.check(path).map_err(|source| InstallError::Policy {
                        what: o.show(path),
                        source,
                    })?;
                    self.rep.say(false, format!("compiles  {}", o.show(path)));
                }
                if live {
                    if let KernelStatus::Unavailable(r) = k {
                        self.rep.say(
                            false,
                            format!("note: nothing loaded: {r}; with fail = \"closed\" (the default) the hook refuses to start guests on this host"),
                        );
                    }
                } else {
                    self.rep
                        .say(false, "note: --root: nothing loaded into the kernel".into());
                }
            }
        }
        Ok(())
    }

    /// Divert libvirt's helper (helper mode) or undo a diversion (hook
    /// mode): the last step, once the policy is in force, so that if it
    /// fails every file is restored. Returns a diversion made now.
    pub(super) fn switch_helper(
        &mut self,
        plan: Option<&divert::Plan>,
    ) -> Result<Option<divert::Diversion>, InstallError> {
        let o = self.o;
        let mut diverted_now = None;
        if let Some(plan) = plan {
            let (d, changed) = divert::apply(o, plan, &mut self.rep)?;
            if changed {
                diverted_now = Some(d.clone());
            }
            self.helper_changed = changed;
            self.new.diversion = Some(d);
        } else if let Some(d) = &self.old.diversion {
            match divert::undo(o, d, &mut self.rep)? {
                divert::Undo::Nothing => {}
                divert::Undo::Done => self.helper_changed = true,
                divert::Undo::Blocked => self.new.diversion = Some(d.clone()),
            }
        }
        Ok(diverted_now)
    }

    /// Record what was installed; a diversion made now is undone when the
    /// manifest cannot be written.
    pub(super) fn write_manifest(
        &mut self,
        diverted_now: Option<&divert::Diversion>,
    ) -> Result<(), InstallError> {
        let o = self.o;
        let written = serde_json::to_vec_pretty(&self.new)
            .map_err(|e| InstallError::Manifest {
                path: o.at(MANIFEST_PATH),
                message: e.to_string(),
            })
            .and_then(|m| Ok(self.txn.write_if_changed(&o.at(MANIFEST_PATH), &m, 0o644)?));
        if let Err(e) = written {
            if let Some(d) = diverted_now {
                let _ = divert::undo(o, d, &mut Report::default());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Keep every file written, and say when libvirt must be restarted.
    pub(super) fn finish(self) -> Report {
        let mut rep = self.rep;
        self.txn.commit();
        if self.helper_changed
            || rep
                .lines
                .iter()
                .any(|l| l.starts_with("created") && l.contains("hooks/qemu.d"))
        {
            rep.say(
                false,
                "note: restart libvirtd (or virtqemud) so that it finds the new hook or helper"
                    .into(),
            );
        }
        rep
    }
}
