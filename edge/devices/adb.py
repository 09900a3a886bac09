"""Android phones through the real ``adb`` client: push, run a benchmark binary pinned to big cores, pull.

Everything reaching the phone's shell is one command line built with ``shlex.quote``. adb exits 0 when
the connection drops mid-command, so ``RemoteDevice.shell`` checks an echoed end marker; ``adb connect``
also exits 0 when it fails, so presence is judged from ``adb get-state``. A remote adb server (device
farms) is reached with ``server = "tcp:HOST:PORT"`` / ``--adb-server`` (passed as ``-H``/``-P``) or the
``ADB_SERVER_SOCKET`` environment variable, which adb reads itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge.devices.base import BINARY_FOR, Artifact, BenchSpec, Measurement, RemoteDevice
from edge.devices.profiles import Profile
from edge.errors import DeviceError, EdgeError

PROPS = ("ro.build.fingerprint", "ro.product.model", "ro.product.manufacturer", "ro.soc.model",
         "ro.soc.manufacturer", "ro.board.platform", "ro.hardware", "ro.build.version.release",
         "ro.build.version.sdk", "ro.product.cpu.abi", "ro.product.cpu.abilist")


def _server_args(server: str | None) -> list[str]:
    """``tcp:HOST:PORT`` | ``HOST:PORT`` | ``PORT`` -> adb's -H/-P options."""
    if not server:
        return []
    s = server.removeprefix("tcp:")
    host, _, port = s.rpartition(":")
    if not port.isdigit():
        raise EdgeError(f"adb server {server!r} is not HOST:PORT", "e.g. --adb-server farm.example:5037")
    return (["-H", host] if host else []) + ["-P", port]


