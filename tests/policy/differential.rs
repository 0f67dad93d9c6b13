//! Differential test against Debian's `virt-aa-helper --dryrun`, the
//! reference implementation, over every domain XML in the shared corpus:
//! Debian 12's (libvirt 9.0) on the host, and Debian 13's (libvirt 11.3)
//! in the cached chroot of `scripts/trixie-chroot.sh` (see `oracle/`).
//!
//! For every XML the reference accepts, each path it grants must be granted
//! by aa-virt too, with at least the same access — unless the difference is
//! deliberate and listed, with its reason, in `tests/deliberate-differences.tsv`.
//! A path counts as granted when the guest's generated rules grant it, or
//! when a file rule of one of aa-virt's own abstractions that the guest's
//! profile or `.files` includes does (`abstractions/aa-virt-qemu` for every
//! guest, `abstractions/aa-virt-qemu-gl` for guests that use GL).
//! Where the reference accepts an XML that aa-virt refuses, the refusal must
//! be listed there as well. Every profile aa-virt renders is compiled with
//! the real `apparmor_parser`: the host's (AppArmor 3.0) against both
//! references, and the chroot's (AppArmor 4.1) against Debian 13's.
//!
//! Needs the corpus (`AA_VIRT_CORPUS`, default `../shared/corpus/libvirt`
//! beside the crate), `/usr/lib/libvirt/virt-aa-helper` (Debian package
//! `libvirt-daemon`) and the chroot; it fails, never skips, when one is
//! missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aa_virt::apparmor::Parser;
use aa_virt::guest::{Access, Guest};
use aa_virt::libvirt::profile::{self, Rendered};
use aa_virt::libvirt::{self, ReadOptions};
use aa_virt::policy::abi::{self, ProfileKind};
use aa_virt::policy::template::ABSTRACTIONS;
use aa_virt::policy::{Pattern, Templates};

use crate::common::oracle::{self, Reference};
const THREADS: usize = 2;
const BATCH: usize = 40;

fn corpus_dir() -> PathBuf {
    std::env::var_os("AA_VIRT_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/libvirt"))
}

fn xml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read corpus directory {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            xml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "xml") {
            out.push(p);
        }
    }
}

/// One rule the reference printed: `  "PATH" PERMS,`.
#[derive(Debug, Clone)]
struct RefRule {
    path: String,
    perms: String,
}

#[derive(Debug)]
struct RefRun {
    ok: bool,
    rules: Vec<RefRule>,
}

fn uuid_of(xml: &str) -> String {
    xml.split_once("<uuid>")
        .and_then(|(_, r)| r.split_once("</uuid>"))
        .map(|(u, _)| u.trim().to_string())
        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())
}

/// The rules in one dry run's output (the helper prints them on stderr).
fn parse_reference(out: &oracle::Output) -> RefRun {
    let mut rules = Vec::new();
    for l in out.text.lines() {
        let Some(rest) = l.strip_prefix("  \"") else {
            continue; // comments, deny rules, messages
        };
        let Some((path, tail)) = rest.rsplit_once("\" ") else {
            continue;
        };
        let perms = tail.trim_end_matches(',').trim();
        rules.push(RefRule {
            path: path.to_string(),
            perms: perms.to_string(),
        });
    }
    RefRun { ok: out.ok, rules }
}

/// A pattern from the differences file: `*` matches anything (`/` too, and
/// nothing at all), every other byte itself. (Not AppArmor's `**`, which
/// as a whole path component matches at least one byte.)
fn simple_match(pat: &str, s: &str) -> bool {
    let (pat, s) = (pat.as_bytes(), s.as_bytes());
    // ok[j]: the pattern so far matches s[..j].
    let mut ok = vec![false; s.len() + 1];
    ok[0] = true;
    for &c in pat {
        let mut next = vec![false; s.len() + 1];
        for j in 0..=s.len() {
            next[j] = if c == b'*' {
                ok[j] || (j > 0 && next[j - 1])
            } else {
                j > 0 && ok[j - 1] && s[j - 1] == c
            };
        }
        ok = next;
    }
    ok[s.len()]
}

