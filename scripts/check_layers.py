#!/usr/bin/env python3
"""Checks that the PostgreSQL layer's includes point down the layers.

src/pg/<subsystem>/*.cpp and include/rate_limiter/pg/<subsystem>/*.hpp may
include the headers of their own subsystem, the public header of a lower
one (include/rate_limiter/pg/<subsystem>.hpp, which lists that subsystem's
headers and nothing else), and the pure core (rate_limiter/core/).  Files directly in src/pg/ and include/rate_limiter/pg/
(module.cpp, the shared memory map) wire every subsystem together and may
include anything; no subsystem may include them.  The
core (src/core, include/rate_limiter/core) may include nothing of the
PostgreSQL layer.  A known exception is listed in ALLOWED with its reason;
a new upward include fails the lint suite.

Usage: python3 scripts/check_layers.py   (from the repository root)
"""
import pathlib
import re
import sys

# Lowest first.  Two subsystems of one rank may not include each other.
LAYERS = [
    ("support", "PostgreSQL headers, the C++/ereport boundary, settings, argument checks"),
    ("shmem", "shared memory: the state header, partition locks, pools, installations, metrics"),
    ("rules", "rules: rows, the shared rule table, loading, lookup, transactional changes"),
    ("revocations", "revoked sessions: shared cache, lookup, transactional changes"),
    ("engine", "the decision: hot path, fail-open grants, charges, counters across restarts"),
    ("usage", "token_usage rows: queue, log, pending events, the queue's file"),
    ("alerts", "alerts: raising them and their queue"),
    ("workers", "background workers: launcher, per-database flusher and upkeep, reclaim"),
    ("api", "SQL-callable functions"),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
SAME_RANK = {"rules": 2, "revocations": 2}

# (file, included subsystem) -> why it is allowed for now.
ALLOWED = {
    ("src/pg/shmem/extension_catalog.cpp", "workers"):
        "the catalog lookup registers the database's installation slot "
        "(register_installation lives with the reclaim code)",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"rate_limiter/(pg|core)/(?:([a-z_]+)/)?([a-z_]+)\.hpp"')


def rank(sub):
    return SAME_RANK.get(sub, RANK[sub] if sub in RANK else None)


def main():
    root = pathlib.Path(".")
    errors = []
    files = list(root.glob("src/pg/**/*.cpp")) + list(root.glob("include/rate_limiter/pg/**/*.hpp"))
    for name in RANK:
        public = root / "include/rate_limiter/pg" / f"{name}.hpp"
        if not public.exists():
            errors.append(f"{public}: the public header of '{name}' is missing")
            continue
        listed = set(re.findall(r'#include "rate_limiter/pg/' + name + r'/([a-z_]+\.hpp)"', public.read_text()))
        present = {p.name for p in (root / "include/rate_limiter/pg" / name).glob("*.hpp")}
        for h in sorted(present - listed):
            errors.append(f"{public}: does not list {name}/{h}")
    core = list(root.glob("src/core/*.cpp")) + list(root.glob("include/rate_limiter/core/*.hpp"))
    for f in core:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            m = INCLUDE.match(line)
            if m and m.group(1) == "pg":
                errors.append(f"{f}:{n}: the core includes the PostgreSQL layer")
    for f in files:
        parts = f.parts
        top = (parts[:2] == ("src", "pg") and len(parts) == 3) or \
              (parts[:3] == ("include", "rate_limiter", "pg") and len(parts) == 4)
        if top and len(parts) == 4 and f.stem in RANK:
            # A public header lists its own subsystem's files, nothing else.
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if re.match(r"^\s*#\s*include", line) and \
                        not re.match(r'^\s*#\s*include\s+"rate_limiter/pg/' + f.stem + r'/[a-z_]+\.hpp"', line):
                    errors.append(f"{f}:{n}: a public header includes only its own subsystem's files")
            continue
        sub = None if top else (parts[2] if parts[0] == "src" else parts[3])
        if not top and sub not in RANK:
            errors.append(f"{f}: subsystem folder '{sub}' is not in scripts/check_layers.py")
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            m = INCLUDE.match(line)
            if not m or m.group(1) == "core":
                continue
            target = m.group(2)
            if target is None and m.group(3) in RANK:
                target = m.group(3)  # a subsystem's public header
            elif target is not None and target != sub:
                errors.append(f"{f}:{n}: includes a file of '{target}' instead of rate_limiter/pg/{target}.hpp")
                continue
            if target is None and top:
                continue
            if target is None:
                errors.append(f"{f}:{n}: includes a header outside every subsystem folder")
                continue
            if target not in RANK:
                errors.append(f"{f}:{n}: unknown subsystem '{target}'")
                continue
            if top or target == sub:
                continue
            if rank(target) < rank(sub):
                continue
            if (str(f), target) in ALLOWED:
                continue
            errors.append(f"{f}:{n}: '{sub}' includes '{target}', which is not below it")
    for e in errors:
        print(e)
    if errors:
        print(f"layers: {len(errors)} include violation(s)")
        return 1
    print(f"layers: clean ({len(files)} files, {len(LAYERS)} subsystems)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
