"""`edge devices`: the host, attached adb devices and configured device profiles, with their state."""

from __future__ import annotations

import argparse
import json

HELP = "list connected and configured devices (host, adb, ssh profiles) with their state"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profiles", metavar="DIR", help="folder of device profiles (*.toml)")
    p.add_argument("--adb", metavar="PATH", help="adb client to use")
    p.add_argument("--adb-server", metavar="HOST:PORT", help="remote adb server")
    p.add_argument("--no-check", action="store_true", help="do not contact profiled devices")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from edge.devices import list_devices

    rows = list_devices(args.profiles, args.adb, args.adb_server, check=not args.no_check)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("device", "kind", "state", "name / address", "from")
    table = [head] + [(r["device"], r["kind"], r["state"], r["name"] or "", r["source"] or "") for r in rows]
    widths = [max(len(str(t[i])) for t in table) for i in range(len(head))]
    for i, t in enumerate(table):
        print("  ".join(str(c).ljust(w) for c, w in zip(t, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0