/// The reference writes an inactive domain's id as `-1` in its per-domain
/// runtime paths (`domain--1-NAME`, `swtpm/-1-NAME-swtpm.sock`); libvirt
/// never gives a running domain that id. The same path for a real id (1),
/// which aa-virt's rules for an unknown id must cover.
fn with_real_id(path: &str) -> Option<String> {
    let p = path
        .replacen("/domain--1-", "/domain-1-", 1)
        .replacen("/-1-", "/1-", 1);
    (p != path).then_some(p)
}

/// The plain file rules (`PATH PERMS,`, PATH absolute) of each of
/// aa-virt's abstractions, by include name (`abstractions/aa-virt-qemu`).
/// `owner`, `deny` and `audit` rules, variables such as `@{PROC}` and
/// non-file rules are left out, so this can only under-count what an
/// abstraction grants. Brace alternations are kept as literal text, as the
/// reference's own paths are matched (a reference rule is covered by an
/// abstraction rule whose text matches it).
fn abstraction_rules(templates: &Templates) -> BTreeMap<&'static str, Vec<(Pattern, Access)>> {
    ABSTRACTIONS
        .iter()
        .map(|(rel, _)| {
            let text = templates
                .abstraction(rel)
                .unwrap_or_else(|e| panic!("{rel}: {e}"));
            let rules = text
                .lines()
                .filter_map(|l| {
                    let l = l.trim().strip_suffix(',')?;
                    let (path, perms) = l.split_once(char::is_whitespace)?;
                    if !path.starts_with('/') {
                        return None;
                    }
                    let perms: String = perms
                        .trim()
                        .chars()
                        .filter(|c| "mrwalk".contains(*c))
                        .collect();
                    Some((glob_text(path), Access::parse(&perms)?))
                })
                .collect::<Vec<_>>();
            assert!(!rules.is_empty(), "no file rules read from {rel}");
            (*rel, rules)
        })
        .collect()
}

/// A rule path as written in an abstraction, with AppArmor's `*`, `**` and
/// `?` as globs and every other character (braces, brackets, `@{...}`)
/// literal, matching the way the reference's paths are compared.
fn glob_text(path: &str) -> Pattern {
    let mut p = Pattern::literal(Vec::new());
    let mut rest = path;
    while let Some(i) = rest.find(['*', '?']) {
        p = p.lit(&rest[..i]);
        let g = if rest[i..].starts_with("**") {
            "**"
        } else if rest[i..].starts_with('*') {
            "*"
        } else {
            "?"
        };
        p = p.glob(g);
        rest = &rest[i + g.len()..];
    }
    p.lit(rest)
}

/// The abstractions a profile text includes (`#include <X>`, `include <X>`,
/// `include if exists <X>`).
fn includes(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix('#').unwrap_or(l).strip_prefix("include")?;
            let l = l.trim_start().strip_prefix("if exists").unwrap_or(l);
            l.trim().strip_prefix('<')?.strip_suffix('>')
        })
        .collect()
}

#[derive(Debug)]
struct Difference {
    kind: String,
    pattern: String,
    reason: String,
    used: AtomicUsize,
}

/// The differences that apply to `release` (`9.0`): every `path` and
/// `refuse` entry, and those qualified with this release (`path@9.0`).
fn load_differences(release: &str) -> Vec<Difference> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deliberate-differences.tsv");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    let mut v = Vec::new();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        let (kind, only) = f[0]
            .split_once('@')
            .map_or((f[0], None), |(k, r)| (k, Some(r)));
        assert!(
            f.len() == 3 && matches!(kind, "path" | "refuse") && !f[2].trim().is_empty(),
            "{}:{}: want `path|refuse[@RELEASE]<TAB>pattern<TAB>reason`, got {l:?}",
            p.display(),
            n + 1
        );
        if only.is_some_and(|r| r != release) {
            continue;
        }
        v.push(Difference {
            kind: kind.into(),
            pattern: f[1].into(),
            reason: f[2].into(),
            used: AtomicUsize::new(0),
        });
    }
    v
}

fn find_difference<'a>(d: &'a [Difference], kind: &str, s: &str) -> Option<&'a Difference> {
    let hit = d
        .iter()
        .find(|x| x.kind == kind && simple_match(&x.pattern, s))?;
    hit.used.fetch_add(1, Ordering::Relaxed);
    Some(hit)
}

/// Run `f` over `0..n` on [`THREADS`] threads; results in input order.
fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push((i, f(i)));
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker")).collect()
    });
    let mut all: Vec<(usize, T)> = parts.drain(..).flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

