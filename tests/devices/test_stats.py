"""Statistics, drift flags, summaries, profiles and core selection (no devices needed)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.devices import results, stats
from edge.devices.base import cpu_mask, elf_abi, parse_sysfs, pick_temperature, select_cpus
from edge.devices.profiles import load_profile, parse_spec
from edge.errors import EdgeError
from tests.devices.conftest import write_elf


def test_trial_summary():
    s = stats.summarize_samples(list(range(1, 101)))
    assert s["median"] == 50.5 and s["min"] == 1 and s["max"] == 100
    assert s["p10"] == pytest.approx(10.9) and s["p90"] == pytest.approx(90.1)
    assert s["trimmed_mean"] == pytest.approx(50.5)  # middle 80%: 11..90
    assert stats.trimmed_mean([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000]) == pytest.approx(5.5)  # the outlier is cut


def test_bootstrap_ci_covers_and_narrows():
    rng = np.random.default_rng(0)
    noisy = [list(10 + rng.gamma(2, 0.5, 50)) for _ in range(5)]
    tight = [list(10 + rng.gamma(2, 0.05, 50)) for _ in range(5)]
    m, lo, hi = stats.bootstrap_median_ci(noisy)
    assert lo <= m <= hi
    _, tlo, thi = stats.bootstrap_median_ci(tight)
    assert (thi - tlo) < (hi - lo) / 3
    # aggregates only (binaries): the spread of the trial medians
    m, lo, hi = stats.bootstrap_median_ci([[]] * 5, [10.0, 10.2, 9.9, 10.1, 10.3])
    assert m == 10.1 and lo >= 9.9 and hi <= 10.3 and hi > lo


def test_bootstrap_ci_coverage_is_about_95_percent():
    """Across simulated runs the interval holds the true median close to the nominal rate."""
    rng = np.random.default_rng(1)
    true = 10 + np.log(2)  # median of 10 + Exp(1)
    hits = 0
    for i in range(60):
        trials = [list(10 + rng.exponential(1.0, 40)) for _ in range(5)]
        _, lo, hi = stats.bootstrap_median_ci(trials, n_boot=400, seed=i)
        hits += lo <= true <= hi
    assert hits >= 50  # >= 83% of 60 (nominal 95%; percentile bootstraps undercover slightly)


def test_drift_flags():
    d = stats.drift([10, 10.4, 10.9, 11.3, 11.8], [30, 32, 34, 35, 37], [{"0": 2000}, {"0": 2000}, {"0": 1700}])
    assert d["latency_rising"] and d["temperature_rising"] and d["frequency_falling"]
    assert d["latency_change_pct"] > 10 and d["frequency_change_pct"] == -15.0
    flat = stats.drift([10, 10.1, 9.9, 10.0, 10.05], [30, 30, 30.5, 30, 30], [{"0": 2000}] * 3)
    assert not any(flat[k] for k in ("latency_rising", "temperature_rising", "frequency_falling"))
    # one slow outlier is not a trend
    assert not stats.drift([10, 10, 14, 10, 10])["latency_rising"]


def _trial(k, med, temp=None, run="r1"):
    return {"schema": results.TRIAL_SCHEMA, "run_id": run, "trial": k, "artifact": "m.tflite", "artifact_sha256": "s",
            "model": None, "target": "tflite", "precision": None, "device": {"id": "host", "kind": "host"},
            "runtime": "litert", "delegate": "xnnpack", "threads": 1, "cores": "big", "runs": 3, "warmup": 1,
            "latency_ms": {"median": med, "p10": med * 0.9, "p90": med * 1.1, "trimmed_mean": med, "min": med * 0.8,
                           "first": 2 * med, "init": 5.0},
            "samples_ms": [med * 0.95, med, med * 1.05], "peak_memory_mb": 3.0 + k, "delegate_coverage": None,
            "temperature_c": temp, "max_freq_khz": None, "timestamp": f"2026-01-01T00:00:0{k}Z"}


def test_summary_and_load(tmp_path):
    f = tmp_path / results.TRIALS_FILE
    for k, med in enumerate([5.0, 5.1, 4.9], 1):
        results.append(f, _trial(k, med, temp=30 + k))
    (s,) = results.load_summaries(tmp_path)  # recomputed from trials: no summary was written
    assert s["schema"] == results.SUMMARY_SCHEMA and s["trials"] == 3 and s["median_ms"] == 5.0
    assert s["ci95_ms"][0] <= 5.0 <= s["ci95_ms"][1] and s["peak_memory_mb"] == 6.0
    assert s["p10_ms"] == pytest.approx(4.5) and s["temperature_c"] == [31, 32, 33]
    with open(f, "a") as fh:
        fh.write('{"schema": "edge.bench.trial/1", "run_id": "r1", "tri')  # a torn last line is ignored
    assert len(results.load_trials(tmp_path)) == 3
    run_id, kept = results.find_resumable(tmp_path, results.identity_key(_trial(1, 1.0)))
    assert run_id == "r1" and [t["trial"] for t in kept] == [1, 2, 3]


def test_sysfs_parsing_and_big_cores():
    text = "".join(f"cpu\t{i}\tschedutil\t{f}\t{f}\t{f // 2}\t\n" for i, f in
                   enumerate([1804800] * 4 + [2419200] * 3 + [2841600]))
    text += "tz\tthermal_zone0\tcpu-0-0-usr\t41000\ntz\tthermal_zone1\tbattery\t31000\ntool\ttaskset\n"
    cpus, zones, tools, features = parse_sysfs(text)
    assert list(cpus) == [str(i) for i in range(8)] and tools == {"taskset"}
    assert features is None  # no /proc/cpuinfo line: unknown, not "none"
    x86 = parse_sysfs("isa\tfpu vme sse2 avx2 fma avx512f avx512_vnni amx_tile amx_int8 hypervisor\n")
    assert x86.cpu_features == ["amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512f", "fma"]
    assert parse_sysfs("isa\tfp asimd evtstrm aes crc32 asimddp\n").cpu_features == ["asimd", "asimddp"]
    assert select_cpus("big", cpus) == ([4, 5, 6, 7], "big cores 4,5,6,7 (max 2841600 kHz)")
    assert select_cpus("prime", cpus)[0] == [7]
    assert select_cpus("all", cpus)[0] is None
    assert select_cpus("f0", cpus)[0] == [4, 5, 6, 7] and select_cpus("0-1", cpus)[0] == [0, 1]
    with pytest.raises(EdgeError, match="do not exist"):
        select_cpus("100", cpus)
    assert cpu_mask([4, 5, 6, 7]) == "f0"
    same = {str(i): {"cpuinfo_max_freq_khz": 3000000, "capacity": None} for i in range(4)}
    assert select_cpus("big", same)[0] is None  # homogeneous: nothing to pin
    assert pick_temperature(zones, None) == 41.0 and pick_temperature(zones, 30.5) == 30.5


def test_elf_abi(tmp_path):
    assert elf_abi(write_elf(tmp_path / "a", 183)) == "arm64-v8a"
    assert elf_abi(write_elf(tmp_path / "b", 40, elf_class=1)) == "armeabi-v7a"
    (tmp_path / "s").write_text("#!/bin/sh\n")
    assert elf_abi(tmp_path / "s") is None


def test_profiles_and_specs(tmp_path):
    f = tmp_path / "pixel.toml"
    f.write_text('name = "pixel"\ntransport = "adb"\nserial = "ABC"\nserver = "tcp:farm:5037"\ncores = "f0"\n'
                 '[binaries]\nbenchmark_model = "~/bm"\n[thermal]\nmax_temp_c = 37\npoll_s = 2\n')
    p = load_profile(f)
    assert (p.serial, p.server, p.cores, p.thermal.max_temp_c, p.thermal.poll_s) == ("ABC", "tcp:farm:5037", "f0",
                                                                                      37.0, 2.0)
    assert parse_spec("pixel", profiles_dir=tmp_path).serial == "ABC"
    assert parse_spec("adb:XYZ").serial == "XYZ"
    s = parse_spec("ssh://pi@board.local:2222")
    assert (s.user, s.host, s.port) == ("pi", "board.local", 2222)
    f.write_text('transport = "adb"\nserail = "typo"\n')
    with pytest.raises(EdgeError, match="unknown key"):
        load_profile(f)
    f.write_text('transport = "usb"\n')
    with pytest.raises(EdgeError, match="transport must be one of"):
        load_profile(f)
    f.write_text('transport = "adb"\n[thermal\n')
    with pytest.raises(EdgeError, match="not valid TOML"):
        load_profile(f)


def test_auto_trials_rule_judges_completeness():
    """`--trials auto`: complete at min_trials once the CI is within target, or at max_trials regardless."""
    rule = {"min_trials": 3, "max_trials": 5, "target_ci_pct": 2.0}
    steady = [{**_trial(k, 5.0 + 0.01 * (k % 2)), "samples_ms": [5.0 + 0.01 * (k % 2)] * 3} for k in range(1, 4)]
    s = results.summarize(steady[:2], rule=rule)
    assert not s["complete"] and s["trials_requested"] == 5  # below min_trials, however tight
    s = results.summarize(steady, rule=rule)
    assert s["complete"] and s["trials_rule"]["target_met"] and s["ci95_half_width_pct"] <= 2.0
    bimodal = [_trial(k, m) for k, m in enumerate([5.0, 9.0, 5.0, 9.0], 1)]
    s = results.summarize(bimodal, rule=rule)
    assert not s["complete"] and not s["trials_rule"]["target_met"] and s["ci95_half_width_pct"] > 2.0
    s = results.summarize([*bimodal, _trial(5, 9.0)], rule=rule)
    assert s["complete"] and not s["trials_rule"]["target_met"]  # max_trials reached: done, target missed
