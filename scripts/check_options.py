#!/usr/bin/env python3
"""The per-limit options are named the same everywhere (make lint-options;
test/t/021_schema_versions.pl also runs it).  sql/schema/options.tsv is the
list; this checks against it:

  - the C++ list RL_RULE_OPTIONS (include/rate_limiter/pg/rules/rule_options.hpp),
    name by name and in order;
  - the upsert rate_limiter_upsert_limit (sql/schema/03_rules.sql), whose
    body is written by hand: every option is validated (unless a switch),
    inserted and updated in both rule tables;
  - the update scripts: every option is a column some update script adds,
    so that ALTER EXTENSION UPDATE reaches the same tables as a new
    installation (test/t/021 compares the catalogs);
  - the settings: an option with a fallback setting has that GUC
    (src/pg/support/settings.cpp);
  - the documentation: the per-limit option table of docs/settings.md
    (section "Per-limit options").

The columns and set_* arguments of an installed schema are generated from
the list (scripts/gen_schema.py); test/t/021 checks them in the catalog.
"""
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rl_options import read_options  # noqa: E402


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def check_cxx(options, errors):
    path = "include/rate_limiter/pg/rules/rule_options.hpp"
    m = re.search(r"#define RL_RULE_OPTIONS\(X\)((?:[^\n]*\\\n)*[^\n]*)", read(path))
    if not m:
        errors.append(f"{path}: no RL_RULE_OPTIONS(X) list")
        return
    names = re.findall(r"X\((\w+)\)", m.group(1))
    want = [o.name for o in options]
    if names != want:
        errors.append(f"{path}: RL_RULE_OPTIONS is {names}, sql/schema/options.tsv has {want}")


def check_upsert(options, errors):
    path = "sql/schema/03_rules.sql"
    text = read(path)
    m = re.search(r"CREATE FUNCTION rate_limiter_upsert_limit\(.*?\nEND \$\$;", text, re.S)
    if not m:
        errors.append(f"{path}: no rate_limiter_upsert_limit")
        return
    body = m.group(0)
    for o in options:
        if len(re.findall(rf"\b{o.name} = EXCLUDED\.{o.name}\b", body)) != 2:
            errors.append(f"{path}: rate_limiter_upsert_limit does not update {o.name} in both tables")
        # The parameter list is generated: the body names p_<option> in both
        # VALUES lists, and once more where it is validated.
        if len(re.findall(rf"\bp_{o.name}\b", body)) < 2:
            errors.append(f"{path}: rate_limiter_upsert_limit does not insert p_{o.name} in both tables")
        if o.validation != "switch" and len(re.findall(rf"\bp_{o.name}\b", body)) < 3:
            errors.append(f"{path}: rate_limiter_upsert_limit does not validate p_{o.name} ({o.validation})")


def check_updates(options, errors):
    added = set()
    for path in glob.glob("sql/rate_limiter--*--*.sql"):
        added.update(re.findall(r"ADD COLUMN (\w+)", read(path)))
    for o in options:
        if o.name not in added:
            errors.append(f"{o.name}: no update script adds the column (sql/rate_limiter--X--Y.sql)")


def check_gucs(options, errors):
    path = "src/pg/support/settings.cpp"
    text = read(path)
    for o in options:
        if o.guc != "-" and f'"{o.guc}"' not in text:
            errors.append(f"{path}: {o.name} falls back to {o.guc}, which is not defined")


def documented_names(path):
    """Option names of the per-limit option table: the backticked names in the
    first column of the table after the sentence that introduces it."""
    text = read(path)
    start = text.find("## Per-limit options")
    if start < 0:
        return None
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    names = []
    for row in rows[2:]:
        first = row.split("|")[1]
        names += [t.split()[0] for t in re.findall(r"`([^`]+)`", first)]
    return names


def check_docs(options, errors, notes):
    path = "docs/settings.md"
    names = documented_names(path)
    if names is None:
        errors.append(f"{path}: no per-limit option table")
        return
    want = {o.name for o in options}
    for o in options:
        if o.name not in names:
            errors.append(f"{path}: the option table lacks {o.name}")
    for n in names:
        if n not in want:
            errors.append(f"{path}: the option table lists {n}, which is not an option")


def main():
    options = read_options()
    errors, notes = [], []
    check_cxx(options, errors)
    check_upsert(options, errors)
    check_updates(options, errors)
    check_gucs(options, errors)
    check_docs(options, errors, notes)
    for n in notes:
        print("note: " + n)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"options: {len(options)} per-limit options agree (C++, upsert, update scripts, settings, docs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
