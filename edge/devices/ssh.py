"""Boards and Macs over the OpenSSH client, with host-key checking on.

Every connection uses ``BatchMode=yes`` and ``StrictHostKeyChecking=yes`` (with the profile's
``known_hosts`` file if it names one): an unknown or changed host key is an error, never a prompt or a
silent accept. Files go over ``sftp`` in batch mode; commands run under ``sh -c`` with every argument
``shlex.quote``d. The package's ``runner.py`` is copied to the board and times the model with the
board's ONNX Runtime / LiteRT (or Core ML on a Mac), printing the same JSON the host uses; a benchmark
binary named by ``--binary`` or the profile runs instead when given.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge.devices import runner
from edge.devices.base import (
    UNAME_ABI,
    Artifact,
    BenchSpec,
    Measurement,
    RemoteDevice,
    select_cpus,
)
from edge.devices.profiles import Profile
from edge.errors import DeviceError, EdgeError

RUNNER_NAME = "edge_runner.py"
RUNTIME_FOR = {"tflite": "litert", "onnx": "onnxruntime", "coreml": "coreml"}

INFO_SCRIPT = r"""
printf 'uname\t%s\n' "$(uname -srm)"
printf 'ncpu\t%s\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null)"
case "$(uname -s)" in
Darwin)
  printf 'os\tmacOS %s\n' "$(sw_vers -productVersion 2>/dev/null)"
  printf 'cpu\t%s\n' "$(sysctl -n machdep.cpu.brand_string 2>/dev/null)"
  printf 'board\t%s\n' "$(sysctl -n hw.model 2>/dev/null)" ;;
*)
  [ -r /etc/os-release ] && (. /etc/os-release && printf 'os\t%s\n' "$PRETTY_NAME")
  [ -r /proc/device-tree/model ] && printf 'board\t%s\n' "$(tr -d '\000' < /proc/device-tree/model)"
  grep -m1 -i -E '^(model name|hardware|cpu model)' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*:[[:space:]]*/cpu\t/' ;;
esac
"""


def sftp_quote(path: str) -> str:
    """Quote a path for an sftp batch line: double quotes, with \\ and " escaped, glob characters too."""
    out = []
    for ch in str(path):
        if ch in '\\"*?[]':
            out.append("\\")
        out.append(ch)
    return '"' + "".join(out) + '"'


