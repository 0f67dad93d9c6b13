//! Man pages and shell completions generated from the command-line
//! definition, plus the hand-written sections in `docs/man/`.

use std::io;
use std::path::{Path, PathBuf};

use roff::{bold, roman, Roff};

/// Hand-written sections: (page, section title, text). Plain text,
/// paragraphs separated by blank lines, lines indented by two spaces shown
/// verbatim.
const EXTRA: &[(&str, &str, &str)] = &[
    (
        "aa-virt",
        "EXIT STATUS",
        include_str!("../../docs/man/aa-virt.EXIT_STATUS"),
    ),
    (
        "aa-virt",
        "FILES",
        include_str!("../../docs/man/aa-virt.FILES"),
    ),
    (
        "aa-virt",
        "ENVIRONMENT",
        include_str!("../../docs/man/aa-virt.ENVIRONMENT"),
    ),
    (
        "aa-virt",
        "EXAMPLES",
        include_str!("../../docs/man/aa-virt.EXAMPLES"),
    ),
    (
        "aa-virt",
        "SEE ALSO",
        include_str!("../../docs/man/aa-virt.SEE_ALSO"),
    ),
    (
        "aa-virt-profile",
        "EXAMPLES",
        include_str!("../../docs/man/aa-virt-profile.EXAMPLES"),
    ),
    (
        "aa-virt-denials",
        "EXAMPLES",
        include_str!("../../docs/man/aa-virt-denials.EXAMPLES"),
    ),
];

/// Render plain text (see [`EXTRA`]) as a roff section: a paragraph that
/// opens with an indented line followed by prose is a definition (`.TP`,
/// e.g. a file and what it is); an all-indented paragraph is an example.
fn section(roff: &mut Roff, title: &str, text: &str) {
    roff.control("SH", [title]);
    for para in text
        .split("\n\n")
        .map(str::trim_end)
        .filter(|p| !p.trim().is_empty())
    {
        let lines: Vec<&str> = para.lines().collect();
        let verbatim: Vec<&str> = lines
            .iter()
            .take_while(|l| l.starts_with("  "))
            .map(|l| &l[2..])
            .collect();
        let prose: Vec<&str> = lines[verbatim.len()..].iter().map(|l| l.trim()).collect();
        match (verbatim.is_empty(), prose.is_empty()) {
            (true, _) => {
                roff.control("PP", []).text([roman(prose.join(" "))]);
            }
            (false, false) => {
                roff.control("TP", []).text([bold(verbatim.join(" "))]);
                roff.text([roman(prose.join(" "))]);
            }
            (false, true) => {
                roff.control("RS", ["4"]).control("nf", []);
                for v in verbatim {
                    roff.text([bold(v)]);
                }
                roff.control("fi", []).control("RE", []);
            }
        }
    }
}

fn page(cmd: &clap::Command, name: &str, out: &Path, section_no: &str) -> io::Result<PathBuf> {
    let cmd = cmd.clone().name(name.to_string());
    let man = clap_mangen::Man::new(cmd.clone()).section(section_no);
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    let mut extra = Roff::new();
    for (p, title, text) in EXTRA.iter().filter(|(p, _, _)| *p == name) {
        let _ = p;
        section(&mut extra, title, text);
    }
    if !name.contains('-') || name == "aa-virt" {
        man.render_version_section(&mut buf)?;
    }
    buf.extend_from_slice(extra.render().as_bytes());
    let path = out.join(format!("{name}.{section_no}"));
    std::fs::write(&path, buf)?;
    Ok(path)
}

fn walk(cmd: &clap::Command, name: &str, out: &Path, pages: &mut Vec<PathBuf>) -> io::Result<()> {
    pages.push(page(cmd, name, out, "1")?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        walk(sub, &format!("{name}-{}", sub.get_name()), out, pages)?;
    }
    Ok(())
}

/// The configuration file's page, written by hand: `# SECTION` lines
/// start sections, the rest follows the [`EXTRA`] text rules.
const CONFIG_PAGE: &str = include_str!("../../docs/man/aa-virt.toml.5.txt");

fn config_page(out: &Path) -> io::Result<PathBuf> {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "AA-VIRT.TOML",
            "5",
            "",
            &format!("aa-virt {}", env!("CARGO_PKG_VERSION")),
        ],
    );
    for part in CONFIG_PAGE.split("# ").filter(|p| !p.trim().is_empty()) {
        let (title, body) = part.split_once('\n').unwrap_or((part, ""));
        section(&mut roff, title.trim(), body);
    }
    let path = out.join("aa-virt.toml.5");
    std::fs::write(&path, roff.render())?;
    Ok(path)
}

/// Write the man pages of `cmd` (one per subcommand) and of the
/// configuration file into `out`; returns the files written.
pub fn write_man_pages(cmd: &clap::Command, out: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut pages = Vec::new();
    walk(cmd, "aa-virt", out, &mut pages)?;
    pages.push(config_page(out)?);
    Ok(pages)
}

/// Write bash, zsh and fish completions for `cmd` into `out`.
pub fn write_completions(cmd: &clap::Command, out: &Path) -> io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    for sh in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        files.push(clap_complete::generate_to(sh, &mut cmd, "aa-virt", out)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        <crate::cli::Cli as clap::CommandFactory>::command()
    }

    #[test]
    fn pages_have_hand_written_sections() {
        let d = tempfile::tempdir().unwrap();
        let pages = write_man_pages(&cmd(), d.path()).unwrap();
        let main = std::fs::read_to_string(d.path().join("aa-virt.1")).unwrap();
        for s in [
            "EXIT STATUS",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
            "ENVIRONMENT",
        ] {
            assert!(
                main.contains(&format!(".SH \"{s}\"")) || main.contains(&format!(".SH {s}")),
                "{s} missing"
            );
        }
        assert!(pages.iter().any(|p| p.ends_with("aa-virt-profile.1")));
        let prof = std::fs::read_to_string(d.path().join("aa-virt-profile.1")).unwrap();
        assert!(prof.contains("files\\-only"), "{prof}");
        let conf = std::fs::read_to_string(d.path().join("aa-virt.toml.5")).unwrap();
        // Every key the shipped default configuration mentions is documented.
        let keys: Vec<&str> = aa_virt::config::DEFAULT_TEXT
            .lines()
            .map(|l| l.trim_start_matches(['#', ' ']))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert!(keys.len() >= 7, "{keys:?}");
        for key in keys {
            assert!(
                conf.contains(&format!("{key} =")),
                "aa-virt.toml(5) does not document {key}"
            );
        }
        let c = write_completions(&cmd(), d.path()).unwrap();
        assert_eq!(c.len(), 3);
    }
}
