//! The commands `denials`, `explain`, `allow` and `disallow` (wired up in
//! [`super`]): thin layers over `aa_virt::denials`,
//! `aa_virt::policy::explain` and `aa_virt::policy::allow`.

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};

use clap::Args;

use aa_virt::denials::catalog::{Catalog, GuestEntry, Kind};
use aa_virt::denials::fold::{fold, render_text, Filter};
use aa_virt::denials::record::{self, LogChoice, LogSource, Record};
use aa_virt::denials::time;
use aa_virt::guest::Access;
use aa_virt::lxc;
use aa_virt::policy::escape::display_path;
use aa_virt::policy::{allow, explain};

use super::{CliError as CmdError, EXIT_ERROR, EXIT_OK};

/// Where aa-virt's files are (`--root`, else `$AA_VIRT_ROOT`, else `/`).
#[derive(Debug, Clone, Args)]
pub struct RootArg {
    /// Look for aa-virt's policy files and state under DIR instead of /
    /// (default: $AA_VIRT_ROOT, else /).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl RootArg {
    fn path(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(|| {
            std::env::var_os(aa_virt::lxc::ROOT_ENV)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("/"), PathBuf::from)
        })
    }
}

/// `aa-virt denials`.
#[derive(Debug, Args)]
pub struct DenialsArgs {
    /// Only this guest (name, UUID or profile).
    pub guest: Option<String>,
    /// Only records since TIME: 30m, 2h, 1d, @EPOCH, YYYY-MM-DD or "YYYY-MM-DD HH:MM[:SS]" (UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Keep reading: print new records as they arrive (Ctrl-C to stop).
    #[arg(long, conflicts_with = "json")]
    pub follow: bool,
    /// Read this audit or kernel log instead of the default
    /// (/var/log/audit/audit.log, else the journal's kernel and audit
    /// messages, else /var/log/kern.log).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Where aa-virt's files are.
    #[command(flatten)]
    pub root: RootArg,
    /// Print a JSON array (keys: guest, profile, kind, operation, path, requested, denied, count, first, last, device, restricted, noise, message, suggestion).
    #[arg(long)]
    pub json: bool,
    /// Also show records of profiles aa-virt does not manage.
    #[arg(long)]
    pub all: bool,
}

/// `aa-virt explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The guest (name, UUID or profile).
    pub guest: String,
    /// The host path.
    pub path: PathBuf,
    /// The access to explain (letters r, w, a, k, l, m).
    #[arg(long, default_value = "r")]
    pub perms: String,
    /// Where aa-virt's files are.
    #[command(flatten)]
    pub root: RootArg,
}

/// `aa-virt allow`.
#[derive(Debug, Args)]
pub struct AllowArgs {
    /// The guest: a libvirt domain (name or UUID) or an LXC container aa-virt manages.
    pub guest: String,
    /// The host path to allow (vetted like a disk: exact, never a restricted path).
    #[arg(required_unless_present = "list")]
    pub path: Option<PathBuf>,
    /// The permissions (letters r, w, a, k, l).
    #[arg(long, required_unless_present = "list")]
    pub perms: Option<String>,
    /// Why (kept with the allowance and shown as the rule's origin).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// List the guest's allowances instead.
    #[arg(long, conflicts_with_all = ["path", "perms"])]
    pub list: bool,
    /// How the guest is found and the change applied.
    #[command(flatten)]
    pub target: GuestTarget,
}

/// `aa-virt disallow`.
#[derive(Debug, Args)]
pub struct DisallowArgs {
    /// The libvirt guest (name or UUID).
    pub guest: String,
    /// The path of the allowance to remove, as it was given.
    pub path: PathBuf,
    /// How the guest is found and the change applied.
    #[command(flatten)]
    pub target: GuestTarget,
}

