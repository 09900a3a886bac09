"""The adb transport against the real adb client and server, talking to emulated phones.

No phone is attached where these tests run. tests/devices/adb_emulator.py speaks the ADB protocol on
127.0.0.1 (CNXN with shell_v2, shell v2 exit codes, sync push/pull/stat) and runs commands in a sandbox
folder with fake sysfs; the on-phone benchmark_model is a stand-in script that runs the model on the host
with the LiteRT interpreter and prints benchmark_model's format (tests/devices/standin_benchmark_model.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge._io import read_jsonl
from edge.cli import main
from edge.devices import bench, load_summaries, open_device
from edge.devices.adb import AdbDevice
from edge.devices.profiles import Profile
from edge.errors import DeviceError, EdgeError
from tests.devices.conftest import copy_model, start_phone, stop_phone, write_elf

pytestmark = pytest.mark.system


def _bench(phone, model, tmp_path, **kw):
    kw.setdefault("runs", 5)
    kw.setdefault("warmup", 1)
    kw.setdefault("min_seconds", 0)
    kw.setdefault("trials", 2)
    kw.setdefault("out", tmp_path / "results")
    return bench(model, f"adb:{phone.serial}", **kw)


def test_emulator_speaks_adb(adb_env, phone, tmp_path):
    """The real client sees the emulated phone; shell v2 exit codes and stderr, sync push/pull/stat work."""
    r = adb_env.run("devices", "-l")
    assert f"{phone.serial}" in r.stdout and "device" in r.stdout and "model:EdgeEmu_8" in r.stdout
    r = adb_env.run("-s", phone.serial, "shell", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: several DATA chunks and packets
    assert adb_env.run("-s", phone.serial, "push", str(blob), "/data/local/tmp/x/blob.bin").returncode == 0
    assert (phone.root / "data/local/tmp/x/blob.bin").read_bytes() == blob.read_bytes()
    back = tmp_path / "back.bin"
    assert adb_env.run("-s", phone.serial, "pull", "/data/local/tmp/x/blob.bin", str(back)).returncode == 0
    assert back.read_bytes() == blob.read_bytes()
    r = adb_env.run("-s", phone.serial, "pull", "/data/local/tmp/x", str(tmp_path / "dir"))  # LIST, then RECV
    assert r.returncode == 0 and (tmp_path / "dir" / "blob.bin").read_bytes() == blob.read_bytes()
    r = adb_env.run("-s", phone.serial, "pull", "/data/local/tmp/missing", str(tmp_path / "m"))
    assert r.returncode != 0 and "does not exist" in (r.stdout + r.stderr)
    assert any(s.startswith("shell,v2,") for s in phone.emu.services)
    dev = AdbDevice(Profile(name="adb", transport="adb"))
    dev.open()  # no serial: the one attached device is picked
    assert dev.serial == phone.serial


def test_emulator_kills_the_shell_process_group(adb_env, phone):
    """Closing an adb shell stream (the client is killed) kills the command's children on the phone too."""
    import os
    import subprocess
    import time

    client = subprocess.Popen([adb_env.adb, "-s", phone.serial, "shell",
                               "sleep 30 & echo $! > /data/local/tmp/child.pid; wait"])
    pid_file = phone.root / "data/local/tmp/child.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.kill(child, 0)  # running
    client.kill()
    client.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the shell's child outlived its closed stream")


