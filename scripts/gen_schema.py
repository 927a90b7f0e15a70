#!/usr/bin/env python3
"""Builds the install script of the current version: concatenates the
sql/schema/NN_topic.sql files given as arguments, expanding the markers of
the per-limit options (sql/schema/options.tsv) on the way:

  @OPTION_COLUMNS@       the option columns of a rule table, one a line
                         ("  name type [NOT NULL DEFAULT d],")
  @OPTION_PARAMS@        the option parameters of a set_* function, one a
                         line ("  name type DEFAULT d", comma-separated)
  @OPTION_UPSERT_PARAMS@ the same as "p_name type", for the internal upsert
  @OPTION_TYPES@         the options' types, for a signature ("text, bigint")
  @OPTION_NAMES@         the options' names ("algorithm, burst, ...")
  @OPTION_ARGS(n)@       positional references "$n, $n+1, ..." to them

Usage: gen_schema.py OPTIONS_TSV FILE... > sql/rate_limiter--V.sql
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rl_options import read_options  # noqa: E402


def wrapped(items, indent, width=100):
    """items joined by ", ", wrapped before width; continuation lines indented."""
    lines, line = [], ""
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if line and len(indent) + len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line = piece if not line else line + " " + piece
    lines.append(line)
    return ("\n" + indent).join(lines)


def expand(text, options, where):
    width = max(len(o.name) for o in options)

    def column(o):
        suffix = f" NOT NULL DEFAULT {o.default}" if o.not_null == "yes" else ""
        return f"  {o.name.ljust(width)} {o.sql_type}{suffix},"

    def line_of(m):
        marker, indent = m.group(2), m.group(1)
        if marker == "@OPTION_COLUMNS@":
            return "\n".join(column(o) for o in options)
        if marker == "@OPTION_PARAMS@":
            return ",\n".join(f"{indent}{o.name} {o.sql_type} DEFAULT {o.default}" for o in options)
        if marker == "@OPTION_UPSERT_PARAMS@":
            return indent + wrapped([f"p_{o.name} {o.sql_type}" for o in options], indent)
        raise SystemExit(f"{where}: unknown marker {marker}")

    # Line markers stand alone on their line.
    text = re.sub(r"^( *)(@OPTION_(?:COLUMNS|PARAMS|UPSERT_PARAMS)@)$", line_of, text, flags=re.M)
    text = text.replace("@OPTION_TYPES@", ", ".join(o.sql_type for o in options))

    def names(m):
        return wrapped([o.name for o in options], m.group(1))

    text = re.sub(r"(?<=\n)( *)@OPTION_NAMES@", lambda m: m.group(1) + names(m), text)
    text = re.sub(r"@OPTION_ARGS\((\d+)\)@",
                  lambda m: ", ".join(f"${int(m.group(1)) + i}" for i in range(len(options))), text)
    left = re.search(r"@OPTION_\w+(\(\d+\))?@", text)
    if left:
        raise SystemExit(f"{where}: marker {left.group(0)} not expanded (not on a line of its own?)")
    return text


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    options = read_options(argv[1])
    out = []
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            out.append(expand(f.read(), options, path))
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main(sys.argv)