class AdbDevice(RemoteDevice):
    kind = "adb"
    default_workdir = "/data/local/tmp/edge"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.serial = profile.serial
        self.adb = profile.adb or "adb"
        self._props: dict[str, str] | None = None

    @property
    def id(self) -> str:
        return f"adb:{self.serial}" if self.serial else "adb"

    # --- the adb client ------------------------------------------------------------------------------
    def _base(self, with_serial: bool = True) -> list[str]:
        exe = shutil.which(self.adb) or (self.adb if Path(self.adb).is_file() else None)
        if exe is None:
            raise EdgeError(f"adb not found ({self.adb})",
                            "install Android platform-tools (Debian: apt-get install adb) or set adb = PATH in "
                            "the device profile")
        args = [exe, *_server_args(self.profile.server)]
        if with_serial and self.serial:
            args += ["-s", self.serial]
        return args

    def adb_cmd(self, *args: str, timeout: float = 60, with_serial: bool = True) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([*self._base(with_serial), *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            raise DeviceError(f"adb {' '.join(args[:1])} on {self.id} timed out after {timeout:.0f} s",
                              "check the cable / network and `adb devices`") from None

    def _run_shell(self, command: str, timeout: float) -> tuple[int, str, str]:
        try:
            r = subprocess.run([*self._base(), "shell", command], capture_output=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"a command on {self.id} ran longer than {timeout:.0f} s",
                              "raise timeout_s in the device profile, or use fewer --runs") from None
        return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")

    def _transport_failed(self, rc: int, err: str, what: str) -> None:
        low = err.lower()
        if "not found" in low and "device" in low or "no devices" in low:
            raise DeviceError(f"adb device {self.serial or ''} is not there (during {what})".replace("  ", " "),
                              "check `adb devices`; reconnect it and rerun with --resume")
        if "unauthorized" in low:
            raise DeviceError(f"{self.id} is unauthorized", "accept the USB debugging prompt on the phone")

    def push(self, local: str | Path, remote: str) -> None:
        r = self.adb_cmd("push", str(local), remote, timeout=max(120.0, self.timeout_s / 4))
        if r.returncode != 0 or "error:" in r.stderr.lower():
            raise DeviceError(f"adb push {Path(local).name} to {self.id} failed: {_tail(r.stderr or r.stdout)}",
                              "check free space and that the device is still connected")

    def pull(self, remote: str, local: str | Path) -> None:
        r = self.adb_cmd("pull", remote, str(local), timeout=max(120.0, self.timeout_s / 4))
        if r.returncode != 0:
            raise DeviceError(f"adb pull {remote} from {self.id} failed: {_tail(r.stderr or r.stdout)}")

    # --- presence ------------------------------------------------------------------------------------
    def list_attached(self) -> list[tuple[str, str, str]]:
        """(serial, state, description) for each device the adb server knows."""
        r = self.adb_cmd("devices", "-l", with_serial=False, timeout=30)
        if r.returncode != 0:
            raise DeviceError(f"adb devices failed: {_tail(r.stderr)}",
                              "is the adb server reachable? (ADB_SERVER_SOCKET / --adb-server)")
        out = []
        for line in r.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and not line.startswith("*"):
                out.append((parts[0], parts[1], " ".join(parts[2:])))
        return out

    def state(self) -> str:
        if not self.serial:
            return "device" if any(s == "device" for _, s, _ in self.list_attached()) else "not found"
        r = self.adb_cmd("get-state", timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
        err = (r.stderr or "").strip().lower()
        for word in ("unauthorized", "offline", "authorizing", "connecting"):
            if word in err:
                return word
        return "not found"

    def open(self) -> None:
        if not self.serial:
            ready = [s for s, st, _ in self.list_attached() if st == "device"]
            if not ready:
                raise DeviceError("no adb device is connected", "attach a phone with USB debugging on, or "
                                  "`adb connect HOST:PORT`; `adb devices` lists what adb sees")
            if len(ready) > 1:
                raise EdgeError(f"{len(ready)} adb devices are connected ({', '.join(ready)})",
                                "pick one with --device adb:SERIAL (or several --device options)")
            self.serial = ready[0]
            return
        st = self.state()
        if st != "device" and re.fullmatch(r"[\w.\-\[\]:]+:\d+", self.serial):
            # a network device: `adb connect` exits 0 even when it fails, so re-check the state after
            self.adb_cmd("disconnect", self.serial, with_serial=False, timeout=20)
            self.adb_cmd("connect", self.serial, with_serial=False, timeout=30)
            st = self.state()
        if st != "device":
            hint = {"unauthorized": "accept the USB debugging prompt on the phone",
                    "offline": "replug the cable or `adb reconnect`; then rerun (with --resume to keep trials)"}
            raise DeviceError(f"adb device {self.serial} is not there (state: {st})",
                              hint.get(st, "check `adb devices`; for a network device `adb connect HOST:PORT`"))

    # --- facts ---------------------------------------------------------------------------------------
    def props(self) -> dict[str, str]:
        if self._props is None:
            script = "; ".join(f"printf '%s\\t%s\\n' {k} \"$(getprop {k})\"" for k in PROPS)
            res = self.shell(script, "reading getprop", timeout=60)
            self._props = {}
            for line in res.out.splitlines():
                k, _, v = line.partition("\t")
                if k in PROPS:
                    self._props[k] = v.strip()
        return self._props

    def abis(self) -> list[str]:
        p = self.props()
        lst = [a for a in p.get("ro.product.cpu.abilist", "").split(",") if a]
        return lst or ([p["ro.product.cpu.abi"]] if p.get("ro.product.cpu.abi") else [])

    def battery_c(self) -> float | None:
        res = self.shell("dumpsys battery 2>/dev/null", "reading the battery temperature", timeout=60)
        m = re.search(r"^\s*temperature:\s*(-?\d+)", res.out, re.M)
        return int(m.group(1)) / 10.0 if m else None

    @property
    def name(self) -> str:
        if self.profile.source:  # a named profile
            return self.profile.name
        return (self._props or {}).get("ro.product.model") or self.id

    def fingerprint(self) -> dict[str, Any]:
        p = self.props()
        fp = {
            "build_fingerprint": p.get("ro.build.fingerprint"),
            "model": p.get("ro.product.model"),
            "manufacturer": p.get("ro.product.manufacturer"),
            "soc": p.get("ro.soc.model") or p.get("ro.board.platform") or p.get("ro.hardware"),
            "board_platform": p.get("ro.board.platform"),
            "android_version": p.get("ro.build.version.release"),
            "sdk": p.get("ro.build.version.sdk"),
            "abis": self.abis(),
            "battery_temp_c": self.battery_c(),
        }
        fp.update(self.cpu_fingerprint())
        return fp

    # --- trials --------------------------------------------------------------------------------------
    def prepare(self, artifact: Artifact, spec: BenchSpec) -> None:
        if artifact.target == "coreml":
            raise EdgeError("Core ML does not run on Android", "bench the .tflite or .onnx export on the phone")
        if spec.runtime in ("litert", "onnxruntime", "coreml"):
            raise EdgeError(f"adb devices run benchmark binaries, not the {spec.runtime} Python runtime",
                            "use --runtime benchmark_model / benchmark_litert_model / onnxruntime_perf_test")
        kind = self.binary_kind(artifact, spec) or BINARY_FOR[artifact.target][0]
        self.prepare_binary(artifact, spec, kind)

    def run_trial(self, artifact: Artifact, spec: BenchSpec) -> Measurement:
        return self.run_binary_trial(artifact, spec)


def _tail(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"