/// How `allow` and `disallow` find the guest and apply the change.
#[derive(Debug, Args)]
pub struct GuestTarget {
    /// Where aa-virt's files are.
    #[command(flatten)]
    pub root: RootArg,
    /// libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(short = 'c', long = "connect", value_name = "URI")]
    pub connect: Option<String>,
    /// Store only; do not reload a running guest.
    #[arg(long)]
    pub no_reload: bool,
    /// aa-virt's configuration (used to render the running guest's policy).
    #[arg(long, default_value = aa_virt::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// LXC container directory (default: where aa-virt found the
    /// container, else /var/lib/lxc).
    #[arg(short = 'P', long = "lxcpath", value_name = "DIR")]
    pub lxcpath: Option<PathBuf>,
}

impl GuestTarget {
    fn uri(&self) -> String {
        self.connect.clone().unwrap_or_else(|| {
            std::env::var("LIBVIRT_DEFAULT_URI")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "qemu:///system".into())
        })
    }

    /// The guest: from aa-virt's files, else an LXC container in
    /// `--lxcpath`, else a libvirt domain.
    fn guest(&self, arg: &str) -> Result<Target, CmdError> {
        let root = self.root.path();
        let c = Catalog::scan(&root);
        if let Some(e) = c.find(arg) {
            if e.kind == Kind::Lxc {
                let lxcpath = self.lxcpath.clone().or_else(|| e.lxcpath.clone());
                let lxcpath = lxcpath.unwrap_or_else(|| PathBuf::from(lxc::DEFAULT_LXCPATH));
                return Ok(Target::Lxc(super::lxc::managed(&e.name, &lxcpath)?));
            }
            return Ok(Target::Libvirt(e.name.clone(), e.key.clone()));
        }
        let lxcpath = self
            .lxcpath
            .clone()
            .unwrap_or_else(|| PathBuf::from(lxc::DEFAULT_LXCPATH));
        if self.lxcpath.is_some() || lxcpath.join(arg).join("config").is_file() {
            return Ok(Target::Lxc(super::lxc::managed(arg, &lxcpath)?));
        }
        if root == Path::new("/") {
            let conn = aa_virt::libvirt::conn::Conn::open(&self.uri())?;
            let found = conn.find(arg);
            let _ = conn.close();
            if let Some(d) = found? {
                return Ok(Target::Libvirt(d.name, d.uuid.hyphenated().to_string()));
            }
        }
        Err(format!(
            "no guest {arg}: neither aa-virt's profile files under {}, an LXC container in {} nor libvirt know it",
            root.display(),
            lxcpath.display()
        )
        .into())
    }

    /// Apply a stored change to the running guest, and say what happened.
    fn apply(&self, t: &Target, templates: Option<&Path>) -> Result<(), CmdError> {
        use aa_virt::libvirt::refresh::{refresh, Refreshed};
        let name = t.name();
        if self.no_reload || self.root.path() != Path::new("/") {
            println!("{name}: stored; the guest's next start renders it");
            return Ok(());
        }
        let uuid = match t {
            Target::Lxc(ct) => {
                if super::lxc::reload_if_running(ct, templates)? {
                    println!("{name}: profile rendered and loaded; in force now");
                } else {
                    println!("{name}: not running; its next start renders it");
                }
                return Ok(());
            }
            Target::Libvirt(_, uuid) => uuid,
        };
        match refresh(&self.uri(), uuid, &self.config)? {
            Refreshed::Reloaded(notes) => {
                println!("{name}: policy rendered and loaded; in force now");
                for n in notes {
                    println!("  {n}");
                }
            }
            Refreshed::NotRunning => println!("{name}: not running; its next start renders it"),
            Refreshed::NotFound => {
                println!("{name}: libvirt does not know it; stored for its next start")
            }
        }
        Ok(())
    }

    /// The guest's current policy, when aa-virt can read or render it.
    fn policy(
        &self,
        t: &Target,
        templates: Option<&Path>,
    ) -> Result<Option<explain::Policy>, CmdError> {
        let root = self.root.path();
        match t {
            Target::Lxc(ct) => Ok(Some(super::lxc::rendered_policy(
                ct,
                templates,
                &allow::dir_under(&root),
            )?)),
            Target::Libvirt(_, uuid) => {
                let c = Catalog::scan(&root);
                c.find(uuid)
                    .map(|e| c.policy(e))
                    .transpose()
                    .map_err(Into::into)
            }
        }
    }
}