def test_bench_on_phone(adb_env, phone, phone_bins, tiny_models, tmp_path):
    """Push model + binary, pin big cores with taskset, parse, record fingerprint, coverage and op profile."""
    rep = _bench(phone, tiny_models["tflite"], tmp_path, binary=str(phone_bins["benchmark_model"]), trials=2,
                 op_profile=True, min_seconds=0.2)
    (s,) = rep.summaries
    assert s["runtime"] == "benchmark_model" and s["trials"] == 2 and s["complete"]
    assert s["median_ms"] > 0 and s["ci95_ms"][0] <= s["median_ms"] <= s["ci95_ms"][1]
    # the stand-in printed "Replacing 5 out of 6 node(s)": the CUMSUM node stays on the CPU
    assert s["delegate_coverage"]["delegated"] == 5 and s["delegate_coverage"]["total"] == 6
    assert s["peak_memory_mb"] is not None and s["peak_memory_mb"] > 0
    # big cores from cpufreq: cpu4-6 (2.42 GHz) and cpu7 (2.84 GHz) beat the 1.80 GHz little cluster
    assert (phone.root / "taskset.log").read_text().split() == ["f0", "f0"]
    trials = read_jsonl(tmp_path / "results" / "trials.jsonl")
    assert [t["trial"] for t in trials] == [1, 2] and trials[0]["cpu_mask"] == "f0"
    # --min-seconds became --min_secs=0.2: the stand-in, as benchmark_model, ran past --runs 5 for 0.2 s
    assert trials[0]["min_seconds"] == 0.2 and trials[0]["measured_runs"] > 5
    fp = trials[0]["device"]["fingerprint"]
    assert fp["model"] == "EdgeEmu 8" and fp["soc"] == "SM8550" and fp["android_version"] == "14"
    assert fp["build_fingerprint"].startswith("edge/edgeemu/") and fp["abis"][0] == "arm64-v8a"
    assert fp["cpus"]["7"] == {"governor": "schedutil", "max_freq_khz": 2841600, "capacity": None}
    # the phone's /proc/cpuinfo Features, narrowed to those that pick int8 / fp16 kernels
    assert fp["cpu_features"] == ["asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sve", "sve2"]
    assert fp["thermal_zones"]["thermal_zone1"]["temp_c"] == 43.5 and fp["battery_temp_c"] == 31.2
    assert trials[0]["temperature_c"] == 31.2  # the battery's, as cool-down policies watch it
    assert trials[0]["max_freq_khz"]["0"] == 1804800
    # the op profile was written on the phone (CSV), pulled and parsed: the model's six ops in order
    ops = [r["op"] for r in trials[0]["op_profile"]]
    assert ops == ["TRANSPOSE", "CONV_2D", "TRANSPOSE", "MEAN", "FULLY_CONNECTED", "CUMSUM"]
    raw = tmp_path / "results" / (trials[0]["raw"] + ".txt")
    assert "Inference timings in us" in raw.read_text()
    assert (tmp_path / "results" / (trials[0]["raw"] + "-op_profile.csv")).is_file()


def test_onnx_on_phone_with_perf_test(adb_env, phone, phone_bins, tiny_models, tmp_path):
    """ONNX runs through onnxruntime_perf_test; its profile JSON is pulled and gives per-op times and coverage."""
    rep = _bench(phone, tiny_models["onnx"], tmp_path, binary=str(phone_bins["onnxruntime_perf_test"]), trials=1,
                 op_profile=True, min_seconds=0.5)
    (s,) = rep.summaries
    assert s["runtime"] == "onnxruntime_perf_test" and s["delegate"] == "cpu"
    t = read_jsonl(tmp_path / "results" / "trials.jsonl")[0]
    assert t["measured_runs"] == 5 and t["latency_ms"]["p90"] >= t["latency_ms"]["median"] > 0
    # perf_test takes -r N or -t SECONDS, not both: it runs the count, and the record says the minimum was not kept
    assert any("without the 0.5 s minimum" in n for n in t["notes"])
    assert {r["op"] for r in t["op_profile"]} >= {"Conv", "CumSum"}
    assert s["delegate_coverage"]["delegate"] == "CPUExecutionProvider"
    assert s["delegate_coverage"]["delegated"] == s["delegate_coverage"]["total"]
    assert any(p.name.startswith("ort_profile") for p in (phone.root / "data/local/tmp/edge").iterdir())


def test_quoting_odd_names(adb_env, phone, phone_bins, tiny_models, tmp_path):
    """Spaces, quotes and ';' in file and folder names reach the phone as data, never as shell syntax."""
    odd = copy_model(tiny_models["tflite"], tmp_path / "my model's \"v1\"; touch PWNED.tflite")
    prof = Profile(name="odd", transport="adb", serial=phone.serial, workdir="/data/local/tmp/edge dir; 'x' $(id)",
                   binaries={"benchmark_model": str(phone_bins["benchmark_model"])})
    rep = bench(odd, open_device(prof), runs=3, warmup=1, trials=1, out=tmp_path / "r")
    assert rep.summaries[0]["median_ms"] > 0
    pushed = phone.root / "data/local/tmp/edge dir; 'x' $(id)" / odd.name
    assert pushed.read_bytes() == odd.read_bytes()
    assert not list(phone.root.rglob("PWNED")) and not Path("PWNED").exists()
    assert not (phone.root / "data/local/tmp/edge dir").exists()  # the ';' did not split the mkdir


