"""The host: ONNX Runtime and LiteRT (XNNPACK) in-process; Core ML through coremltools on macOS only.

Each trial builds a fresh session (so init and first-inference times are measured every trial, as a
benchmark binary does per launch) and times it with the same loop the ssh runner uses.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

from edge.devices import runner
from edge.devices.base import (
    SYSFS_SCRIPT,
    Artifact,
    BenchSpec,
    Device,
    Measurement,
    SysInfo,
    ThermalState,
    cpu_mask,
    parse_sysfs,
    pick_temperature,
    select_cpus,
)
from edge.devices.profiles import Profile
from edge.errors import DeviceError, EdgeError

RUNTIME_FOR = {"tflite": "litert", "onnx": "onnxruntime", "coreml": "coreml"}


class HostDevice(Device):
    kind = "host"

    def __init__(self, profile: Profile | None = None) -> None:
        super().__init__(profile or Profile(name="host", transport="host"))
        self._pin: list[int] | None = None
        self._pin_note = ""

    @property
    def id(self) -> str:
        return "host"

    @property
    def name(self) -> str:
        return self.profile.name if self.profile.name != "host" else f"host ({_cpu_model()})"

    def open(self) -> None:
        pass

    def state(self) -> str:
        return "device"

    def _sysfs(self) -> SysInfo:
        if sys.platform != "linux":
            return SysInfo({}, {}, set(), None)
        res = subprocess.run(["/bin/sh", "-c", SYSFS_SCRIPT], capture_output=True, text=True, timeout=30)
        return parse_sysfs(res.stdout)

    def fingerprint(self) -> dict[str, Any]:
        cpus, zones, _, features = self._sysfs()
        return {
            "os": platform.platform(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_features": features,
            "cpus": {c: {"governor": v["governor"], "max_freq_khz": v["cpuinfo_max_freq_khz"],
                         "capacity": v["capacity"]} for c, v in cpus.items()},
            "thermal_zones": {k: {"type": v["type"], "temp_c": v["temp_c"]} for k, v in zones.items()},
            "versions": runner.versions(),
        }

    def thermal(self) -> ThermalState:
        cpus, zones, _, _ = self._sysfs()
        freq = {c: v["scaling_max_freq_khz"] for c, v in cpus.items() if v.get("scaling_max_freq_khz")}
        return ThermalState(temperature_c=pick_temperature(zones, None), max_freq_khz=freq or None,
                            zones={k: v["temp_c"] for k, v in zones.items() if v["temp_c"] is not None})

    def prepare(self, artifact: Artifact, spec: BenchSpec) -> None:
        rt = self._runtime(artifact, spec)
        self.runtime_name = rt
        if rt == "coreml" and sys.platform != "darwin":
            raise EdgeError(f"Core ML runs only on macOS; this host is {platform.system()}",
                            "bench the .mlpackage on a Mac: --device ssh://user@mac, or bench the .tflite/.onnx here")
        delegate = spec.delegate_for(artifact.target)
        if rt == "litert" and delegate not in ("xnnpack", "cpu"):
            raise EdgeError(f"delegate {delegate} is not available on the host's LiteRT interpreter",
                            "use --delegate xnnpack or cpu here; GPU/NNAPI/NPU need a phone (--device adb)")
        cpus = self._sysfs().cpus
        if not cpus and hasattr(os, "sched_getaffinity"):
            cpus = {str(c): {} for c in sorted(os.sched_getaffinity(0))}
        self._pin, self._pin_note = select_cpus(spec.cores, cpus)
        if self._pin is not None and hasattr(os, "sched_getaffinity"):
            allowed = os.sched_getaffinity(0)
            if not set(self._pin) <= allowed:
                raise EdgeError(f"--cores {spec.cores}: CPUs {sorted(set(self._pin) - allowed)} are not available "
                                f"to this process (allowed: {sorted(allowed)})")

    def _runtime(self, artifact: Artifact, spec: BenchSpec) -> str:
        rt = spec.runtime or RUNTIME_FOR[artifact.target]
        if rt not in runner.MEASURE:
            raise EdgeError(f"the host runs artifacts in-process ({', '.join(runner.MEASURE)}); not {rt}",
                            "benchmark binaries run on --device adb or ssh")
        if RUNTIME_FOR[artifact.target] != rt:
            raise EdgeError(f"runtime {rt} cannot run a {artifact.target} artifact ({artifact.path.name})")
        return rt

    def run_trial(self, artifact: Artifact, spec: BenchSpec) -> Measurement:
        import tempfile

        rt = self._runtime(artifact, spec)
        prof_dir = tempfile.mkdtemp(prefix="edge-prof-") if spec.op_profile else None
        try:
            r = runner.measure(str(artifact.path), rt, spec.threads, spec.runs, spec.warmup,
                               spec.delegate_for(artifact.target), cpus=self._pin, op_profile_dir=prof_dir,
                               min_seconds=spec.min_seconds)
        except runner.RunnerError as e:
            raise EdgeError(e.message, e.hint) from None
        except (RuntimeError, ValueError) as e:
            raise DeviceError(f"{rt} failed on {artifact.path.name}: {str(e).strip().splitlines()[-1][:300]}",
                              "the artifact may use an op this runtime does not support; --debug shows more") from None
        finally:
            if prof_dir:
                import shutil
                shutil.rmtree(prof_dir, ignore_errors=True)
        m = _measurement(r, self._pin)
        if self._pin is None and spec.cores not in (None, "all", "none"):
            m.notes.append(f"--cores {spec.cores}: {self._pin_note}")
        return m


def _measurement(r: dict[str, Any], pin: list[int] | None) -> Measurement:
    """A runner result (in-process or the JSON an ssh runner printed) as a Measurement."""
    from edge.devices.stats import summarize_samples

    lat: dict[str, float | None] = dict(summarize_samples(r["samples_ms"]))
    lat["first"] = r.get("first_ms")
    lat["init"] = r.get("init_ms")
    return Measurement(runtime=r["runtime"], delegate=r.get("delegate"), latency_ms=lat,
                       samples_ms=[round(x, 6) for x in r["samples_ms"]], runs=len(r["samples_ms"]),
                       peak_memory_mb=r.get("peak_memory_mb"), delegate_coverage=r.get("delegate_coverage"),
                       op_profile=r.get("op_profile"), cpu_mask=cpu_mask(pin) if pin else None,
                       notes=list(r.get("notes") or []))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
