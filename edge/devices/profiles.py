"""Device profiles (TOML) and device specs (``host``, ``adb[:SERIAL]``, ``ssh://[user@]host[:port]``, a profile).

A profile names a device once, so farms and boards are one word on the command line::

    # ~/.config/edge/devices/pixel7.toml
    name = "pixel7"
    transport = "adb"                 # host | adb | ssh
    serial = "28011FDH2000A1"         # adb; omit when exactly one phone is attached
    server = "tcp:farm.example:5037"  # optional remote adb server (also ADB_SERVER_SOCKET / -H -P)
    cores = "big"                     # big | prime | all | hex mask (f0) | list (4-7)
    workdir = "/data/local/tmp/edge"

    [binaries]                        # per runtime: a local path pushed before the run,
    benchmark_model = "~/android/arm64/benchmark_model"      # or "device:/path" already on the device
    onnxruntime_perf_test = "~/android/arm64/onnxruntime_perf_test"

    [thermal]
    max_temp_c = 37                   # wait before each trial until the device is this cool
    cooldown_s = 0                    # or/and sleep this long before each trial
    poll_s = 5
    timeout_s = 900

ssh profiles add ``host = "user@board"``, ``port``, ``identity``, ``known_hosts``, ``ssh_config``, ``python``.
Profiles are looked up in ``--profiles DIR``, ``$EDGE_DEVICES_DIR`` and ``~/.config/edge/devices``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

TRANSPORTS = ("host", "adb", "ssh")
KNOWN_KEYS = {"name", "transport", "serial", "server", "adb", "host", "user", "port", "identity", "known_hosts",
              "ssh_config", "ssh_options", "python", "workdir", "cores", "binaries", "thermal", "timeout_s",
              "description", "same_kind_as"}


@dataclass
class Thermal:
    max_temp_c: float | None = None
    cooldown_s: float = 0.0
    poll_s: float = 5.0
    timeout_s: float = 900.0


@dataclass
class Profile:
    name: str
    transport: str
    serial: str | None = None
    server: str | None = None
    adb: str = "adb"
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    python: str = "python3"
    workdir: str | None = None
    cores: str | None = None
    binaries: dict[str, str] = field(default_factory=dict)
    thermal: Thermal = field(default_factory=Thermal)
    timeout_s: float = 1800.0
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        if self.transport == "adb":
            return f"adb:{self.serial}" if self.serial else "adb"
        if self.transport == "ssh":
            user = f"{self.user}@" if self.user else ""
            return f"ssh://{user}{self.host}" + (f":{self.port}" if self.port else "")
        return "host"


def search_dirs(extra: str | os.PathLike[str] | None = None) -> list[Path]:
    dirs = []
    if extra:
        dirs.append(Path(extra).expanduser())
    if os.environ.get("EDGE_DEVICES_DIR"):
        dirs.append(Path(os.environ["EDGE_DEVICES_DIR"]).expanduser())
    dirs.append(Path("~/.config/edge/devices").expanduser())
    return dirs


def load_profile(path: str | os.PathLike[str]) -> Profile:
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise EdgeError(f"device profile not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise EdgeError(f"device profile {p} is not valid TOML: {e}", "see docs for the profile format") from None
    return profile_from_dict(data, source=str(p), default_name=p.stem)


def profile_from_dict(data: dict[str, Any], source: str | None = None, default_name: str = "device") -> Profile:
    where = f"device profile {source}" if source else "device profile"
    transport = data.get("transport")
    if transport not in TRANSPORTS:
        raise EdgeError(f"{where}: transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise EdgeError(f"{where}: unknown key(s) {', '.join(unknown)}", f"known keys: {', '.join(sorted(KNOWN_KEYS))}")
    th = data.get("thermal", {}) or {}
    bad_th = sorted(set(th) - {"max_temp_c", "cooldown_s", "poll_s", "timeout_s"})
    if bad_th:
        raise EdgeError(f"{where}: unknown [thermal] key(s) {', '.join(bad_th)}")
    if transport == "ssh" and not data.get("host"):
        raise EdgeError(f"{where}: an ssh profile needs host = \"[user@]hostname\"")
    host, user = data.get("host"), data.get("user")
    if host and "@" in host and not user:
        user, host = host.split("@", 1)
    cores = data.get("cores")
    if cores is not None:
        cores = str(cores)
        parse_cores_option(cores)
    return Profile(
        name=str(data.get("name", default_name)), transport=transport, serial=data.get("serial"),
        server=data.get("server"), adb=data.get("adb", "adb"), host=host, user=user,
        port=int(data["port"]) if data.get("port") else None, identity=data.get("identity"),
        known_hosts=data.get("known_hosts"), ssh_config=data.get("ssh_config"),
        ssh_options=list(data.get("ssh_options", [])), python=data.get("python", "python3"),
        workdir=data.get("workdir"), cores=cores, binaries=dict(data.get("binaries", {})),
        thermal=Thermal(**{k: float(v) for k, v in th.items()}), timeout_s=float(data.get("timeout_s", 1800)),
        source=source, extra={k: data[k] for k in ("description", "same_kind_as") if k in data},
    )


def list_profiles(extra_dir: str | os.PathLike[str] | None = None) -> list[Profile]:
    seen: dict[str, Profile] = {}
    for d in search_dirs(extra_dir):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                prof = load_profile(f)
                seen.setdefault(prof.name, prof)
    return list(seen.values())


_SSH_RE = re.compile(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:/]+)(?::(?P<port>\d+))?/?$")


def parse_spec(spec: str, profiles_dir: str | os.PathLike[str] | None = None) -> Profile:
    """``host`` | ``adb`` | ``adb:SERIAL`` | ``ssh://[user@]host[:port]`` | profile name | profile.toml path."""
    s = spec.strip()
    if s in ("host", "local", ""):
        return Profile(name="host", transport="host")
    if s == "adb":
        return Profile(name="adb", transport="adb")
    if s.startswith("adb:"):
        serial = s[4:]
        if not serial:
            raise EdgeError(f"device {spec!r}: empty serial", "use adb:SERIAL as printed by `adb devices`")
        return Profile(name=f"adb:{serial}", transport="adb", serial=serial)
    if s.startswith("ssh://"):
        m = _SSH_RE.match(s)
        if not m:
            raise EdgeError(f"device {spec!r} is not ssh://[user@]host[:port]")
        return Profile(name=s, transport="ssh", host=m.group("host").strip("[]"), user=m.group("user"),
                       port=int(m.group("port")) if m.group("port") else None)
    if s.endswith(".toml") or os.sep in s:
        return load_profile(s)
    for d in search_dirs(profiles_dir):
        f = d / f"{s}.toml"
        if f.is_file():
            return load_profile(f)
    names = [p.name for p in list_profiles(profiles_dir)]
    hint = (f"configured profiles: {', '.join(names)}" if names else
            "write a profile to ~/.config/edge/devices/NAME.toml, or use host, adb[:SERIAL], ssh://user@host")
    raise EdgeError(f"unknown device {spec!r}", hint)


def parse_cores_option(cores: str | None) -> str | None:
    """Validate ``--cores``: big | prime | all | hex mask | CPU list; returns it normalised."""
    if cores is None:
        return None
    c = cores.strip().lower()
    if c in ("big", "prime", "all", "none"):
        return c
    if re.fullmatch(r"(0x)?[0-9a-f]+", c) and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", c):
        return c.removeprefix("0x")
    if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", c):
        return c
    raise EdgeError(f"--cores {cores!r} is not big, prime, all, a hex mask (f0) or a CPU list (4-7)")


def cpus_from_option(cores: str, cpu_ids: list[int]) -> list[int] | None:
    """A concrete hex mask or CPU list to CPU ids (None for big/prime/all, which need cpufreq)."""
    if cores in ("big", "prime", "all", "none"):
        return None
    if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", cores) and ("," in cores or "-" in cores):
        out = []
        for part in cores.split(","):
            a, _, b = part.partition("-")
            out.extend(range(int(a), int(b or a) + 1))
        return out
    mask = int(cores, 16)
    return [i for i in range(max(cpu_ids + [mask.bit_length()]) + 1) if mask >> i & 1]