def test_cooldown_waits_for_max_temp(adb_env, tmp_path, phone_bins, tiny_models):
    """--max-temp: poll dumpsys battery until it is cool enough, then measure (the fake battery cools 3 C/read)."""
    p = start_phone(adb_env, tmp_path / "hot", battery_tenths_c=420)
    (p.root / "battery_cooling_step").write_text("30\n")
    try:
        rep = _bench(p, tiny_models["tflite"], tmp_path, binary=str(phone_bins["benchmark_model"]), trials=1,
                     max_temp=37.0, poll=0.01)
        t = read_jsonl(tmp_path / "results" / "trials.jsonl")[0]
        assert t["temperature_c"] <= 37.0 and t["cooldown"]["start_temp_c"] >= 39.0
        assert int((p.root / "dumpsys_calls").read_text()) >= 3
        assert rep.summaries[0]["temperature_c"] == [t["temperature_c"]]
    finally:
        stop_phone(adb_env, p)


def test_drop_mid_run_keeps_trials_and_resumes(adb_env, phone, phone_bins, tiny_models, tmp_path):
    """The phone drops during trial 2: trial 1 stays on disk, the error says so, --resume finishes 2-3."""
    out = tmp_path / "results"
    argv = ["bench", str(tiny_models["tflite"]), "--device", f"adb:{phone.serial}", "--binary",
            str(phone_bins["benchmark_model"]), "--runs", "3", "--warmup", "1", "--min-seconds", "0", "--trials", "3",
            "--out", str(out), "--quiet"]
    phone.emu.drop_after(1, match="--num_runs")  # count the benchmark runs only
    assert main(argv) == DeviceError.exit_code
    kept = read_jsonl(out / "trials.jsonl")
    assert [t["trial"] for t in kept] == [1]
    partial = load_summaries(out)
    assert len(partial) == 1 and partial[0]["complete"] is False and partial[0]["trials"] == 1
    assert main([*argv, "--resume"]) == 0
    trials = read_jsonl(out / "trials.jsonl")
    assert [t["trial"] for t in trials] == [1, 2, 3]
    assert len({t["run_id"] for t in trials}) == 1
    (s,) = load_summaries(out)
    assert s["complete"] and s["trials"] == 3 and len(s["trial_medians_ms"]) == 3


