"""A small Android device emulator that speaks the ADB wire protocol on 127.0.0.1, for tests.

No phone is attached to the machines that run edge's tests, so the real ``adb`` client and server talk to
this instead (``adb connect 127.0.0.1:PORT``). It implements what the client needs, after AOSP's
``packages/modules/adb`` documents (protocol.txt, SYNC.TXT, SERVICES.TXT):

- 24-byte message headers (command, arg0, arg1, data length, data checksum, magic = command ^ 0xffffffff);
  CNXN answered at once with a banner that advertises ``features=shell_v2,cmd`` (no AUTH);
  OPEN / OKAY / WRTE / CLSE streams with the one-write-in-flight flow control.
- ``shell,v2,...:CMD``: shell protocol v2 packets (1-byte id + 4-byte little-endian length) for stdin,
  stdout, stderr, close-stdin and the exit status; ``shell:CMD`` (v1) and ``exec:CMD`` raw streams.
- ``sync:``: STAT / LIST / SEND + DATA + DONE / RECV / QUIT, with responses packed into full packets.

Commands run with ``/bin/sh -c`` in a *sandbox* folder that stands in for the phone's filesystem. Absolute
device paths under ``/data``, ``/sys``, ``/sdcard`` and ``/proc`` are rewritten into the sandbox (in shell command
lines and in sync paths, and back again in shell output), so
``cat /sys/devices/system/cpu/cpu4/cpufreq/cpuinfo_max_freq`` reads the sandbox's fake sysfs.
``make_sandbox`` writes cpufreq files per core (big and little cores with different maximum frequencies),
thermal zones, and fake ``getprop``, ``dumpsys`` and ``taskset`` scripts that sit first
on the shell's PATH (the real ones cannot exist on a Linux build host; the fake taskset logs the mask it
was asked for and runs the command without pinning, since the host has fewer cores than a phone).

Each shell runs in its own process group, killed when its stream or the connection closes.
``drop_after_shell`` simulates a phone that drops off USB/Wi-Fi: after N matching shell commands the next
one is accepted and then the TCP connection is cut without an exit status, as a real drop looks to adb.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINCH = range(6)

DEVICE_PREFIXES = ("/data/", "/sys/", "/sdcard/", "/proc/")
_PREFIX_RE = re.compile(r"(?<![\w./-])/(data|sys|sdcard|proc)(?=/|\b)")


def _header(cmd: int, arg0: int, arg1: int, data: bytes) -> bytes:
    return struct.pack("<6I", cmd, arg0, arg1, len(data), 0, cmd ^ 0xFFFFFFFF)


class _Stream:
    """One ADB stream; the device may send one WRTE at a time and waits for the host's OKAY."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.ready = threading.Event()
        self.ready.set()
        self.closed = threading.Event()

    def write(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            chunk = bytes(view[: self.conn.max_payload])
            view = view[len(chunk):]
            while not self.ready.wait(0.2):
                if self.closed.is_set() or self.conn.dead.is_set():
                    return False
            if self.closed.is_set():
                return False
            self.ready.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, chunk)
        return True

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
            self.conn.streams.pop(self.local_id, None)

    # host -> device data; subclasses override
    def on_data(self, data: bytes) -> None:
        pass

    def on_close(self) -> None:
        self.closed.set()


