"""A real `pip uninstall` of a plugin removes exactly its registry entries (types and presets);
then reinstall it.

Run by .ci/run after `make test`: python scripts/check_uninstall.py zoo-example plugins/zoo-example
"""

from __future__ import annotations

import json
import subprocess
import sys


def entries() -> set[tuple[str, str, str]]:
    out = subprocess.run([sys.executable, "-m", "zoo", "list", "--json"], check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    kinds = ("models", "samplers", "trainers")
    types = {(kind, t, info["distribution"]) for kind in kinds for t, info in data[kind]["types"].items()}
    presets = {
        (kind, f"preset:{name}", info["distribution"])
        for kind in kinds
        for name, info in data[kind]["presets"].items()
        if info["distribution"]
    }
    return types | presets


def main() -> int:
    dist, path = sys.argv[1], sys.argv[2]
    before = entries()
    theirs = {e for e in before if e[2] == dist}
    if not theirs or not any(t.startswith("preset:") for _, t, _ in theirs):
        print(f"{dist} registers no types or no presets; is it installed?")
        return 1
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "uninstall", "-y", dist], check=True)
    try:
        after = entries()
    finally:
        subprocess.run([*pip, "install", "--no-deps", "-e", path], check=True)
    ok = before - after == theirs and after == before - theirs
    print(f"uninstall {dist}: removed {sorted(t for _, t, _ in before - after)}; exactly its entries: {ok}")
    restored = entries() == before
    print(f"reinstall {dist}: registry restored: {restored}")
    return 0 if ok and restored else 1


if __name__ == "__main__":
    sys.exit(main())
