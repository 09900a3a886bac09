"""edge-bench: latency and memory on the host, on Android phones over adb, and on boards and Macs over ssh.

One ``Device`` interface (``base.py``) with a thin adapter per transport (``host.py``, ``adb.py``,
``ssh.py``); ``bench.py`` orchestrates trials; ``results.py`` keeps the JSON-lines records; ``parsers.py``
reads benchmark binaries' output. Reads an export folder's manifest.json as data; never imports edge.export.

    from edge.devices import bench
    report = bench("out/ghostnet-1.0x/tflite-fp32", devices=["host", "adb:R5CT..."], threads=1, trials=5)
    for s in report.summaries: print(s["device"]["id"], s["median_ms"], s["ci95_ms"])
"""

from __future__ import annotations

from edge.devices.base import Artifact, BenchSpec, Device, Measurement, load_artifacts
from edge.devices.bench import BenchReport, bench, format_table, open_device
from edge.devices.parsers import parse_output
from edge.devices.profiles import Profile, list_profiles, load_profile, parse_spec
from edge.devices.results import load_summaries, load_trials, summarize

__all__ = [
    "Artifact", "BenchReport", "BenchSpec", "Device", "Measurement", "Profile", "bench", "format_table",
    "list_devices", "list_profiles", "load_artifacts", "load_profile", "load_summaries", "load_trials",
    "open_device", "parse_output", "parse_spec", "summarize",
]


def list_devices(profiles_dir: str | None = None, adb: str | None = None, adb_server: str | None = None,
                 check: bool = True) -> list[dict]:
    """Connected and configured devices with their state (what ``edge devices`` prints)."""
    import shutil

    from edge.devices.adb import AdbDevice
    from edge.devices.host import HostDevice
    from edge.errors import EdgeError

    host = HostDevice()
    rows: list[dict] = [{"device": "host", "kind": "host", "state": "device", "name": host.name, "source": "built-in"}]
    adb_exe = adb or "adb"
    if shutil.which(adb_exe) or (adb and shutil.os.path.isfile(adb)):
        probe = AdbDevice(Profile(name="adb", transport="adb", adb=adb_exe, server=adb_server))
        try:
            for serial, state, desc in probe.list_attached():
                model = next((w.split(":", 1)[1] for w in desc.split() if w.startswith("model:")), "")
                rows.append({"device": f"adb:{serial}", "kind": "adb", "state": state, "name": model,
                             "source": "adb devices"})
        except EdgeError as e:
            rows.append({"device": "adb", "kind": "adb", "state": "adb server unreachable", "name": "",
                         "source": str(e)})
    for prof in list_profiles(profiles_dir):
        state = "not checked"
        if check:
            try:
                dev = open_device(prof)
                try:
                    state = dev.state()
                finally:
                    dev.close()
            except EdgeError as e:
                state = f"error: {e.message}"
        rows.append({"device": prof.name, "kind": prof.transport, "state": state, "name": prof.spec,
                     "source": prof.source})
    return rows