class _ShellStream(_Stream):
    def __init__(self, conn: _Connection, local_id: int, remote_id: int, cmd: str, v2: bool, raw: bool) -> None:
        super().__init__(conn, local_id, remote_id)
        self.v2 = v2
        self.raw = raw
        self.cmd = cmd
        self.buf = b""
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Run the command; called after the OKAY that opens the stream went out."""
        emu, v2 = self.conn.emu, self.v2
        env = {
            "PATH": f"{emu.sandbox}/bin:/usr/bin:/bin",
            "HOME": f"{emu.sandbox}/data/local/tmp",
            "TMPDIR": f"{emu.sandbox}/data/local/tmp",
            "ANDROID_ROOT": "/system",
            "EDGE_EMU_SANDBOX": str(emu.sandbox),
            "LANG": "C.UTF-8",
        }
        env.update(emu.extra_env)
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", emu.rewrite(self.cmd)],
            cwd=emu.sandbox,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole on close
        )
        self.lock = threading.Lock()
        self.readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, SHELL_STDOUT), daemon=True)]
        if v2:
            self.readers.append(threading.Thread(target=self._pump, args=(self.proc.stderr, SHELL_STDERR), daemon=True))
        for t in self.readers:
            t.start()
        threading.Thread(target=self._wait, daemon=True).start()
        if self.raw and not v2:
            self._close_stdin()

    def _packet(self, kind: int, data: bytes) -> bytes:
        return struct.pack("<BI", kind, len(data)) + data if self.v2 else data

    def _pump(self, pipe, kind: int) -> None:
        while True:
            data = pipe.read1(32 * 1024) if hasattr(pipe, "read1") else pipe.read(32 * 1024)
            if not data:
                return
            data = data.replace(self.conn.emu.sandbox_prefix, b"/")  # sandbox paths read as device paths
            with self.lock:
                if not self.write(self._packet(kind, data)):
                    return

    def _wait(self) -> None:
        rc = self.proc.wait()
        for t in self.readers:
            t.join()
        if self.closed.is_set():
            return
        if self.v2:
            with self.lock:
                self.write(self._packet(SHELL_EXIT, bytes([rc & 0xFF])))
        self.close()

    def _close_stdin(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def on_data(self, data: bytes) -> None:
        if not self.v2:
            self._stdin(data)
            return
        self.buf += data
        while len(self.buf) >= 5:
            kind, n = struct.unpack("<BI", self.buf[:5])
            if len(self.buf) < 5 + n:
                break
            payload, self.buf = self.buf[5: 5 + n], self.buf[5 + n:]
            if kind == SHELL_STDIN:
                self._stdin(payload)
            elif kind == SHELL_CLOSE_STDIN:
                self._close_stdin()

    def _stdin(self, data: bytes) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def on_close(self) -> None:
        super().on_close()
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class _SyncStream(_Stream):
    """Requests are served on a worker thread: replies wait for the host's OKAYs, which the reader delivers."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        super().__init__(conn, local_id, remote_id)
        self.buf = b""
        self.recv_file = None  # (path, mode, chunks) during SEND
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._work, daemon=True).start()

    def on_data(self, data: bytes) -> None:
        self.inbox.put(data)

    def on_close(self) -> None:
        super().on_close()
        self.inbox.put(None)

    def _work(self) -> None:
        while True:
            data = self.inbox.get()
            if data is None or self.closed.is_set() or self.conn.dead.is_set():
                return
            self._serve(data)

    def _serve(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.recv_file is not None:
                if len(self.buf) < 8:
                    return
                ident, n = self.buf[:4], struct.unpack("<I", self.buf[4:8])[0]
                if ident == b"DATA":
                    if len(self.buf) < 8 + n:
                        return
                    self.recv_file[2].append(self.buf[8: 8 + n])
                    self.buf = self.buf[8 + n:]
                    continue
                if ident == b"DONE":
                    self.buf = self.buf[8:]
                    self._finish_send(mtime=n)
                    continue
                self._fail(f"unexpected {ident!r} during SEND")
                return
            if len(self.buf) < 8:
                return
            ident, n = self.buf[:4], struct.unpack("<I", self.buf[4:8])[0]
            if ident == b"QUIT":
                self.buf = b""
                self.close()
                return
            if len(self.buf) < 8 + n:
                return
            arg, self.buf = self.buf[8: 8 + n].decode("utf-8", "surrogateescape"), self.buf[8 + n:]
            if ident == b"STAT":
                self._stat(arg)
            elif ident == b"LIST":
                self._list(arg)
            elif ident == b"SEND":
                path, _, mode = arg.rpartition(",")
                self.recv_file = (path, int(mode or "420"), [])
            elif ident == b"RECV":
                self._recv(arg)
            else:
                self._fail(f"unknown sync request {ident!r}")

    def _fail(self, msg: str) -> None:
        raw = msg.encode()
        self.write(b"FAIL" + struct.pack("<I", len(raw)) + raw)

    def _stat(self, path: str) -> None:
        try:
            st = os.stat(self.conn.emu.local(path))
            self.write(b"STAT" + struct.pack("<3I", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
        except OSError:
            self.write(b"STAT" + struct.pack("<3I", 0, 0, 0))

    def _list(self, path: str) -> None:
        out = bytearray()
        local = self.conn.emu.local(path)
        try:
            names = sorted(os.listdir(local))
        except OSError:
            names = []
        for name in names:
            try:
                st = os.lstat(os.path.join(local, name))
            except OSError:
                continue
            raw = name.encode()
            out += b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
        out += b"DONE" + struct.pack("<4I", 0, 0, 0, 0)
        self.write(bytes(out))

    def _finish_send(self, mtime: int) -> None:
        path, mode, chunks = self.recv_file
        self.recv_file = None
        local = Path(self.conn.emu.local(path))
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(b"".join(chunks))
            os.chmod(local, stat.S_IMODE(mode) or 0o644)
            os.utime(local, (mtime, mtime))
        except OSError as e:
            self._fail(f"{path}: {e.strerror}")
            return
        self.write(b"OKAY" + struct.pack("<I", 0))

    def _recv(self, path: str) -> None:
        try:
            data = Path(self.conn.emu.local(path)).read_bytes()
        except OSError as e:
            self._fail(f"{path}: {e.strerror}")
            return
        out = bytearray()
        for i in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[i: i + SYNC_DATA_MAX]
            out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
        out += b"DONE" + struct.pack("<I", 0)
        self.write(bytes(out))  # one buffer, cut into full packets (small packets cost ~40 ms each)


class _Connection:
    def __init__(self, emu: AdbEmulator, sock: socket.socket) -> None:
        self.emu = emu
        self.sock = sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.dead = threading.Event()

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        if self.dead.is_set():
            return
        try:
            with self.send_lock:
                self.sock.sendall(_header(cmd, arg0, arg1, data) + data)
        except OSError:
            self.drop()

    def _read_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                head = self._read_exact(24)
                if head is None:
                    break
                cmd, arg0, arg1, length, _check, magic = struct.unpack("<6I", head)
                if magic != cmd ^ 0xFFFFFFFF:
                    break
                data = self._read_exact(length) if length else b""
                if data is None:
                    break
                self.handle(cmd, arg0, arg1, data)
        finally:
            self.drop()

    def handle(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            self.send(A_CNXN, VERSION, MAX_PAYLOAD, self.emu.banner().encode() + b"\0")
        elif cmd == A_OPEN:
            self.open(arg0, data.rstrip(b"\0").decode("utf-8", "surrogateescape"))
        elif cmd == A_OKAY:
            stream = self.streams.get(arg1)
            if stream:
                stream.ready.set()
        elif cmd == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
                return
            self.send(A_OKAY, stream.local_id, stream.remote_id)
            stream.on_data(data)
        elif cmd == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream:
                stream.on_close()

    def open(self, remote_id: int, service: str) -> None:
        local_id = self.next_id
        self.next_id += 1
        self.emu.services.append(service)
        if service.startswith(("shell", "exec:")):
            v2 = service.startswith("shell,") and "v2" in service.split(":", 1)[0].split(",")
            raw = service.startswith("exec:") or ",raw" in service.split(":", 1)[0]
            cmd = service.split(":", 1)[1] if ":" in service else ""
            if not cmd.strip():
                self.send(A_CLSE, 0, remote_id)  # interactive shells are not emulated
                return
            if self.emu.should_drop(cmd):
                self.send(A_OKAY, local_id, remote_id)
                self.drop()
                return
            stream: _Stream = _ShellStream(self, local_id, remote_id, cmd, v2=v2, raw=raw)
        elif service.startswith("sync:"):
            stream = _SyncStream(self, local_id, remote_id)
        else:
            self.send(A_CLSE, 0, remote_id)
            return
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        if isinstance(stream, _ShellStream):
            stream.start()

    def drop(self) -> None:
        if self.dead.is_set():
            return
        self.dead.set()
        for stream in list(self.streams.values()):
            stream.closed.set()
            if isinstance(stream, _ShellStream):
                stream.kill()
        self.streams.clear()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self in self.emu.connections:
            self.emu.connections.remove(self)


class AdbEmulator:
    """A listening emulated device. ``with AdbEmulator(sandbox) as emu: ... emu.serial``."""

    def __init__(self, sandbox: str | os.PathLike[str], model: str = "EdgeEmu 8", device: str = "edgeemu",
                 extra_env: dict[str, str] | None = None) -> None:
        self.sandbox = Path(sandbox).resolve()
        self.sandbox_prefix = str(self.sandbox).encode() + b"/"
        if any(c in str(self.sandbox) for c in " '\"\\$`;"):
            raise ValueError(f"sandbox path must be plain (it is substituted into shell lines): {self.sandbox}")
        self.model = model
        self.device = device
        self.extra_env = dict(extra_env or {})
        self.services: list[str] = []
        self.shell_count = 0
        self.drop_after_shell: int | None = None
        self.drop_match: str | None = None
        self.connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.port = 0
        self.accepting = True

    # --- configuration -------------------------------------------------
    def banner(self) -> str:
        return (f"device::ro.product.name={self.device};ro.product.model={self.model};"
                f"ro.product.device={self.device};features=shell_v2,cmd")

    def drop_after(self, n: int, match: str | None = None) -> None:
        """Cut the connection when the (n+1)-th shell command (containing ``match``) starts. One-shot."""
        with self._lock:
            self.shell_count = 0
            self.drop_after_shell = n
            self.drop_match = match

    def should_drop(self, cmd: str) -> bool:
        with self._lock:
            if self.drop_match is not None and self.drop_match not in cmd:
                return False
            self.shell_count += 1
            if self.drop_after_shell is not None and self.shell_count > self.drop_after_shell:
                self.drop_after_shell = None
                return True
            return False

    def rewrite(self, cmd: str) -> str:
        """Point absolute device paths (/data, /sys, /sdcard) into the sandbox."""
        return _PREFIX_RE.sub(lambda m: f"{self.sandbox}/{m.group(1)}", cmd)

    def local(self, device_path: str) -> str:
        if not device_path.startswith("/"):
            device_path = "/data/local/tmp/" + device_path
        return str(self.sandbox) + os.path.normpath(device_path)

    # --- lifecycle -----------------------------------------------------
    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> AdbEmulator:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))  # OS-chosen; 5555-5585 would be auto-attached as emulator-N
        self.port = self._sock.getsockname()[1]
        if 5555 <= self.port <= 5585:  # pragma: no cover - very unlikely
            self._sock.close()
            return self.start()
        self._sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            if not self.accepting:
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self.connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.drop()

    def stop(self) -> None:
        if self._sock:
            self._sock.close()
        self.drop_all()

    def __enter__(self) -> AdbEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the sandbox: a fake phone filesystem --------------------------------------------------------------

GETPROP = r"""#!/bin/sh
# fake getprop: reads "key=value" lines from the sandbox's props file
f="$EDGE_EMU_SANDBOX/props.txt"
if [ $# -eq 0 ]; then
  while IFS='=' read -r k v; do printf '[%s]: [%s]\n' "$k" "$v"; done < "$f"
  exit 0
fi
while IFS='=' read -r k v; do
  if [ "$k" = "$1" ]; then printf '%s\n' "$v"; exit 0; fi
done < "$f"
echo
"""

DUMPSYS = r"""#!/bin/sh
# fake dumpsys: only "battery"; the temperature (tenths of a degree) drops by a step per call (cooling)
s="$EDGE_EMU_SANDBOX"
if [ "$1" != "battery" ]; then echo "Can't find service: $1"; exit 0; fi
t=$(cat "$s/battery_temp")
step=$(cat "$s/battery_cooling_step" 2>/dev/null || echo 0)
n=$((t - step)); [ "$n" -lt 250 ] && n=250
echo "$n" > "$s/battery_temp"
echo "$(( $(cat "$s/dumpsys_calls" 2>/dev/null || echo 0) + 1 ))" > "$s/dumpsys_calls"
cat <<EOF
Current Battery Service state:
  AC powered: false
  USB powered: true
  status: 2
  health: 2
  present: true
  level: 87
  scale: 100
  voltage: 4211
  temperature: $t
  technology: Li-ion
EOF
"""

TASKSET = r"""#!/bin/sh
# fake taskset: the build host has fewer cores than the emulated phone, so log the mask and run unpinned
echo "$1" >> "$EDGE_EMU_SANDBOX/taskset.log"
shift
exec "$@"
"""


def make_sandbox(root: str | os.PathLike[str], *, abi: str = "arm64-v8a",
                 cores: tuple[int, ...] = (1804800,) * 4 + (2419200,) * 3 + (2841600,),
                 thermal: tuple[tuple[str, int], ...] = (("cpu-0-0-usr", 41000), ("cpu-1-0-usr", 43500),
                                                         ("battery", 31000)),
                 battery_tenths_c: int = 312, props: dict[str, str] | None = None) -> Path:
    """Write a phone-like filesystem: /data/local/tmp, cpufreq per core, thermal zones, fake tools.

    Default cores mimic a Snapdragon 8 Gen 2 (4 little, 3 mid, 1 prime): the biggest core is cpu7.
    """
    root = Path(root)
    (root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
    (root / "sdcard").mkdir(exist_ok=True)
    for i, f in enumerate(cores):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpuinfo_max_freq").write_text(f"{f}\n")
        (d / "scaling_max_freq").write_text(f"{f}\n")
        (d / "scaling_cur_freq").write_text(f"{f // 2}\n")
        (d / "scaling_governor").write_text("schedutil\n")
    (root / "sys/devices/system/cpu/online").write_text(f"0-{len(cores) - 1}\n")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cpuinfo").write_text("".join(  # a Cortex-X3-like core: dot product and int8 matmul
        f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
        "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp sve sve2 i8mm bf16\n\n" for i in range(len(cores))))
    for i, (kind, milli_c) in enumerate(thermal):
        d = root / f"sys/class/thermal/thermal_zone{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "type").write_text(kind + "\n")
        (d / "temp").write_text(f"{milli_c}\n")
    base = {
        "ro.build.fingerprint": "edge/edgeemu/edgeemu:14/UQ1A.240205.004/11269751:user/release-keys",
        "ro.product.model": "EdgeEmu 8",
        "ro.product.manufacturer": "Edge",
        "ro.soc.model": "SM8550",
        "ro.board.platform": "kalama",
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.product.cpu.abi": abi,
        "ro.product.cpu.abilist": {"arm64-v8a": "arm64-v8a,armeabi-v7a,armeabi"}.get(abi, abi),
    }
    base.update(props or {})
    (root / "props.txt").write_text("".join(f"{k}={v}\n" for k, v in base.items()))
    (root / "battery_temp").write_text(f"{battery_tenths_c}\n")
    bindir = root / "bin"
    bindir.mkdir(exist_ok=True)
    for name, text in (("getprop", GETPROP), ("dumpsys", DUMPSYS), ("taskset", TASKSET)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    return root


def main() -> None:  # pragma: no cover - manual use: python -m tests.devices.adb_emulator SANDBOX
    root = make_sandbox(sys.argv[1] if len(sys.argv) > 1 else "/tmp/edge-adb-emu")
    with AdbEmulator(root) as emu:
        print(f"listening on {emu.serial}; adb connect {emu.serial}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    main()
