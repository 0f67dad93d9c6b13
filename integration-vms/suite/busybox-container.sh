# shellcheck shell=bash
# busybox_container LXCPATH NAME: create a busybox container without
# network in LXCPATH (made here, removed at the end of the case), stopped
# and destroyed when the case ends. Sourced by the cases that need one
# (75, 76) after lib.sh.
busybox_container() {
    mkdir -p "$1"
    on_exit rm -rf "$1"
    lxc-create -P "$1" -t busybox -n "$2" >/dev/null 2>&1 || { fail "lxc-create $2 in $1"; return 1; }
    sed -i -e '/^lxc\.net\.0\./d' "$1/$2/config"
    echo 'lxc.net.0.type = empty' >> "$1/$2/config"
    on_exit lxc-destroy -P "$1" -f -n "$2"
    on_exit lxc-stop -P "$1" -k -n "$2"
}
