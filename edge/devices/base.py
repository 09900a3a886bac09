"""The one device interface, and what every transport shares.

``Device`` is what the orchestrator (``bench.py``) talks to: open, fingerprint, thermal snapshot, prepare
an artifact, run one trial, close. ``host.py`` runs in-process; ``RemoteDevice`` holds everything that is
the same whether a shell is reached through adb or ssh (sysfs probing, big-core selection, benchmark
binaries, ABI checks, parsing), and each transport adapter only supplies ``shell``, ``push`` and ``pull``.
"""

from __future__ import annotations

import json
import secrets
import shlex
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from edge._io import sha256_path
from edge.devices import parsers
from edge.devices.profiles import Profile, cpus_from_option
from edge.errors import DeviceError, EdgeError

TARGET_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx", ".mlpackage": "coreml", ".mlmodel": "coreml",
                   ".mlmodelc": "coreml"}
DEFAULT_DELEGATE = {"tflite": "xnnpack", "onnx": "cpu", "coreml": "coreml-all"}
BINARY_FOR = {"tflite": ("benchmark_model", "benchmark_litert_model"), "onnx": ("onnxruntime_perf_test",)}
DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi", "hexagon", "npu", "qnn", "coreml", "coreml-all", "coreml-ane",
             "coreml-cpu", "coreml-gpu")


# ------------------------------------------------------------------------------------------- artifacts
@dataclass
class Artifact:
    """A model file (or .mlpackage folder) with what its export manifest says about it."""

    path: Path
    target: str
    sha256: str
    size_bytes: int
    precision: str | None = None
    model: str | None = None
    manifest: dict[str, Any] | None = None
    export_dir: Path | None = None

    @property
    def label(self) -> str:
        if self.model:
            return f"{self.model} {self.target}-{self.precision or '?'}"
        return self.path.name