class SshDevice(RemoteDevice):
    kind = "ssh"
    default_workdir = "edge-bench"  # relative to the login folder, for ssh and sftp alike

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self._info: dict[str, str] | None = None
        self._versions: dict[str, Any] | None = None
        self._mode: str | None = None
        self._runner_args: list[str] = []
        self._ctl: str | None = None

    @property
    def id(self) -> str:
        user = f"{self.profile.user}@" if self.profile.user else ""
        port = f":{self.profile.port}" if self.profile.port else ""
        return f"ssh://{user}{self.profile.host}{port}"

    @property
    def dest(self) -> str:
        return f"{self.profile.user}@{self.profile.host}" if self.profile.user else str(self.profile.host)

    # --- the OpenSSH client -------------------------------------------------------------------------
    def _options(self) -> list[str]:
        p = self.profile
        opts: list[str] = []
        if p.ssh_config:
            opts += ["-F", str(Path(p.ssh_config).expanduser())]
        for o in p.ssh_options:  # the user's first: for ssh the first value given for an option wins
            if o.split("=", 1)[0].strip().lower() in ("stricthostkeychecking", "userknownhostsfile", "batchmode"):
                raise EdgeError(f"ssh option {o!r} is not allowed: host-key checking stays on",
                                "add the board's key to a known_hosts file and name it with known_hosts = PATH")
            opts += ["-o", o]
        opts += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15",
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if p.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={_cfg_quote(str(Path(p.known_hosts).expanduser()))}"]
        if p.identity:
            opts += ["-i", str(Path(p.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        # one TCP connection and key exchange for the whole run, not one per command
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir()}/%C", "-o", "ControlPersist=60"]
        return opts

    def _control_dir(self) -> str:
        if self._ctl is None:
            import tempfile
            base = "/tmp" if Path("/tmp").is_dir() else None  # unix socket paths must stay short
            self._ctl = tempfile.mkdtemp(prefix="edge-ssh-", dir=base)
        return self._ctl

    def close(self) -> None:
        if self._ctl is None:
            return
        args = [self._exe("ssh"), *self._options(), "-O", "exit"]
        if self.profile.port:
            args += ["-p", str(self.profile.port)]
        subprocess.run([*args, self.dest], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        shutil.rmtree(self._ctl, ignore_errors=True)
        self._ctl = None

    def _exe(self, name: str) -> str:
        exe = shutil.which(name)
        if exe is None:
            raise EdgeError(f"{name} not found", "install the OpenSSH client (Debian: apt-get install openssh-client)")
        return exe

    def _run_shell(self, command: str, timeout: float) -> tuple[int, str, str]:
        args = [self._exe("ssh"), *self._options()]
        if self.profile.port:
            args += ["-p", str(self.profile.port)]
        # the login shell may not be POSIX (fish, csh): hand the line to sh, quoted as one word
        args += [self.dest, "sh -c " + shlex.quote(command)]
        try:
            r = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"a command on {self.id} ran longer than {timeout:.0f} s",
                              "raise timeout_s in the device profile, or use fewer --runs") from None
        return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")

    def _transport_failed(self, rc: int, err: str, what: str) -> None:
        if rc != 255:
            return
        low = err.lower()
        line = _tail(err)
        if "host key verification failed" in low or "no matching host key" in low or "host key for" in low:
            kh = self.profile.known_hosts or "~/.ssh/known_hosts"
            raise DeviceError(f"{self.id}: the host key is unknown or changed ({line})",
                              f"verify the board's key fingerprint, then add it to {kh} "
                              f"(ssh-keyscan -p {self.profile.port or 22} {self.profile.host})")
        if "permission denied" in low:
            raise DeviceError(f"{self.id}: login refused ({line})",
                              "set identity = PATH to a key the board accepts (BatchMode: no passwords)")
        if any(w in low for w in ("connection refused", "timed out", "could not resolve", "no route",
                                  "network is unreachable", "connection closed", "broken pipe", "reset by peer")):
            raise DeviceError(f"{self.id} is not reachable ({line})",
                              "check the address and that sshd runs; rerun with --resume to keep trials")
        raise DeviceError(f"ssh to {self.id} failed during {what}: {line}")

    def _sftp(self, batch: str, what: str) -> None:
        args = [self._exe("sftp"), "-b", "-", *self._options()]
        if self.profile.port:
            args += ["-P", str(self.profile.port)]
        args.append(self.dest)
        try:
            r = subprocess.run(args, input=batch.encode(), capture_output=True, timeout=max(300.0, self.timeout_s))
        except subprocess.TimeoutExpired:
            raise DeviceError(f"sftp {what} on {self.id} timed out") from None
        if r.returncode != 0:
            err = r.stderr.decode("utf-8", "replace")
            self._transport_failed(255, err, what)
            raise DeviceError(f"sftp {what} on {self.id} failed: {_tail(err)}")

    def push(self, local: str | Path, remote: str) -> None:
        rec = ""
        if Path(local).is_dir():  # an .mlpackage: replace, never nest inside an older copy
            self.shell(f"rm -rf {self.q(remote)}", "removing an older copy", timeout=60)
            rec = "-r "
        self._sftp(f"put -p {rec}{sftp_quote(str(local))} {sftp_quote(remote)}\n", f"copying {Path(local).name}")

    def pull(self, remote: str, local: str | Path) -> None:
        self._sftp(f"get {sftp_quote(remote)} {sftp_quote(str(local))}\n", f"fetching {remote}")

    # --- presence and facts --------------------------------------------------------------------------
    def open(self) -> None:
        self.shell("true", "connecting", timeout=60)

    def state(self) -> str:
        """A one-off check; it leaves no shared connection behind."""
        try:
            self.shell("true", "connecting", timeout=30)
            return "device"
        except DeviceError as e:
            msg = e.message
            return ("host key unknown" if "host key" in msg else "login refused" if "refused" in msg
                    else "unreachable")
        finally:
            self.close()

    def info(self) -> dict[str, str]:
        if self._info is None:
            res = self.shell(INFO_SCRIPT, "reading the system description", timeout=60)
            self._info = {}
            for line in res.out.splitlines():
                k, _, v = line.partition("\t")
                if v.strip() and k not in self._info:
                    self._info[k] = v.strip()
        return self._info

    def abis(self) -> list[str]:
        m = self.info().get("uname", "").split()
        abi = UNAME_ABI.get(m[-1]) if m else None
        return [abi] if abi else []

    def fingerprint(self) -> dict[str, Any]:
        i = self.info()
        fp: dict[str, Any] = {"uname": i.get("uname"), "os": i.get("os"), "board": i.get("board"),
                              "cpu_model": i.get("cpu"), "logical_cpus": int(i["ncpu"]) if i.get("ncpu", "").isdigit()
                              else None, "abis": self.abis()}
        fp.update(self.cpu_fingerprint())
        if self._versions:
            fp["versions"] = self._versions
        return fp

    # --- trials --------------------------------------------------------------------------------------
    def prepare(self, artifact: Artifact, spec: BenchSpec) -> None:
        kind = self.binary_kind(artifact, spec)
        if kind is not None:
            self._mode = "binary"
            self.prepare_binary(artifact, spec, kind)
            return
        self._mode = "runner"
        rt = spec.runtime or RUNTIME_FOR[artifact.target]
        self.runtime_name = rt
        if rt not in runner.MEASURE or RUNTIME_FOR[artifact.target] != rt:
            raise EdgeError(f"runtime {rt} cannot run {artifact.path.name} through edge's runner")
        system = (self.info().get("uname") or "?").split()[0]
        if rt == "coreml" and system != "Darwin":
            raise EdgeError(f"Core ML runs only on macOS; {self.id} runs {system}",
                            "bench the .mlpackage on a Mac (ssh://user@mac), or the .tflite/.onnx on this board")
        self.ensure_workdir()
        script = self.push_once(Path(runner.__file__), RUNNER_NAME)
        model = self.push_once(artifact.path, artifact.path.name)
        py = self.profile.python or "python3"
        res = self.shell(f"cd {self.q(self.workdir)} && {self.q(py)} {self.q(RUNNER_NAME)} --versions",
                         "checking Python on the device", timeout=120)
        got = _runner_json(res.out)
        if res.rc != 0 or got is None:
            raise DeviceError(f"{py} cannot run edge's runner on {self.id}: {_tail(res.out + res.err)}",
                              "set python = PATH in the device profile to a Python 3.9+ with numpy and the runtime")
        self._versions = got.get("versions")
        cpus = self.sysinfo().cpus
        pin, note = select_cpus(spec.cores, cpus)
        args = [py, RUNNER_NAME, "--model", Path(model).name, "--runtime", rt, "--threads", str(spec.threads),
                "--runs", str(spec.runs), "--warmup", str(spec.warmup), "--min-seconds", f"{spec.min_seconds:g}",
                "--delegate", spec.delegate_for(artifact.target)]
        if pin:
            args += ["--cpus", ",".join(str(c) for c in pin)]
        if spec.op_profile:
            args += ["--op-profile", "op_profile"]
        self._runner_args = args
        self._plan = {"pin": pin, "pin_note": note, "script": script}

    def run_trial(self, artifact: Artifact, spec: BenchSpec) -> Measurement:
        if self._mode == "binary":
            return self.run_binary_trial(artifact, spec)
        from edge.devices.host import _measurement

        line = f"cd {self.q(self.workdir)} && " + " ".join(shlex.quote(a) for a in self._runner_args) + " 2>&1"
        res = self.shell(line, f"the runner on {artifact.path.name}")
        got = _runner_json(res.out)
        if got is None:
            sig = res.rc - 128 if res.rc > 128 else None
            how = f"was killed by signal {sig}" if sig else f"exited with status {res.rc}"
            raise DeviceError(f"edge's runner {how} on {self.id}: {_tail(res.out)}",
                              "rerun with --debug; a crash while loading often means an unsupported op")
        if "error" in got:
            raise EdgeError(f"{self.id}: {got['error']}", got.get("hint"))
        m = _measurement(got, self._plan.get("pin"))
        m.raw_output = res.out
        if not self._plan.get("pin") and spec.cores not in (None, "all", "none"):
            m.notes.append(f"--cores {spec.cores}: {self._plan.get('pin_note')}")
        return m


def _runner_json(out: str) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        if line.startswith(runner.MARK):
            try:
                return json.loads(line[len(runner.MARK):])
            except json.JSONDecodeError:
                return None
    return None


def _cfg_quote(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"
