"""The toy kind's daemon step: ``python -m toykind.sweep`` with a section's JSON on stdin.

Prints one line per name in ``swept``; exits 1 with ``fail`` as the last line of stderr when given.
"""

import json
import sys

section = json.loads(sys.stdin.read() or "{}")
for name in section.get("swept", []):
    print(f"swept {name}")
if section.get("fail"):
    print("some detail first", file=sys.stderr)
    print(section["fail"], file=sys.stderr)
    sys.exit(1)
