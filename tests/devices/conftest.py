"""Fixtures for the device harness: a tiny model as .tflite and .onnx, an adb server on a private port,
emulated phones (tests/devices/adb_emulator.py), stand-in benchmark binaries, and a real OpenSSH server on
127.0.0.1 with keys made here.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.devices.adb_emulator import AdbEmulator, make_sandbox

HERE = Path(__file__).parent
REPO = HERE.parent.parent
FIXTURES = HERE / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- the models
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny conv net as .tflite (litert_torch.convert) and .onnx (torch.onnx.export), made here.

    Its CUMSUM head is on purpose: XNNPACK has no kernel for it, so that one node stays on the CPU and
    delegate coverage is observable (5 of 6 nodes) on the host and on the emulated phone alike.
    """
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(self.fc(torch.relu(self.conv(x)).mean((2, 3))), 1)

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    m = Tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    torch.onnx.export(m, (x,), str(d / "tiny.onnx"), input_names=["input"], output_names=["logits"], dynamo=False)
    import litert_torch

    litert_torch.convert(m, (x,)).export(str(d / "tiny.tflite"))
    return {"tflite": d / "tiny.tflite", "onnx": d / "tiny.onnx"}


# ---------------------------------------------------------------------------------------- phone binaries
def write_standin(path: Path, source: str = "standin_benchmark_model.py") -> Path:
    """A stand-in benchmark binary (standin_*.py), made runnable by the emulated phone."""
    body = (HERE / source).read_text()
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n" + body)
    path.chmod(0o755)
    return path


def write_crasher(path: Path) -> Path:
    """A 'benchmark binary' that starts, then dies of SIGSEGV (as a binary with a bad op kernel does)."""
    path.write_text('#!/bin/sh\necho "INFO: STARTING!"\necho "INFO: Loaded model"\nkill -SEGV $$\n')
    path.chmod(0o755)
    return path


def write_elf(path: Path, machine: int, elf_class: int = 2) -> Path:
    """An ELF executable header for ``machine`` (183 aarch64, 62 x86-64, 40 arm): enough for the ABI check
    and for the kernel to refuse to exec it."""
    h = bytearray(64)
    h[0:4] = b"\x7fELF"
    h[4], h[5], h[6] = elf_class, 1, 1
    struct.pack_into("<HHI", h, 16, 2, machine, 1)
    path.write_bytes(bytes(h))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def phone_bins(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("phone-bins")
    return {"benchmark_model": write_standin(d / "benchmark_model"),
            "onnxruntime_perf_test": write_standin(d / "onnxruntime_perf_test", "standin_perf_test.py"),
            "crash": write_crasher(d / "crashing_model"), "x86_64": write_elf(d / "benchmark_model_x86_64", 62)}


# -------------------------------------------------------------------------------------------- adb + phones
@dataclass
class AdbEnv:
    adb: str
    port: int

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([self.adb, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def adb_env(tmp_path_factory):
    """The real adb client/server on a private port, with HOME and TMPDIR in a temp folder."""
    adb = require_tool("adb")
    home = tmp_path_factory.mktemp("adb-home")
    mp = pytest.MonkeyPatch()
    port = free_port()
    mp.setenv("HOME", str(home))
    mp.setenv("TMPDIR", str(home))
    mp.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    mp.delenv("ADB_SERVER_SOCKET", raising=False)
    mp.delenv("ANDROID_SERIAL", raising=False)
    env = AdbEnv(adb, port)
    r = env.run("start-server")
    assert r.returncode == 0, r.stderr
    try:
        yield env
    finally:
        env.run("kill-server")
        mp.undo()


@dataclass
class Phone:
    emu: AdbEmulator
    root: Path

    @property
    def serial(self) -> str:
        return self.emu.serial


def start_phone(env: AdbEnv, root: Path, **sandbox) -> Phone:
    make_sandbox(root, **sandbox)
    emu = AdbEmulator(root).start()
    r = env.run("connect", emu.serial)
    assert "connected" in r.stdout, r.stdout + r.stderr
    for _ in range(50):  # `adb connect` returns before the transport is up
        if env.run("-s", emu.serial, "get-state").stdout.strip() == "device":
            break
        time.sleep(0.05)
    return Phone(emu, root)


def stop_phone(env: AdbEnv, phone: Phone) -> None:
    env.run("disconnect", phone.serial)
    phone.emu.stop()


@pytest.fixture
def phone(adb_env, tmp_path):
    p = start_phone(adb_env, tmp_path / "phone")
    yield p
    stop_phone(adb_env, p)


# ------------------------------------------------------------------------------------------------ sshd
@dataclass
class SshServer:
    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path
    config: Path  # an empty client config, so a user's ~/.ssh/config cannot change the test
    root: Path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1:<free port> with a host key and a user key made here."""
    sshd_bin = require_tool("sshd", "/usr/sbin/sshd")
    require_tool("ssh")
    require_tool("sftp")
    keygen = require_tool("ssh-keygen")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    cfg = d / "sshd_config"
    sftp_server = "internal-sftp"
    cfg.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password",  # the tests run as root in CI containers
        f"Subsystem sftp {sftp_server}", "LogLevel ERROR", "",
    ]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege-separation folder sshd insists on as root
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-p", str(port), "-f", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "ssh_config").write_text("")
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {proc.stdout.read().decode()}")
            time.sleep(0.05)
    import getpass

    try:
        yield SshServer("127.0.0.1", port, getpass.getuser(), d / "user_key", d / "known_hosts", d / "ssh_config", d)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def copy_model(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