/// What `allow`, `disallow` and `mode` act on.
pub enum Target {
    /// A libvirt domain: name and UUID (its state's key).
    Libvirt(String, String),
    /// An LXC container aa-virt manages (keyed by its profile name).
    Lxc(lxc::Container),
}

impl Target {
    /// The guest's name.
    pub fn name(&self) -> &str {
        match self {
            Target::Libvirt(n, _) => n,
            Target::Lxc(ct) => &ct.name,
        }
    }

    /// The key of its state (allowances): UUID or profile name.
    pub fn key(&self) -> String {
        match self {
            Target::Libvirt(_, k) => k.clone(),
            Target::Lxc(ct) => ct.names().profile,
        }
    }
}

/// `aa-virt denials`.
pub fn run_denials(a: &DenialsArgs) -> Result<i32, CmdError> {
    let root = a.root.path();
    let catalog = Catalog::scan(&root);
    let guest = match &a.guest {
        Some(g) => Some(find(&catalog, g, &root)?.key.clone()),
        None => None,
    };
    let now = now();
    let since = a
        .since
        .as_deref()
        .map(|s| time::parse_since(s, now))
        .transpose()?;
    let filter = Filter {
        guest,
        since,
        all: a.all,
    };
    let choice = match &a.log {
        Some(f) => LogChoice::File(f.clone()),
        None => LogChoice::Auto,
    };
    let keep = |r: &Record| r.kind == "DENIED" || r.kind == "ALLOWED";
    let summary = record::read(&choice, &root, &keep);
    match (&summary.source, &summary.note) {
        (_, Some(note)) => eprintln!("aa-virt: {note}"),
        (Some(src), None) => tracing::info!("reading {src}"),
        _ => {}
    }
    if summary.source.is_none() && a.log.is_some() {
        return Ok(EXIT_ERROR);
    }
    let out = fold(&summary.kept, &catalog, &filter);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_text(&out));
        if out.is_empty() && !a.follow {
            eprintln!(
                "aa-virt: no denials{}",
                a.guest
                    .as_ref()
                    .map(|g| format!(" for {g}"))
                    .unwrap_or_default()
            );
        }
    }
    if a.follow {
        follow(summary.source.as_ref(), &catalog, &filter)?;
    }
    Ok(EXIT_OK)
}

/// Print each new record of `source` as it arrives.
fn follow(source: Option<&LogSource>, catalog: &Catalog, filter: &Filter) -> Result<(), CmdError> {
    let mut seen = record::Seen::default();
    let mut show = |line: &str| {
        if let Some(r) = record::parse_line(line).filter(|r| seen.first(r)) {
            print!("{}", render_text(&fold(&[r], catalog, filter)));
        }
    };
    match source {
        Some(LogSource::Journal) => {
            let mut child = std::process::Command::new("journalctl")
                .args(["-f", "-n", "0", "-o", "json", "-q", "--no-pager"])
                .args(record::JOURNAL_MATCHES)
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            let out = child.stdout.take().ok_or("journalctl gave no output")?;
            eprintln!("aa-virt: following the journal (Ctrl-C to stop)");
            for line in std::io::BufReader::new(out).lines() {
                show(&line?);
            }
            child.wait()?;
        }
        Some(LogSource::Audit(p) | LogSource::Kernel(p) | LogSource::File(p)) => {
            let mut f = std::io::BufReader::new(std::fs::File::open(p)?);
            f.seek(std::io::SeekFrom::End(0))?;
            // From here on every appended record is shown (scripts and
            // tests wait for this line before they expect any).
            eprintln!("aa-virt: following {} (Ctrl-C to stop)", p.display());
            let mut line = String::new();
            loop {
                // `read_line` appends: half a line (its writer has not
                // finished it) stays in `line` until the rest arrives.
                if f.read_line(&mut line)? == 0 || !line.ends_with('\n') {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    continue;
                }
                show(line.trim_end());
                line.clear();
            }
        }
        None => return Err("no log to follow".into()),
    }
    Ok(())
}