#[test]
fn covers_every_path_debian_12s_virt_aa_helper_grants() {
    differential(Reference::host());
}

#[test]
fn covers_every_path_debian_13s_virt_aa_helper_grants() {
    differential(Reference::trixie());
}

fn differential(reference: Reference) {
    let corpus = corpus_dir();
    assert!(
        corpus.is_dir(),
        "the libvirt corpus is missing at {} (set AA_VIRT_CORPUS; CI clones shared/ beside the repo)",
        corpus.display()
    );
    let mut files = Vec::new();
    xml_files(&corpus, &mut files);
    assert!(!files.is_empty(), "no XML files under {}", corpus.display());
    let diffs = load_differences(&reference.release);
    // Rendered for the reference's release: its parser's policy ABI.
    let templates = Templates::load(None)
        .expect("built-in templates")
        .with_host(reference.host_support());
    let abstractions = abstraction_rules(&templates);
    let rel = |p: &Path| p.strip_prefix(&corpus).unwrap_or(p).display().to_string();

    let t0 = Instant::now();
    let xmls: Vec<Option<String>> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let uuids: Vec<String> = xmls
        .iter()
        .map(|x| uuid_of(x.as_deref().unwrap_or("")))
        .collect();
    let refs: Vec<RefRun> = reference
        .run_all(&files, &uuids, THREADS)
        .iter()
        .map(parse_reference)
        .collect();
    let t_ref = t0.elapsed();

    // Our side, through the library: corpus images do not exist here, so
    // chains come from the XML only (the reference's own probing finds
    // nothing either); header probing is tested with real images elsewhere.
    let t1 = Instant::now();
    let opts = ReadOptions {
        probe_chains: false,
        ..ReadOptions::default()
    };
    let ours: Vec<Result<(Guest, Rendered), String>> = xmls
        .iter()
        .map(|x| {
            let x = x.as_deref().ok_or("not UTF-8")?;
            let g = libvirt::parse(x, &opts).map_err(|e| e.to_string())?;
            let r = profile::render(&g, &templates, false).map_err(|e| e.to_string())?;
            Ok((g, r))
        })
        .collect();
    let t_ours = t1.elapsed();

    let (mut accepted, mut covered, mut deliberate, mut refused_listed) = (0, 0, 0, 0);
    // Of `covered`: reference paths for id -1 that aa-virt grants for id 1.
    let mut covered_for_an_id = 0;
    let mut by_abstraction: BTreeMap<&str, usize> = BTreeMap::new();
    let mut missing: Vec<String> = Vec::new();
    let mut unexplained: Vec<String> = Vec::new();
    let mut per_reason: BTreeMap<String, usize> = BTreeMap::new();
    for ((path, r), o) in files.iter().zip(&refs).zip(&ours) {
        if !r.ok {
            continue;
        }
        accepted += 1;
        let rendered = match o {
            Ok((_, rendered)) => rendered,
            Err(e) => match find_difference(&diffs, "refuse", e) {
                Some(d) => {
                    refused_listed += 1;
                    *per_reason.entry(d.reason.clone()).or_default() += 1;
                    continue;
                }
                None => {
                    unexplained.push(format!("{}: {e}", rel(path)));
                    continue;
                }
            },
        };
        let rules = rendered.rules.rules();
        let included: Vec<(&str, &Vec<(Pattern, Access)>)> = includes(&rendered.profile)
            .into_iter()
            .chain(includes(&rendered.files))
            .filter_map(|i| abstractions.get_key_value(i).map(|(k, v)| (*k, v)))
            .collect();
        for rr in &r.rules {
            let want = Access::parse(&rr.perms)
                .unwrap_or_else(|| panic!("reference permissions {:?}", rr.perms));
            // AppArmor unions every rule that matches; the reference's
            // path is matched as a literal string (its own globs included).
            let granted = |p: &str| {
                rules
                    .iter()
                    .filter(|x| x.pattern.matches(p.as_bytes()))
                    .fold(Access::default(), |a, x| a.union(x.access))
            };
            let mut have = granted(&rr.path);
            if !have.covers(want) {
                if let Some(p) = with_real_id(&rr.path) {
                    have = granted(&p);
                    if have.covers(want) {
                        covered_for_an_id += 1;
                    }
                }
            }
            let from_abstraction = || {
                included.iter().find(|(_, rules)| {
                    rules
                        .iter()
                        .filter(|(p, _)| p.matches(rr.path.as_bytes()))
                        .fold(have, |a, (_, acc)| a.union(*acc))
                        .covers(want)
                })
            };
            if have.covers(want) {
                covered += 1;
            } else if let Some((name, _)) = from_abstraction() {
                covered += 1;
                *by_abstraction.entry(name).or_default() += 1;
            } else if let Some(d) = find_difference(&diffs, "path", &rr.path) {
                deliberate += 1;
                *per_reason.entry(d.reason.clone()).or_default() += 1;
            } else {
                missing.push(format!(
                    "{}: \"{}\" {} (aa-virt grants: {})",
                    rel(path),
                    rr.path,
                    rr.perms,
                    if have.is_empty() {
                        "nothing".to_string()
                    } else {
                        have.to_string()
                    }
                ));
            }
        }
    }

    // Every profile we render compiles with the real parser, in batches
    // (profile names must be unique within a batch; corpus UUIDs repeat).
    let t2 = Instant::now();
    // Identical texts (same name, profile and rules: corpus variants that
    // differ only in ways that add no path) are compiled once.
    let mut seen = std::collections::HashSet::new();
    let produced = ours.iter().filter(|o| o.is_ok()).count();
    let rendered: Vec<(&Guest, &Rendered)> = ours
        .iter()
        .filter_map(|o| o.as_ref().ok().map(|(g, r)| (g, r)))
        .filter(|(_, r)| seen.insert((r.name.clone(), r.profile.clone(), r.files.clone())))
        .collect();
    // Each release's profiles declare the ABI aa-virt chooses for it
    // (4.0 where the parser ships it), so its parser compiles that ABI.
    let abi_line = format!(
        "\nabi <abi/{}>,\n",
        abi::choose(ProfileKind::LibvirtGuest, templates.host())
            .abi
            .version()
    );
    for (g, r) in &rendered {
        assert!(r.profile.contains(&abi_line), "{}: no {abi_line:?}", g.name);
    }
    let mut batches: Vec<Vec<(&Guest, &Rendered)>> = Vec::new();
    for item in &rendered {
        match batches
            .iter_mut()
            .find(|b| b.len() < BATCH && b.iter().all(|(_, r)| r.name != item.1.name))
        {
            Some(b) => b.push(*item),
            None => batches.push(vec![*item]),
        }
    }
    let parser = Parser::new();
    // With the reference release's parser: the host's, or the chroot's.
    let compile_errors: Vec<String> = parallel(batches.len(), |i| {
        if reference.root.is_some() {
            return reference.compile_in_root(&batches[i], &templates);
        }
        match profile::check_all(&batches[i], &templates, &parser) {
            Ok(()) => Vec::new(),
            // Find every culprit in a failed batch.
            Err(_) => batches[i]
                .iter()
                .filter_map(|(g, r)| r.check(g, &templates, &parser).err())
                .map(|e| e.to_string())
                .collect(),
        }
    })
    .into_iter()
    .flatten()
    .collect();
    let t_compile = t2.elapsed();

    println!("differential test against {}:", reference.label);
    println!("  XMLs run:                          {}", files.len());
    println!("  accepted by the reference:         {accepted}");
    println!("  reference paths covered:           {covered}");
    println!("    of which id -1 paths, covered for a real id: {covered_for_an_id}");
    for (name, n) in &by_abstraction {
        println!("    of which by {name}: {n}");
    }
    println!("  reference paths deliberately different: {deliberate}");
    println!("  reference paths missing:           {}", missing.len());
    println!("  accepted by the reference, refused by aa-virt (listed): {refused_listed}");
    println!(
        "  accepted by the reference, refused by aa-virt (NOT listed): {}",
        unexplained.len()
    );
    println!("  deliberate differences used, by reason:");
    for (reason, n) in &per_reason {
        println!("    {n:5}  {reason}");
    }
    for d in diffs.iter().filter(|d| d.used.load(Ordering::Relaxed) == 0) {
        println!(
            "  note: difference not seen on this host: {} {}",
            d.kind, d.pattern
        );
    }
    println!(
        "  profiles rendered: {produced} ({}); distinct texts compiled with {}: {} in {} batches, {} failed",
        abi_line.trim(),
        reference.parser,
        rendered.len(),
        batches.len(),
        compile_errors.len()
    );
    println!(
        "  time: reference {:.1}s ({THREADS} threads), aa-virt {:.2}s, compile {:.1}s ({THREADS} threads)",
        t_ref.as_secs_f64(),
        t_ours.as_secs_f64(),
        t_compile.as_secs_f64()
    );
    // libtest hides a passing test's output: keep the counts where
    // `make test` prints them after the run.
    let by_abs = by_abstraction
        .iter()
        .map(|(name, n)| format!("{n} by {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = format!(
        "differential test against {}: {} XMLs run, {accepted} accepted by the reference; \
         reference paths: {covered} covered ({covered_for_an_id} of them id -1 paths, for a real id; {by_abs}), \
         {deliberate} deliberately different, {} missing; \
         refused by aa-virt: {refused_listed} listed, {} not listed; {} distinct profiles compiled with {}, {} failed\n",
        reference.label,
        files.len(),
        missing.len(),
        unexplained.len(),
        rendered.len(),
        reference.parser,
        compile_errors.len()
    );
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(reference.summary),
        summary,
    );
    for m in &missing {
        println!("  MISSING {m}");
    }
    for u in &unexplained {
        println!("  REFUSED (not a listed difference) {u}");
    }
    for c in &compile_errors {
        println!("  DOES NOT COMPILE {c}");
    }
    assert!(accepted > 0, "the reference accepted no XML at all");
    assert!(
        missing.is_empty() && unexplained.is_empty() && compile_errors.is_empty(),
        "{} missing paths, {} unexplained refusals, {} profiles that do not compile (listed above)",
        missing.len(),
        unexplained.len(),
        compile_errors.len()
    );
}

