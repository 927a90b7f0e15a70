"""The per-limit options of sql/schema/options.tsv (scripts/gen_schema.py,
scripts/check_options.py)."""
import collections

Option = collections.namedtuple("Option", "name sql_type default not_null validation guc")


def read_options(path="sql/schema/options.tsv"):
    options = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != len(Option._fields):
                raise SystemExit(f"{path}:{number}: {len(fields)} fields, want {len(Option._fields)}")
            o = Option(*fields)
            if o.not_null not in ("yes", "no"):
                raise SystemExit(f"{path}:{number}: not_null must be yes or no")
            options.append(o)
    return options
