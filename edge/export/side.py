"""A side process for the targets that trace the network themselves, so ``--target all`` uses a second core.

Conversion is mostly single-threaded Python (torch.export's re-traces, the converters' lowering passes), so run one
after another the three targets cost the sum of their times. ONNX and Core ML convert the one traced program the
pipeline shares; TFLite traces the network itself (``litert_torch.convert``) and is the slowest, so it runs in a
spawned process beside them and the export takes about as long as its slowest part.

The process is a fresh interpreter (``python -c``, calling ``_run``), not a fork: the parent's OpenMP and runtime
thread pools do not survive a fork, and multiprocessing's spawn would re-run a user's script that lacks a
``__main__`` guard. It rebuilds the zoo network from its name (seeded, so the weights are the parent's) and runs the
same pipeline for its targets; only zoo names go there, because a user's module or factory need not rebuild
identically. Job and result travel as pickles in a private temporary folder, between this package's own processes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.export.targets import TARGETS

# A child that got the same Ctrl-C as the parent is already cleaning up; only one still running after this long
# is sent SIGINT by the parent (the parent alone was interrupted, e.g. by `kill -INT`).
CTRL_C_GRACE_S = 2.0
STOP_TIMEOUT_S = 60.0
# `python -m edge.export.side` would import this module twice (the package imports it first)
ENTRY = "import sys; from pathlib import Path; from edge.export.side import _run; _run(*map(Path, sys.argv[1:]))"


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity call
        return os.cpu_count() or 1


def threads_each(processes: int) -> int:
    """PyTorch threads per process when ``processes`` share the cores: OpenMP pools that together ask for more
    threads than there are cores spin against each other (building the network took 19 s instead of 3 here)."""
    return max(1, default_jobs() // processes)


def plan(model_or_name: Any, targets: Sequence[str], jobs: int | None, shares_program: bool) -> tuple[
        list[str], list[list[str]]]:
    """Split ``targets`` into those converted here and groups for side processes (at most ``jobs - 1``).

    Targets that convert the shared traced program stay together in this process; each target that traces the
    network itself is a group of its own. With ``--channels-last`` no target shares a program.
    """
    from edge.export.loader import is_file_spec

    jobs = default_jobs() if jobs is None else jobs
    if jobs < 2 or len(targets) < 2 or not isinstance(model_or_name, str) or is_file_spec(model_or_name.strip()):
        return list(targets), []
    shared = [t for t in targets if shares_program and TARGETS[t].uses_exported_program]
    groups = ([shared] if shared else []) + [[t] for t in targets if t not in shared]
    here, side = groups[0], groups[1:]
    side, rest = side[:jobs - 1], side[jobs - 1:]
    return here + [t for g in rest for t in g], side


def _run(job: Path, result: Path) -> None:
    """Side process: the pipeline for the job's targets; writes ``("ok", (results, rejected))`` or
    ``("error", exception)`` to ``result``."""
    from edge._io import atomic_path
    from edge._progress import Progress
    from edge.export.pipeline import run_targets

    # The parent stops this process with SIGINT, so it must not inherit an ignored SIGINT (a parent that ignores
    # it, e.g. under nohup, hands that on through exec, and Python then installs no handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kwargs = pickle.loads(job.read_bytes())
    quiet = kwargs.pop("quiet")
    try:
        _, results, rejected = run_targets(progress=Progress(quiet=quiet, tty=False), **kwargs)
        payload: tuple[str, Any] = ("ok", (results, rejected))
    except BaseException as e:  # noqa: BLE001 - Ctrl-C included: the parent re-raises whatever ended this process
        payload = ("error", e)
        if kwargs["verbose"] and not isinstance(e, KeyboardInterrupt):
            traceback.print_exc()  # --debug: the traceback does not cross the process boundary
    try:
        data = pickle.dumps(payload)
    except Exception:  # noqa: BLE001 - an exception that does not pickle still reaches the parent, as text
        err = payload[1]
        data = pickle.dumps(("error", EdgeError(f"{type(err).__name__}: {err}")))
    with atomic_path(result) as tmp:
        tmp.write_bytes(data)


class SideExport:
    """One process converting ``targets``, started before the parent converts anything."""

    def __init__(self, targets: list[str], kwargs: dict[str, Any], threads: int) -> None:
        self.targets = targets
        self._dir = Path(tempfile.mkdtemp(prefix="edge-side-"))
        job, self._result = self._dir / "job.pickle", self._dir / "result.pickle"
        job.write_bytes(pickle.dumps({**kwargs, "targets": targets}))
        import edge

        env = dict(os.environ)
        root = str(Path(edge.__file__).resolve().parents[1])  # the edge this process runs, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["OMP_NUM_THREADS"] = str(threads)  # torch's thread count there: read before its pool starts
        self.process = subprocess.Popen([sys.executable, "-c", ENTRY, str(job), str(self._result)],
                                        stdin=subprocess.DEVNULL, env=env)

    def result(self) -> tuple[list[Any], list[EdgeError]]:
        """Wait for the process: its results and rejected targets, or the exception that ended it."""
        code = self.process.wait()
        try:
            kind, payload = pickle.loads(self._result.read_bytes())  # written by our own child, just now
        except (OSError, EOFError, pickle.UnpicklingError):
            raise EdgeError(
                f"the process converting {', '.join(self.targets)} ended without a result (exit code {code})",
                "rerun with --jobs 1 to convert every target in this process") from None
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        if kind == "error":
            raise payload
        return payload

    def stop(self) -> None:
        """Interrupt the process (it removes its temporary folders, as the parent does) and wait for it."""
        p = self.process
        try:
            p.wait(CTRL_C_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
            try:
                p.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
