#!/usr/bin/python3
"""Validate JSON documents against a JSON Schema with Debian's python3-jsonschema.

usage: validate_schema.py SCHEMA FILE...

The validator class follows the schema's own "$schema" (draft-04 for SARIF 2.1.0), and formats
are checked (uri and uri-reference through python3-rfc3987, date-time through the stdlib):
a bad URI fails here as it fails GitHub's upload. Prints one line per error, "FILE: invalid at
PATH: MESSAGE", and exits 1 when any document is invalid, 2 on usage or unreadable input.
"""
import json
import sys

import jsonschema


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    # The rfc3987 checker must be there, or "uri" would pass unchecked.
    if "uri" not in cls.FORMAT_CHECKER.checkers:
        print("validate_schema: no checker for format 'uri' (install python3-rfc3987)", file=sys.stderr)
        return 2
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    bad = 0
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            print(f"{path}: invalid at {where}: {err.message}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