def load_artifacts(path: str | Path) -> list[Artifact]:
    """An artifact file, an export folder (its manifest.json), or a folder of export folders."""
    p = Path(path).expanduser()
    if not p.exists():
        raise EdgeError(f"no artifact or export folder at {p}",
                        "pass a .tflite / .onnx / .mlpackage, an export folder, or MODEL --target T to export first")
    if p.is_dir() and (p / "manifest.json").is_file():
        return [_from_manifest(p)]
    if p.is_dir() and p.suffix not in TARGET_SUFFIXES:
        found = sorted(m.parent for m in p.rglob("manifest.json"))
        if not found:
            raise EdgeError(f"{p} holds no manifest.json and no model file",
                            "pass an export folder (OUT/<model>/<target>-<precision>) or a model file")
        return [_from_manifest(d) for d in found]
    target = TARGET_SUFFIXES.get(p.suffix.lower())
    if target is None:
        raise EdgeError(f"{p.name}: unknown model format {p.suffix!r}", "expected .tflite, .onnx or .mlpackage")
    return [Artifact(path=p, target=target, sha256=sha256_path(p), size_bytes=_size(p))]


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _from_manifest(d: Path) -> Artifact:
    try:
        man = json.loads((d / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise EdgeError(f"{d / 'manifest.json'} is not valid JSON: {e}") from None
    art = man.get("artifact") or {}
    f = d / art.get("file", "")
    if not art.get("file") or not f.exists():
        raise EdgeError(f"{d}: manifest names artifact {art.get('file')!r}, which is missing",
                        "re-run edge export for this model")
    target = man.get("target") or TARGET_SUFFIXES.get(f.suffix.lower())
    sha = sha256_path(f)
    if art.get("sha256") and art["sha256"] != sha:
        raise EdgeError(f"{f} does not match the sha256 in its manifest", "the file changed after export; re-export it")
    return Artifact(path=f, target=target, sha256=sha, size_bytes=_size(f), precision=man.get("precision"),
                    model=man.get("model"), manifest=man, export_dir=d)


# ------------------------------------------------------------------------------------------- measurements
# Each trial times at least `runs` inferences and at least this many seconds, as benchmark_model's default
# --min_secs=1. A device whose speed switches between levels for a second or so at a time (this project's 2-core
# VM) puts a 50-run trial of a 5 ms network (a quarter second) wholly on one level or the other, while a 1-second
# trial averages over such swings; phases that last many seconds remain (benchmarks/results/trial_length.md).
DEFAULT_MIN_SECONDS = 1.0


@dataclass
class BenchSpec:
    """How to run: the same options on every device."""

    runtime: str | None = None  # litert|onnxruntime|coreml|benchmark_model|benchmark_litert_model|onnxruntime_perf_test
    delegate: str | None = None
    threads: int = 1
    runs: int = 50
    warmup: int = 10
    min_seconds: float = DEFAULT_MIN_SECONDS
    cores: str | None = "big"
    op_profile: bool = False
    binary: str | None = None  # a benchmark binary: local path or device:/path

    def delegate_for(self, target: str) -> str:
        d = (self.delegate or DEFAULT_DELEGATE[target]).lower()
        if d not in DELEGATES:
            raise EdgeError(f"unknown delegate {d!r}", f"use one of: {', '.join(DELEGATES)}")
        return d


@dataclass
class Measurement:
    """One trial as a device reports it; bench.py adds identity, thermal state and time."""

    runtime: str
    delegate: str | None
    latency_ms: dict[str, float | None]
    samples_ms: list[float] = field(default_factory=list)
    runs: int | None = None
    peak_memory_mb: float | None = None
    delegate_coverage: dict[str, Any] | None = None
    op_profile: list[dict[str, Any]] | None = None
    cpu_mask: str | None = None
    raw_output: str | None = None
    raw_files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class ThermalState:
    temperature_c: float | None = None
    max_freq_khz: dict[str, int] | None = None
    zones: dict[str, float] = field(default_factory=dict)
    battery_c: float | None = None


# ------------------------------------------------------------------------------------------- the interface
class Device(ABC):
    kind: ClassVar[str]

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.runtime_name: str | None = None  # set by prepare: what will time the artifact

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    def name(self) -> str:
        return self.profile.name

    def describe(self) -> dict[str, Any]:
        """What a trial record says about its device; a profile's ``same_kind_as`` travels with it, so that
        ``edge claims`` can let a named profile stand in for the device a paper names."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "name": self.name}
        if self.profile.source:
            out["profile"] = {"name": self.profile.name, "source": self.profile.source}
        kinds = self.profile.extra.get("same_kind_as")
        if kinds:
            out["same_kind_as"] = [kinds] if isinstance(kinds, str) else list(kinds)
        return out

    @abstractmethod
    def open(self) -> None:
        """Connect and check the device is there; raise DeviceError if not."""

    @abstractmethod
    def state(self) -> str:
        """'device' when usable, else a short word (offline, unauthorized, unreachable, ...)."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]: ...

    @abstractmethod
    def thermal(self) -> ThermalState: ...

    @abstractmethod
    def prepare(self, artifact: Artifact, spec: BenchSpec) -> None:
        """Copy what the trials need (model, binary or runner) and check it can run."""

    @abstractmethod
    def run_trial(self, artifact: Artifact, spec: BenchSpec) -> Measurement: ...

    def close(self) -> None:  # noqa: B027 - optional hook; most transports hold nothing open
        """Release what ``open`` took."""


# ------------------------------------------------------------------------------------- Linux sysfs probing
SYSFS_SCRIPT = r"""
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -d "$c" ] || continue
  printf 'cpu\t%s\t%s\t%s\t%s\t%s\t%s\n' "${c##*/cpu}" \
    "$(cat "$c/cpufreq/scaling_governor" 2>/dev/null)" "$(cat "$c/cpufreq/cpuinfo_max_freq" 2>/dev/null)" \
    "$(cat "$c/cpufreq/scaling_max_freq" 2>/dev/null)" "$(cat "$c/cpufreq/scaling_cur_freq" 2>/dev/null)" \
    "$(cat "$c/cpu_capacity" 2>/dev/null)"
done
for z in /sys/class/thermal/thermal_zone*; do
  [ -d "$z" ] || continue
  printf 'tz\t%s\t%s\t%s\n' "${z##*/}" "$(cat "$z/type" 2>/dev/null)" "$(cat "$z/temp" 2>/dev/null)"
done
command -v taskset >/dev/null 2>&1 && printf 'tool\ttaskset\n'
grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*:[[:space:]]*/isa\t/'
"""

# CPU features that decide which int8 / fp16 kernels a runtime can pick (x86 /proc/cpuinfo "flags", ARM
# "Features"): the same int8 file runs at very different speed-ups with and without them
# (benchmarks/int8_amx.py: AMX against VNNI on one Xeon), so results are comparable only alongside them.
KERNEL_CPU_FEATURES = frozenset({
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
    "amx_bf16", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme", "sme2"})


class SysInfo(NamedTuple):
    cpus: dict[str, dict[str, Any]]
    zones: dict[str, dict[str, Any]]
    tools: set[str]
    cpu_features: list[str] | None  # None: the CPU did not say (no /proc/cpuinfo, e.g. macOS)


def _int(s: str) -> int | None:
    try:
        return int(s.strip())
    except ValueError:
        return None


def parse_sysfs(text: str) -> SysInfo:
    """Cpus by id, thermal zones by name, tools and kernel-relevant CPU features from SYSFS_SCRIPT's output."""
    cpus: dict[str, dict[str, Any]] = {}
    zones: dict[str, dict[str, Any]] = {}
    tools: set[str] = set()
    features: list[str] | None = None
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "cpu" and len(parts) >= 7 and parts[1].isdigit():
            cpus[parts[1]] = {"governor": parts[2] or None, "cpuinfo_max_freq_khz": _int(parts[3]),
                              "scaling_max_freq_khz": _int(parts[4]), "cur_freq_khz": _int(parts[5]),
                              "capacity": _int(parts[6])}
        elif parts[0] == "tz" and len(parts) >= 4:
            t = _int(parts[3])
            zones[parts[1]] = {"type": parts[2], "temp_c": None if t is None else (t / 1000.0 if abs(t) > 200 else
                                                                                   float(t))}
        elif parts[0] == "tool" and len(parts) >= 2:
            tools.add(parts[1])
        elif parts[0] == "isa" and len(parts) >= 2:
            features = sorted(KERNEL_CPU_FEATURES.intersection(parts[1].split()))
    cpus = dict(sorted(cpus.items(), key=lambda kv: int(kv[0])))
    return SysInfo(cpus, zones, tools, features)


_HOT_ZONE_WORDS = ("cpu", "soc", "tsens", "x86_pkg", "cluster", "big", "little", "apc", "mtktscpu")


def pick_temperature(zones: dict[str, dict[str, Any]], battery_c: float | None) -> float | None:
    """The battery's temperature on phones (what cool-down policies watch), else the hottest CPU zone."""
    if battery_c is not None:
        return battery_c
    temps = [(z["type"] or "", z["temp_c"]) for z in zones.values() if z.get("temp_c") is not None]
    cpu = [t for kind, t in temps if any(w in kind.lower() for w in _HOT_ZONE_WORDS)]
    pool = cpu or [t for _, t in temps]
    return max(pool) if pool else None


def select_cpus(cores: str | None, cpus: dict[str, dict[str, Any]]) -> tuple[list[int] | None, str]:
    """CPU ids to pin to for ``--cores`` and a note; None means run unpinned.

    ``big``: every core faster than the slowest cluster (by cpuinfo_max_freq, else cpu_capacity);
    ``prime``: only the fastest cluster; ``all``: no pinning. Homogeneous CPUs are left unpinned.
    """
    ids = [int(c) for c in cpus]
    if cores in (None, "all", "none"):
        return None, "unpinned"
    explicit = cpus_from_option(cores, ids)
    if explicit is not None:
        missing = [c for c in explicit if ids and c not in ids]
        if missing:
            raise EdgeError(f"--cores {cores}: CPU(s) {missing} do not exist on this device (it has {len(ids)})")
        return explicit, f"cores {cores}"
    key = {int(c): v.get("cpuinfo_max_freq_khz") or v.get("capacity") for c, v in cpus.items()}
    if not key or any(v is None for v in key.values()) or len(set(key.values())) < 2:
        return None, "all cores alike (or no cpufreq): unpinned"
    lo, hi = min(key.values()), max(key.values())
    chosen = sorted(c for c, v in key.items() if (v > lo if cores == "big" else v == hi))
    return chosen, f"{cores} cores {_cpu_list(chosen)} (max {hi} kHz)"


def cpu_mask(cpu_ids: list[int]) -> str:
    return format(sum(1 << c for c in cpu_ids), "x")


def _cpu_list(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


# ------------------------------------------------------------------------------------------------ ELF / ABI
ELF_MACHINES = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86", 243: "riscv64", 8: "mips"}
UNAME_ABI = {"aarch64": "arm64-v8a", "arm64": "arm64-v8a", "armv8l": "armeabi-v7a", "armv7l": "armeabi-v7a",
             "x86_64": "x86_64", "amd64": "x86_64", "i686": "x86", "i386": "x86", "riscv64": "riscv64"}


def elf_abi(path: str | Path) -> str | None:
    """The Android ABI an ELF executable is built for, from its header's e_machine; None if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    machine = struct.unpack(endian + "H", head[18:20])[0]
    return ELF_MACHINES.get(machine, f"e_machine {machine}")


def check_abi(binary: str | Path, device_abis: list[str], where: str) -> None:
    abi = elf_abi(binary)
    if abi is None or not device_abis:
        return
    if abi not in device_abis:
        raise DeviceError(
            f"{Path(binary).name} is built for {abi} but {where} runs {', '.join(device_abis)}",
            f"use the {device_abis[0]} build of {Path(binary).name}")


EXEC_ERRORS = ("Exec format error", "not executable", "cannot execute binary file", "wrong ELF class",
               "has unexpected e_machine", "cannot execute: required file not found")


# --------------------------------------------------------------------------------------- remote devices
@dataclass
class ShellResult:
    rc: int
    out: str
    err: str = ""


SIGNALS = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


class RemoteDevice(Device):
    """A device reached through a shell (adb or ssh). Subclasses implement the transport primitives."""

    default_workdir: ClassVar[str] = "edge-bench"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.workdir = profile.workdir or self.default_workdir
        self._sys: tuple[dict, dict, set] | None = None
        self._pushed: dict[str, str] = {}  # local sha/path -> remote path
        self._plan: dict[str, Any] = {}
        self.timeout_s = profile.timeout_s

    # --- transport primitives ----------------------------------------------------------------------
    @abstractmethod
    def _run_shell(self, command: str, timeout: float) -> tuple[int, str, str]:
        """Run one command line on the device; return (transport rc, stdout, stderr)."""

    @abstractmethod
    def push(self, local: str | Path, remote: str) -> None: ...

    @abstractmethod
    def pull(self, remote: str, local: str | Path) -> None: ...

    def dropped(self, what: str) -> DeviceError:
        return DeviceError(f"{self.id} dropped the connection during {what}",
                           "reconnect the device and rerun with --resume to keep the trials already measured")

    def shell(self, script: str, what: str = "a shell command", timeout: float | None = None) -> ShellResult:
        """Run ``script`` and return its exit status; a missing end marker means the device dropped.

        adb exits 0 when a connection drops mid-command, so the status comes from an echoed sentinel.
        """
        mark = f"__EDGE_END_{secrets.token_hex(4)}__"
        line = f"( {script}\n); __rc=$?; printf '\\n{mark} %d\\n' \"$__rc\""
        rc, out, err = self._run_shell(line, timeout or self.timeout_s)
        idx = out.rfind(mark)
        if idx < 0:
            self._transport_failed(rc, err, what)
            raise self.dropped(what)
        tail = out[idx + len(mark):].split()
        body = out[:idx]
        body = body[:-1] if body.endswith("\n") else body
        return ShellResult(int(tail[0]) if tail else -1, body, err)

    def _transport_failed(self, rc: int, err: str, what: str) -> None:
        """Raise a specific error if the transport said why it failed (overridden per transport)."""

    def q(self, path: str) -> str:
        return shlex.quote(path)

    def remote(self, name: str) -> str:
        return f"{self.workdir.rstrip('/')}/{name}"

    # --- probing -------------------------------------------------------------------------------------
    def sysinfo(self, refresh: bool = False) -> SysInfo:
        if self._sys is None or refresh:
            res = self.shell(SYSFS_SCRIPT, "probing cpufreq and thermal zones", timeout=60)
            self._sys = parse_sysfs(res.out)
        return self._sys

    def battery_c(self) -> float | None:
        return None

    def thermal(self) -> ThermalState:
        cpus, zones, _, _ = self.sysinfo(refresh=True)
        battery = self.battery_c()
        freq = {c: v["scaling_max_freq_khz"] for c, v in cpus.items() if v.get("scaling_max_freq_khz")}
        return ThermalState(temperature_c=pick_temperature(zones, battery), max_freq_khz=freq or None,
                            zones={k: v["temp_c"] for k, v in zones.items() if v["temp_c"] is not None},
                            battery_c=battery)

    def cpu_fingerprint(self) -> dict[str, Any]:
        cpus, zones, tools, features = self.sysinfo()
        return {
            "cpu_features": features,
            "cpus": {c: {"governor": v["governor"], "max_freq_khz": v["cpuinfo_max_freq_khz"],
                         "capacity": v["capacity"]} for c, v in cpus.items()},
            "thermal_zones": {k: {"type": v["type"], "temp_c": v["temp_c"]} for k, v in zones.items()},
            "taskset": "taskset" in tools,
        }

    def abis(self) -> list[str]:
        return []

    # --- benchmark binaries ----------------------------------------------------------------------------
    def binary_kind(self, artifact: Artifact, spec: BenchSpec) -> str | None:
        """Which benchmark binary runs this artifact, or None for the runner (ssh only)."""
        rt = spec.runtime
        if rt in ("benchmark_model", "benchmark_litert_model", "onnxruntime_perf_test"):
            return rt
        if rt in ("litert", "onnxruntime", "coreml"):
            return None
        names = BINARY_FOR.get(artifact.target, ())
        for n in names:
            if spec.binary or n in self.profile.binaries or self._cached_binary(n):
                return n
        return names[0] if names and spec.binary else None

    def _cached_binary(self, name: str) -> Path | None:
        import os
        base = Path(os.environ.get("EDGE_BIN_CACHE", "~/.cache/edge/bin")).expanduser()
        for abi in self.abis() or [""]:
            p = base / abi / name
            if p.is_file():
                return p
        return None

    def resolve_binary(self, kind: str, spec: BenchSpec) -> tuple[str | None, str | None]:
        """(local path to push | None, path on the device | None) for a benchmark binary."""
        src = spec.binary or self.profile.binaries.get(kind)
        if src is None:
            cached = self._cached_binary(kind)
            src = str(cached) if cached else None
        if src is None:
            raise EdgeError(
                f"no {kind} binary for {self.id}",
                f"pass --binary PATH, set [binaries] {kind} = \"PATH\" in a device profile, or put it in "
                f"~/.cache/edge/bin/{(self.abis() or ['<abi>'])[0]}/{kind}")
        if src.startswith("device:"):
            return None, src[len("device:"):]
        local = Path(src).expanduser()
        if not local.is_file():
            raise EdgeError(f"{kind} binary not found: {local}")
        return str(local), None

    def push_once(self, local: str | Path, name: str) -> str:
        key = f"{Path(local).resolve()}:{Path(local).stat().st_mtime_ns}:{name}"
        if key not in self._pushed:
            dest = self.remote(name)
            self.push(local, dest)
            self._pushed[key] = dest
        return self._pushed[key]

    def ensure_workdir(self) -> None:
        res = self.shell(f"mkdir -p {self.q(self.workdir)}", "creating the work folder", timeout=60)
        if res.rc != 0:
            raise DeviceError(f"cannot create {self.workdir} on {self.id}: {res.out.strip() or res.err.strip()}",
                              "set workdir in the device profile to a writable folder")

    def prepare_binary(self, artifact: Artifact, spec: BenchSpec, kind: str) -> None:
        local, on_device = self.resolve_binary(kind, spec)
        self.ensure_workdir()
        if local:
            check_abi(local, self.abis(), self.id)
            on_device = self.push_once(local, Path(local).name)
            self.shell(f"chmod 755 {self.q(on_device)}", "chmod of the benchmark binary", timeout=60)
        model = self.push_once(artifact.path, artifact.path.name)
        cpus, _, tools, _ = self.sysinfo()
        pin, note = select_cpus(spec.cores, cpus)
        if pin is not None and "taskset" not in tools:
            note = f"taskset missing on the device: unpinned (wanted {note})"
            pin = None
        self._plan = {"kind": kind, "binary": on_device, "model": model, "pin": pin, "pin_note": note}
        self.runtime_name = kind

    def binary_command(self, artifact: Artifact, spec: BenchSpec) -> tuple[str, str | None]:
        """The shell line that runs the benchmark binary, and the device path of its op profile."""
        p = self._plan
        kind, delegate = p["kind"], spec.delegate_for(artifact.target)
        prof = None
        if kind in ("benchmark_model", "benchmark_litert_model"):
            model_flag = "--graph=" if kind == "benchmark_model" else "--model="
            argv = [p["binary"], model_flag + p["model"], f"--num_threads={spec.threads}",
                    f"--warmup_runs={spec.warmup}", f"--num_runs={spec.runs}", f"--min_secs={spec.min_seconds:g}",
                    "--warmup_min_secs=0"]
            argv += TFLITE_DELEGATE_FLAGS[kind].get(delegate) or _bad_delegate(kind, delegate)
            if kind == "benchmark_model":
                argv.append("--report_peak_memory_footprint=true")
            if spec.op_profile:
                prof = self.remote("op_profile.csv")
                argv += ["--enable_op_profiling=true", f"--profiling_output_csv_file={prof}"]
        elif kind == "onnxruntime_perf_test":
            ep = ORT_EP.get(delegate) or _bad_delegate(kind, delegate)
            argv = [p["binary"], "-e", ep, "-m", "times", "-r", str(spec.runs), "-x", str(spec.threads), "-y", "1",
                    "-I", "-s"]
            if spec.op_profile:
                prof = self.remote("ort_profile")
                argv += ["-p", prof]
            argv.append(p["model"])
        else:  # pragma: no cover - guarded by binary_kind
            raise EdgeError(f"unknown benchmark binary {kind}")
        if p["pin"] is not None:
            argv = ["taskset", cpu_mask(p["pin"]), *argv]
        cmd = " ".join(shlex.quote(a) for a in argv)
        env = f"LD_LIBRARY_PATH={self.q(self.workdir)}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
        clean = f"rm -f {self.q(prof)}*; " if prof else ""
        return f"cd {self.q(self.workdir)} && {clean}{env} {cmd} 2>&1", prof

    def run_binary_trial(self, artifact: Artifact, spec: BenchSpec) -> Measurement:
        p = self._plan
        line, prof = self.binary_command(artifact, spec)
        name = Path(p["binary"]).name
        res = self.shell(line, f"{name} on {artifact.path.name}")
        out = res.out
        low = out.lower()
        if res.rc in (126, 127) or any(e.lower() in low for e in EXEC_ERRORS):
            last = _last_line(out)
            if res.rc == 127 and "not found" in low and not any(e.lower() in low for e in EXEC_ERRORS):
                raise DeviceError(f"{name} not found on {self.id} at {p['binary']}: {last}",
                                  "check the binary path in the device profile")
            raise DeviceError(f"{name} cannot run on {self.id} ({', '.join(self.abis()) or 'unknown ABI'}): {last}",
                              "it is probably built for another CPU architecture (ABI) or C library; use the build "
                              "for this device")
        if res.rc != 0:
            sig = res.rc - 128 if res.rc > 128 else None
            how = f"was killed by signal {sig} ({SIGNALS.get(sig, '?')})" if sig else f"exited with status {res.rc}"
            raise DeviceError(f"{name} {how} on {self.id} while running {artifact.path.name}: {_last_line(out)}",
                              "rerun with --debug for its full output; a crash on load often means an op or "
                              "delegate the binary does not support")
        fmt = {"onnxruntime_perf_test": "perf_test"}.get(p["kind"], p["kind"])
        try:
            parsed = parsers.parse_output(out, fmt)
        except EdgeError as e:
            raise DeviceError(f"{name} on {self.id}: {e.message}", f"its last line: {_last_line(out)}") from None
        m = Measurement(runtime=p["kind"], delegate=spec.delegate_for(artifact.target),
                        latency_ms={k: parsed["latency_ms"].get(k) for k in parsers.LATENCY_KEYS},
                        samples_ms=parsed["samples_ms"], runs=parsed["runs"], peak_memory_mb=parsed["peak_memory_mb"],
                        delegate_coverage=parsed["delegate_coverage"], op_profile=parsed["op_profile"],
                        cpu_mask=cpu_mask(p["pin"]) if p["pin"] is not None else None, raw_output=out,
                        notes=list(parsed["notes"]))
        for extra in ("p5", "p95", "p99"):
            if parsed["latency_ms"].get(extra) is not None:
                m.latency_ms[extra] = parsed["latency_ms"][extra]
        if p["pin"] is None and spec.cores not in (None, "all", "none"):
            m.notes.append(f"--cores {spec.cores}: {p['pin_note']}")
        if p["kind"] == "onnxruntime_perf_test" and spec.min_seconds > 0:
            m.notes.append(f"onnxruntime_perf_test takes a run count or a duration, not both: it ran {spec.runs} "
                           f"runs without the {spec.min_seconds:g} s minimum")
        if prof:
            self._pull_profile(prof, m)
        return m

    def _pull_profile(self, prof: str, m: Measurement) -> None:
        import tempfile
        folder, _, stem = prof.rpartition("/")
        listing = self.shell(f"cd {self.q(folder)} && for f in {self.q(stem)}*; do [ -f \"$f\" ] && "
                             "printf '%s\\n' \"$f\"; done; true", "listing op profiles", timeout=60)
        found = sorted(f for f in listing.out.split("\n") if f.strip())
        if not found:
            m.notes.append("no op profile file was written; using the tables in the output, if any")
            return
        remote = f"{folder}/{found[-1]}"
        with tempfile.TemporaryDirectory() as td:
            local = Path(td) / "profile"
            self.pull(remote, local)
            data = local.read_bytes()
        m.raw_files[found[-1]] = data
        rows = parsers.op_profile_from_file(data.decode("utf-8", "replace"))
        if rows:
            m.op_profile = rows
            if remote.endswith(".json"):
                m.delegate_coverage = m.delegate_coverage or _ort_coverage(rows, m.delegate)


TFLITE_DELEGATE_FLAGS = {
    "benchmark_model": {"cpu": ["--use_xnnpack=false"], "xnnpack": ["--use_xnnpack=true"],
                        "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"], "hexagon": ["--use_hexagon=true"]},
    "benchmark_litert_model": {"cpu": [], "xnnpack": [], "gpu": ["--use_gpu=true"], "npu": ["--use_npu=true"]},
}
ORT_EP = {"cpu": "cpu", "xnnpack": "xnnpack", "nnapi": "nnapi", "qnn": "qnn", "npu": "qnn", "coreml": "coreml",
          "coreml-all": "coreml"}


def _bad_delegate(kind: str, delegate: str) -> list[str]:
    ok = TFLITE_DELEGATE_FLAGS.get(kind) or ORT_EP
    raise EdgeError(f"{kind} has no delegate {delegate!r}", f"use one of: {', '.join(ok)}")


def _ort_coverage(rows: list[dict[str, Any]], delegate: str | None) -> dict[str, Any] | None:
    ep = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider", "nnapi": "NnapiExecutionProvider",
          "qnn": "QNNExecutionProvider", "npu": "QNNExecutionProvider", "coreml": "CoreMLExecutionProvider",
          "coreml-all": "CoreMLExecutionProvider"}.get(delegate or "cpu")
    if not rows or ep is None:
        return None
    return {"delegated": sum(1 for r in rows if r.get("provider") == ep), "total": len(rows), "delegate": ep}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"