def test_drop_error_message(adb_env, phone, phone_bins, tiny_models, tmp_path, capsys):
    phone.emu.drop_after(0, match="--num_runs")
    rc = main(["bench", str(tiny_models["tflite"]), "-d", f"adb:{phone.serial}", "--binary",
               str(phone_bins["benchmark_model"]), "--runs", "2", "--min-seconds", "0", "--trials", "2", "--out",
               str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert rc == 4 and "Traceback" not in err
    assert f"adb:{phone.serial} dropped the connection" in err and "0 of 2 trial(s) kept" in err
    assert "--resume" in err


def test_crashing_binary(adb_env, phone, phone_bins, tiny_models, tmp_path):
    with pytest.raises(DeviceError, match=r"killed by signal 11 \(SIGSEGV\)"):
        _bench(phone, tiny_models["tflite"], tmp_path, binary=str(phone_bins["crash"]))


def test_wrong_abi_binary_is_refused_before_push(adb_env, phone, phone_bins, tiny_models, tmp_path):
    with pytest.raises(DeviceError, match=r"built for x86_64 but adb:.* runs arm64-v8a"):
        _bench(phone, tiny_models["tflite"], tmp_path, binary=str(phone_bins["x86_64"]))
    assert not (phone.root / "data/local/tmp/edge/benchmark_model_x86_64").exists()


def test_wrong_abi_binary_already_on_device(adb_env, phone, tiny_models, tmp_path):
    """A binary already on the phone cannot be read locally: the shell's exec error is recognised."""
    onphone = write_elf(phone.root / "data/local/tmp/bm32", 40)  # 32-bit ARM: the kernel refuses to exec it
    assert onphone.exists()
    with pytest.raises(DeviceError, match="cannot run on .*another CPU architecture|cannot run on adb:") as e:
        _bench(phone, tiny_models["tflite"], tmp_path, binary="device:/data/local/tmp/bm32")
    assert "ABI" in (e.value.hint or "")


def test_missing_binary_is_a_clear_error(adb_env, phone, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BIN_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(EdgeError, match="no benchmark_model binary for adb:") as e:
        _bench(phone, tiny_models["tflite"], tmp_path)
    assert "--binary" in e.value.hint


def test_binary_from_local_cache(adb_env, phone, phone_bins, tiny_models, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "arm64-v8a"
    cache.mkdir(parents=True)
    (cache / "benchmark_model").write_bytes(phone_bins["benchmark_model"].read_bytes())
    (cache / "benchmark_model").chmod(0o755)
    monkeypatch.setenv("EDGE_BIN_CACHE", str(tmp_path / "cache"))
    rep = _bench(phone, tiny_models["tflite"], tmp_path, trials=1)
    assert rep.summaries[0]["runtime"] == "benchmark_model"


def test_device_not_there(adb_env, tmp_path, tiny_models):
    dead = f"127.0.0.1:{__import__('tests.devices.conftest', fromlist=['free_port']).free_port()}"
    with pytest.raises(DeviceError, match=f"adb device {dead} is not there"):
        bench(tiny_models["tflite"], f"adb:{dead}", trials=1, out=tmp_path / "r", binary="device:/x")
    with pytest.raises(DeviceError, match="adb device NOSUCHSERIAL is not there"):
        bench(tiny_models["tflite"], "adb:NOSUCHSERIAL", trials=1, out=tmp_path / "r", binary="device:/x")
    assert not (tmp_path / "r" / "trials.jsonl").exists()


def test_require_full_delegation(adb_env, phone, phone_bins, tiny_models, tmp_path):
    with pytest.raises(EdgeError, match="took 5 of 6 nodes; 1 fall back to the CPU"):
        _bench(phone, tiny_models["tflite"], tmp_path, binary=str(phone_bins["benchmark_model"]),
               require_full_delegation=True)
    # the trial was measured and kept before the check failed
    assert len(read_jsonl(tmp_path / "results" / "trials.jsonl")) == 1


def test_two_phones_at_once_and_remote_server(adb_env, tmp_path, phone_bins, tiny_models, monkeypatch, capsys):
    """One job per device; the adb server is named explicitly (-H/-P), as a device farm's would be."""
    a = start_phone(adb_env, tmp_path / "a")
    b = start_phone(adb_env, tmp_path / "b", cores=(1000000,) * 2 + (2000000,) * 2)
    try:
        monkeypatch.delenv("ANDROID_ADB_SERVER_PORT")  # only --adb-server says where the server is
        rep = bench(tiny_models["tflite"], [f"adb:{a.serial}", f"adb:{b.serial}"], runs=3, warmup=1,
                    min_seconds=0, trials=2, binary=str(phone_bins["benchmark_model"]), out=tmp_path / "r",
                    adb_server=f"127.0.0.1:{adb_env.port}")
        assert sorted(s["device"]["id"] for s in rep.summaries) == sorted([f"adb:{a.serial}", f"adb:{b.serial}"])
        assert (b.root / "taskset.log").read_text().split() == ["c", "c"]  # cpu2-3 on the 2+2 phone
        monkeypatch.setenv("ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{adb_env.port}")
        assert main(["devices", "--json", "--no-check"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert {f"adb:{a.serial}", f"adb:{b.serial}"} <= {r["device"] for r in rows}
        assert all(r["state"] == "device" for r in rows if r["kind"] == "adb")
    finally:
        stop_phone(adb_env, a)
        stop_phone(adb_env, b)


def test_adb_shell_end_marker_detects_drop(adb_env, phone):
    """adb exits 0 when the link drops mid-command; the harness still notices."""
    dev = AdbDevice(Profile(name="p", transport="adb", serial=phone.serial))
    dev.open()
    assert dev.shell("echo hi; exit 3").rc == 3
    phone.emu.drop_after(0)
    with pytest.raises(DeviceError, match="dropped the connection"):
        dev.shell("sleep 1; echo late")
