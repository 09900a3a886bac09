"""The ssh transport against a real OpenSSH server on 127.0.0.1, started here with keys made here.

Host-key checking stays on: the known_hosts file the test writes is the only reason the client trusts
the server, and a test proves an unknown key is refused.
"""

from __future__ import annotations

import sys

import pytest

from edge._io import read_jsonl
from edge.devices import bench, open_device
from edge.devices.host import HostDevice
from edge.devices.profiles import Profile, load_profile, parse_spec
from edge.devices.ssh import SshDevice, sftp_quote
from edge.errors import DeviceError, EdgeError
from tests.devices.conftest import copy_model

pytestmark = pytest.mark.system


def _profile(sshd, tmp_path, **kw) -> Profile:
    base = dict(name="board", transport="ssh", host=sshd.host, user=sshd.user, port=sshd.port,
                identity=str(sshd.identity), known_hosts=str(sshd.known_hosts), ssh_config=str(sshd.config),
                python=sys.executable, workdir=str(tmp_path / "remote dir; 'x' $(id)"))
    base.update(kw)
    return Profile(**base)


def test_runner_over_ssh_with_odd_names(sshd, tiny_models, tmp_path):
    """The shipped runner is copied with sftp and times the model; names with spaces, quotes and ';' stay data.
    --min-seconds reaches the runner: each trial goes on past --runs for 0.2 s."""
    odd = copy_model(tiny_models["tflite"], tmp_path / "local dir" / "tiny model's \"q\"; touch PWNED.tflite")
    dev = open_device(_profile(sshd, tmp_path))
    rep = bench([odd, tiny_models["onnx"]], dev, runs=5, warmup=1, min_seconds=0.2, trials=1, out=tmp_path / "r",
                op_profile=True)
    by_rt = {s["runtime"]: s for s in rep.summaries}
    assert set(by_rt) == {"litert", "onnxruntime"}
    assert by_rt["litert"]["delegate_coverage"]["delegated"] == 5  # CUMSUM stays on the CPU
    ort_cov = by_rt["onnxruntime"]["delegate_coverage"]  # from the ORT profile: every node on the CPU EP
    assert ort_cov["delegate"] == "CPUExecutionProvider" and ort_cov["delegated"] == ort_cov["total"] >= 4
    remote = tmp_path / "remote dir; 'x' $(id)"
    assert (remote / odd.name).read_bytes() == odd.read_bytes()
    assert (remote / "edge_runner.py").is_file()
    assert not list(tmp_path.rglob("PWNED"))
    trials = read_jsonl(tmp_path / "r" / "trials.jsonl")
    assert len(trials) == 2 and all(len(t["samples_ms"]) > 5 and t["min_seconds"] == 0.2 for t in trials)
    assert all(sum(t["samples_ms"]) >= 0.8 * 200 for t in trials)  # less only the clock reads between runs
    onnx_trial = next(t for t in trials if t["runtime"] == "onnxruntime")
    assert {r["op"] for r in onnx_trial["op_profile"]} >= {"Conv", "CumSum"}
    fp = trials[0]["device"]["fingerprint"]
    assert fp["uname"].startswith("Linux") and fp["versions"]["onnxruntime"] and fp["abis"]
    # the board here is this machine: its features as the host reads them from the same /proc/cpuinfo
    here = HostDevice(parse_spec("host")).fingerprint()["cpu_features"]
    assert here is not None and fp["cpu_features"] == here
    assert trials[0]["device"]["id"] == f"ssh://{sshd.user}@{sshd.host}:{sshd.port}"


def test_benchmark_binary_over_ssh(sshd, tiny_models, phone_bins, tmp_path):
    """ssh can also push and run a benchmark binary (here the stand-in that prints benchmark_model's format)."""
    prof = _profile(sshd, tmp_path, binaries={"benchmark_model": str(phone_bins["benchmark_model"])})
    rep = bench(tiny_models["tflite"], open_device(prof), runs=3, warmup=1, trials=1, out=tmp_path / "r")
    s = rep.summaries[0]
    assert s["runtime"] == "benchmark_model" and s["delegate_coverage"]["total"] == 6


def test_unknown_host_key_is_refused(sshd, tiny_models, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    dev = SshDevice(_profile(sshd, tmp_path, known_hosts=str(empty)))
    with pytest.raises(DeviceError, match="host key is unknown or changed") as e:
        bench(tiny_models["tflite"], dev, trials=1, out=tmp_path / "r")
    assert "ssh-keyscan" in e.value.hint
    assert dev.state() == "host key unknown"


def test_host_key_checking_cannot_be_turned_off(sshd, tmp_path):
    dev = SshDevice(_profile(sshd, tmp_path, ssh_options=["StrictHostKeyChecking=no"]))
    with pytest.raises(EdgeError, match="host-key checking stays on"):
        dev.open()


def test_unreachable_board(sshd, tiny_models, tmp_path):
    from tests.devices.conftest import free_port

    dev = SshDevice(_profile(sshd, tmp_path, port=free_port()))
    with pytest.raises(DeviceError, match="is not reachable"):
        bench(tiny_models["tflite"], dev, trials=1, out=tmp_path / "r")


def test_coreml_needs_a_mac(sshd, tmp_path):
    """Core ML's platform limit is a clear error before anything is copied, not a traceback."""
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    with pytest.raises(EdgeError, match="Core ML runs only on macOS; ssh://.* runs Linux"):
        bench(pkg, open_device(_profile(sshd, tmp_path)), trials=1, out=tmp_path / "r")
    assert not (tmp_path / "remote dir; 'x' $(id)" / "m.mlpackage").exists()


def test_profile_file_for_ssh(sshd, tmp_path):
    f = tmp_path / "board.toml"
    f.write_text(f'name = "board"\ntransport = "ssh"\nhost = "{sshd.user}@{sshd.host}"\nport = {sshd.port}\n'
                 f'identity = "{sshd.identity}"\nknown_hosts = "{sshd.known_hosts}"\nssh_config = "{sshd.config}"\n'
                 f'cores = "all"\n[thermal]\ncooldown_s = 0\n')
    prof = load_profile(f)
    assert (prof.user, prof.host, prof.port, prof.cores) == (sshd.user, sshd.host, sshd.port, "all")
    assert open_device(prof).state() == "device"


def test_sftp_quote():
    assert sftp_quote('a b"c\\d*[e]') == '"a b\\"c\\\\d\\*\\[e\\]"'
