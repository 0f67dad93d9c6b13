#!/usr/bin/env python3
# Trim the AppArmor records VM case 35 saved (AA_VIRT_ITEST_KEEP=1: the work
# dir's share/out) into the fixtures of tests/denials/.
# Usage: scripts/denials-fixtures.py OUTDIR 12|13 tests/denials
import json, sys, os
out, rel, dest = sys.argv[1], sys.argv[2], sys.argv[3]
keep = ["MESSAGE","_TRANSPORT","SYSLOG_IDENTIFIER","__REALTIME_TIMESTAMP","_SOURCE_REALTIME_TIMESTAMP","_AUDIT_ID","_AUDIT_TYPE","_AUDIT_TYPE_NAME"]
def w(name, lines):
    open(os.path.join(dest, name), "w").write("".join(l if l.endswith("\n") else l + "\n" for l in lines))
w(f"debian{rel}-dmesg.log", [l for l in open(os.path.join(out, "35-dmesg.log")) if "apparmor=" in l])
js = []
for l in open(os.path.join(out, "35-journal.json")):
    d = json.loads(l)
    if "apparmor=" not in str(d.get("MESSAGE", "")): continue
    js.append(json.dumps({k: d[k] for k in d if k in keep}, separators=(",", ":")))
w(f"debian{rel}-journal.json", js)
if rel == "12":
    w("debian12-audit.log", [l for l in open(os.path.join(out, "35-records.log")) if l.startswith("AVC ")])