fn find<'a>(c: &'a Catalog, guest: &str, root: &Path) -> Result<&'a GuestEntry, CmdError> {
    c.find(guest).ok_or_else(|| {
        format!(
            "no guest {guest} with an aa-virt profile under {} (a libvirt guest gets one at its first start)",
            root.display()
        )
        .into()
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `aa-virt explain`.
pub fn run_explain(a: &ExplainArgs) -> Result<i32, CmdError> {
    let root = a.root.path();
    let catalog = Catalog::scan(&root);
    let e = find(&catalog, &a.guest, &root)?;
    let want = Access::parse(&a.perms)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| format!("--perms {:?}: use the letters r, w, a, k, l, m", a.perms))?;
    let policy = catalog.policy(e)?;
    // The kernel reports /proc paths with the real pid: `self` here would
    // be this process.
    let resolved = match a.path.starts_with("/proc") {
        true => a.path.clone(),
        false => aa_virt::policy::paths::resolve(&a.path)?,
    };
    let shown = display_path(&resolved);
    if resolved != a.path {
        println!("{} resolves to {shown}", display_path(&a.path));
    }
    let v = policy.explain(resolved.as_os_str().as_encoded_bytes(), want);
    print!("{}", explain_text(e, &shown, want, &v));
    Ok(EXIT_OK)
}

/// The text of an explain verdict.
pub fn explain_text(e: &GuestEntry, path: &str, want: Access, v: &explain::Verdict) -> String {
    let mut s = if v.allowed {
        format!("ALLOWED: {} ({}) may {want} {path}\n", e.name, e.profile)
    } else {
        format!(
            "DENIED: {} ({}) may not {} {path} (granted: {})\n",
            e.name,
            e.profile,
            v.missing,
            if v.granted.is_empty() {
                "nothing".to_string()
            } else {
                v.granted.to_string()
            }
        )
    };
    let kinds = [
        ("allow ", &v.allow, ""),
        ("deny  ", &v.deny, " (a deny rule wins over every allow)"),
        (
            "owner ",
            &v.owner,
            " (only for files the guest's user owns)",
        ),
    ];
    for (word, rules, note) in kinds {
        for r in rules {
            let from = r.source.describe();
            s.push_str(&format!("  {word} {}  <- {from}{note}\n", r.text));
        }
    }
    if v.allow.is_empty() && v.deny.is_empty() {
        s.push_str("  no rule matches this path\n");
    }
    for u in &v.unsure {
        s.push_str(&format!(
            "  unsure {}  <- {}:{} (explain cannot evaluate this rule's path; it might match)\n",
            u.text, u.source.file, u.source.line
        ));
    }
    s
}

/// `aa-virt allow`.
pub fn run_allow(a: &AllowArgs, templates: Option<&Path>) -> Result<i32, CmdError> {
    let t = a.target.guest(&a.guest)?;
    let (name, key) = (t.name(), t.key());
    let dir = allow::dir_under(&a.target.root.path());
    if a.list {
        let items = allow::load(&dir, &key, name)?;
        if items.is_empty() {
            println!("{name}: no allowances");
        }
        for i in items {
            println!(
                "{}  {}  allow: {}  ({})",
                i.path,
                i.perms,
                i.reason,
                time::format(i.date)
            );
        }
        return Ok(EXIT_OK);
    }
    let (Some(path), Some(perms)) = (&a.path, &a.perms) else {
        return Err("allow needs PATH and --perms (or --list)".into());
    };
    // Vetted first (restricted paths, control characters), then checked
    // against the guest's policy: a deny rule there would make it void.
    allow::vet_new(name, path, perms)?;
    if let Some(policy) = a.target.policy(&t, templates)? {
        if let Some(note) = allow::against(&policy, name, path, perms)? {
            println!("{note}");
        }
    }
    let added = allow::add(&dir, &key, name, path, perms, &a.reason)?;
    println!(
        "{name}: allowed {} on {} (allow: {})",
        added.perms, added.path, added.reason
    );
    a.target.apply(&t, templates)?;
    Ok(EXIT_OK)
}

/// `aa-virt disallow`.
pub fn run_disallow(a: &DisallowArgs, templates: Option<&Path>) -> Result<i32, CmdError> {
    let t = a.target.guest(&a.guest)?;
    let (name, key) = (t.name(), t.key());
    let dir = allow::dir_under(&a.target.root.path());
    let text = a
        .path
        .to_str()
        .ok_or_else(|| format!("{}: not valid UTF-8", display_path(&a.path)))?;
    if !allow::remove(&dir, &key, name, text)? {
        return Err(
            format!("{name}: no allowance for {text} (see aa-virt allow {name} --list)").into(),
        );
    }
    println!("{name}: allowance for {text} removed");
    a.target.apply(&t, templates)?;
    Ok(EXIT_OK)
}

/// A guest's persistent mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Log what the profile would deny (ALLOWED records), deny nothing.
    Complain,
    /// Deny what the profile does not grant.
    Enforce,
}

