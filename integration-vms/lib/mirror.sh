# shellcheck shell=bash
# Print the Debian mirror URL that this host's apt already uses for the
# given suite (default "bookworm"; not -security), read from deb822 *.sources or
# one-line *.list / sources.list. Never hard-coded: CI machines and
# developer machines may point at different mirrors or proxies.
# AA_VIRT_MIRROR overrides (e.g. a local apt-cacher).
debian_mirror() {
    if [ -n "${AA_VIRT_MIRROR:-}" ]; then
        printf '%s\n' "$AA_VIRT_MIRROR"
        return 0
    fi
    local suite=${1:-bookworm} f url
    # deb822 stanzas: find one whose Suites list contains exactly $suite.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        url=$(awk -v want="$suite" '
            function flush() {
                if (!found && uris != "" && enabled && types ~ /(^|[ \t])deb([ \t]|$)/) {
                    n = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) if (s[i] == want) { split(uris, u, /[ \t]+/); print u[1]; found = 1; exit }
                }
                uris = ""; suites = ""; types = ""; enabled = 1
            }
            BEGIN { enabled = 1 }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:"    { sub(/^[^:]*:[ \t]*/, ""); uris = $0 }
            tolower($1) == "suites:"  { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
            tolower($1) == "types:"   { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
            tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
            END { flush() }
        ' "$f")
        if [ -n "$url" ]; then printf '%s\n' "${url%/}"; return 0; fi
    done
    # One-line format: "deb [opts] URL SUITE COMPONENTS..."
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        url=$(awk -v want="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i+1) == want) { print $i; exit }
            }' "$f")
        if [ -n "$url" ]; then printf '%s\n' "${url%/}"; return 0; fi
    done
    echo "debian_mirror: no apt source for suite '$suite' found in /etc/apt" >&2
    return 1
}

# The mirror for SUITE, also when the host's apt has no source for it: a
# Debian 12 host lists bookworm only, but the same archive serves trixie.
# Falls back to the host's own suite (from /etc/os-release) on the same
# archive, keeping a "-security" suffix so security stays on its own host.
debian_archive_mirror() {
    local suite=$1 host
    if debian_mirror "$suite" 2>/dev/null; then return 0; fi
    host=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$host" ] || { echo "debian_archive_mirror: no VERSION_CODENAME in /etc/os-release" >&2; return 1; }
    case "$suite" in
    *-security) debian_mirror "$host-security" ;;
    *) debian_mirror "$host" ;;
    esac
}