#[test]
fn abstraction_rules_and_includes_are_read() {
    let t = Templates::load(None).expect("built-in templates");
    let a = abstraction_rules(&t);
    let gl = &a["abstractions/aa-virt-qemu-gl"];
    let grants = |rules: &[(Pattern, Access)], path: &str| {
        rules
            .iter()
            .filter(|(p, _)| p.matches(path.as_bytes()))
            .fold(Access::default(), |x, (_, acc)| x.union(*acc))
    };
    assert!(grants(gl, "/usr/lib/@{multiarch}/dri/*.so*").covers(Access::parse("mr").unwrap()));
    assert!(grants(gl, "/dev/dri/").covers(Access::R));
    // The render node is per guest, never in the abstraction; deny rules
    // are not grants.
    assert!(grants(gl, "/dev/dri/renderD128").is_empty());
    assert!(grants(gl, "/var/lib/libvirt/.cache/").is_empty());
    assert!(grants(&a["abstractions/aa-virt-qemu"], "/dev/vhost-net").covers(Access::RW));
    assert_eq!(
        includes("  #include <abstractions/a>\n  include if exists <local/b>\n  /x r,\n"),
        vec!["abstractions/a", "local/b"]
    );
}

#[test]
fn difference_patterns() {
    assert!(simple_match("/dev/vfio/[0-9]*", "/dev/vfio/[0-9]*"));
    assert!(simple_match(
        "/usr/lib{,32,64}/dri/*.so*",
        "/usr/lib{,32,64}/dri/*.so*"
    ));
    assert!(simple_match(
        "*USB device * is not attached*",
        "guest g: hostdev0: USB device 1:2 is not attached to this host"
    ));
    assert!(!simple_match("/dev/vfio/vfio", "/dev/vfio/vfio2"));
    assert!(!simple_match("/dev/vfio/*", "/dev/vhost-net"));
    // `*` also matches nothing, as a whole path component too.
    assert!(simple_match("/usr/share/drirc.d/*", "/usr/share/drirc.d/"));
    assert!(simple_match("/a/*/b", "/a//b"));
    assert!(!simple_match("/a/*/b", "/a/b"));
}

#[test]
fn reference_id_minus_one_is_checked_for_a_real_id() {
    assert_eq!(
        with_real_id("/var/lib/libvirt/qemu/domain--1-vm/*").as_deref(),
        Some("/var/lib/libvirt/qemu/domain-1-vm/*")
    );
    assert_eq!(
        with_real_id("/run/libvirt/qemu/swtpm/-1-vm-swtpm.sock").as_deref(),
        Some("/run/libvirt/qemu/swtpm/1-vm-swtpm.sock")
    );
    assert_eq!(with_real_id("/var/lib/libvirt/qemu/domain-3-vm/*"), None);
}