/// `aa-virt mode`.
#[derive(Debug, Args)]
pub struct ModeArgs {
    /// The libvirt guest (name or UUID).
    pub guest: String,
    /// The mode, kept across restarts (it wins over the configuration's complain list).
    #[arg(value_enum)]
    pub mode: ModeArg,
    /// How the guest is found and the change applied.
    #[command(flatten)]
    pub target: GuestTarget,
}

/// `aa-virt mode`.
pub fn run_mode(a: &ModeArgs) -> Result<i32, CmdError> {
    use aa_virt::libvirt::{mode, profile::Layout};
    use aa_virt::reload::{self, ReloadOptions, ReloadOutcome as Outcome};
    let (name, uuid) = match a.target.guest(&a.guest)? {
        Target::Libvirt(n, u) => (n, u),
        Target::Lxc(ct) => {
            return Err(format!(
                "{}: aa-virt mode is for libvirt guests; a container's profile is always enforced",
                ct.name
            )
            .into())
        }
    };
    let root = a.target.root.path();
    let complain = a.mode == ModeArg::Complain;
    allow::set_mode(&allow::dir_under(&root), &uuid, &name, Some(complain))?;
    let word = if complain { "complain" } else { "enforce" };
    let profile = aa_virt::libvirt::naming::profile_name(&uuid::Uuid::parse_str(&uuid)?);
    let changed = mode::apply(&Layout::under(&root), &profile, complain)?;
    println!(
        "{name}: {word} mode stored (kept across restarts){}",
        if changed {
            "; profile file updated"
        } else {
            ""
        }
    );
    if a.target.no_reload || root != Path::new("/") {
        return Ok(EXIT_OK);
    }
    let config = aa_virt::config::Config::load(&a.target.config)?;
    let targets = super::Targets {
        connect: vec![a.target.uri()],
        lxcpath: Vec::new(),
        log: None,
        no_denials: true,
        root: None,
        config: a.target.config.clone(),
    };
    let mut list = targets.options();
    list.layout.cache_dir = config.cache_dir.clone();
    let opts = ReloadOptions {
        list,
        parser: config.parser(),
        dry_run: false,
    };
    let rep = reload::reload(&opts, std::slice::from_ref(&profile))?;
    for (_, o) in &rep.done {
        match o {
            Outcome::Reloaded => println!("{name}: reloaded; {word} mode in force now"),
            Outcome::NotLoaded | Outcome::WouldReload => {
                println!("{name}: not running; its next start uses {word} mode")
            }
            Outcome::Failed(e) => return Err(e.to_string().into()),
        }
    }
    if rep.done.is_empty() {
        println!("{name}: not running; its next start uses {word} mode");
    }
    Ok(EXIT_OK)
}
