#!/usr/bin/env python3
"""PGXN packaging checks (make meta-check, make dist, make lint-meta).

META.json's version must be rate_limiter.control's default_version as a
semantic version (PGXN requires three parts: 1.4 is 1.4.0), both at the
top and under provides.rate_limiter.

  check_meta.py                 check META.json against the control file
  check_meta.py --print-version print the distribution version
  check_meta.py --zip FILE      also check an archive made by make dist:
                                every entry under rate_limiter-<version>/,
                                with the control file, META.json (of that
                                version), the 1.0 install script and
                                the sql/schema files make builds the
                                current install script from
"""
import json
import re
import sys
import zipfile

NAME = "rate_limiter"


def control_version(text):
    m = re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M)
    if not m:
        sys.exit("rate_limiter.control: no default_version")
    return m.group(1)


def semver(version):
    parts = version.split(".")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        sys.exit(f"rate_limiter.control: default_version {version!r} is not N.N or N.N.N")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def meta_errors(meta, want, where):
    errors = []
    if meta.get("name") != NAME:
        errors.append(f"{where}: name is {meta.get('name')!r}, not {NAME!r}")
    got = {"version": meta.get("version"),
           f"provides.{NAME}.version": meta.get("provides", {}).get(NAME, {}).get("version")}
    for key, value in got.items():
        if value != want:
            errors.append(f"{where}: {key} is {value!r}, but rate_limiter.control says {want!r}")
    return errors


def main(argv):
    with open(f"{NAME}.control", encoding="utf-8") as f:
        want = semver(control_version(f.read()))
    if argv[1:] == ["--print-version"]:
        print(want)
        return 0
    with open("META.json", encoding="utf-8") as f:
        errors = meta_errors(json.load(f), want, "META.json")
    if len(argv) == 3 and argv[1] == "--zip":
        prefix = f"{NAME}-{want}/"
        with zipfile.ZipFile(argv[2]) as z:
            names = z.namelist()
            outside = [n for n in names if not n.startswith(prefix)]
            if outside:
                errors.append(f"{argv[2]}: {len(outside)} entries outside {prefix}, e.g. {outside[0]}")
            for need in ("META.json", f"{NAME}.control", "Makefile", f"sql/{NAME}--1.0.sql"):
                if prefix + need not in names:
                    errors.append(f"{argv[2]}: {prefix + need} is missing")
            # The current install script is built by make from sql/schema.
            if not any(n.startswith(prefix + "sql/schema/") and n.endswith(".sql") for n in names):
                errors.append(f"{argv[2]}: {prefix}sql/schema/*.sql is missing")
            if prefix + "META.json" in names:
                errors += meta_errors(json.loads(z.read(prefix + "META.json")), want, f"{argv[2]}:META.json")
    elif len(argv) != 1:
        sys.exit(__doc__)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"META.json: version {want}, as {NAME}.control" + (f"; {argv[2]} is a PGXN archive" if len(argv) == 3 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
