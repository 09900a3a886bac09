"""Stand-in for TFLite's ``benchmark_model`` on the emulated phone (tests only).

No phone, and so no Android build of benchmark_model, exists on the machines that run edge's tests. The
emulated phone runs this script in its place: it accepts benchmark_model's flags, runs the model on the
host with the real LiteRT interpreter (XNNPACK unless ``--use_xnnpack=false``) and prints benchmark_model's
output format: ``INFO:`` lines, ``count=... min=... avg=... p5= median= p95=`` in microseconds,
``Inference timings in us``, the memory footprint lines, ``Replacing N out of M node(s) with delegate``, and
with ``--enable_op_profiling=true --profiling_output_csv_file=F`` a CSV op profile written to F (the op list
is the model's real one; per-op times are the measured total split evenly, since the Python interpreter
has no per-op profiler). The fixture prepends a shebang for the test's Python and the repo path.
"""

import os
import statistics
import sys
import time


def _rss_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def main(argv):
    flags = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            flags[k] = v
    print("INFO: STARTING!")
    graph = flags.get("graph")
    print(f"INFO: Graph: [{graph}]")
    if not graph or not os.path.isfile(graph):
        print(f"ERROR: File {graph} does not exist.")
        print("ERROR: Benchmarking failed.")
        return 1
    threads = int(flags.get("num_threads", "1"))
    runs = int(flags.get("num_runs", "50"))
    warmup = int(flags.get("warmup_runs", "1"))
    min_secs = float(flags.get("min_secs", "1"))  # benchmark_model's defaults: --min_secs=1, --warmup_min_secs=0.5
    warmup_min_secs = float(flags.get("warmup_min_secs", "0.5"))
    xnnpack = flags.get("use_xnnpack", "true") != "false"
    print(f"INFO: Num threads: [{threads}]")
    start_rss = _rss_mb("VmRSS")
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edge.devices.runner import _litert_coverage  # the dataflow walk over DELEGATE nodes

    t0 = time.perf_counter()
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=graph, num_threads=threads, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    init_us = (time.perf_counter() - t0) * 1e6
    print(f"INFO: Loaded model {graph}")
    if xnnpack:
        cov = _litert_coverage(interp)
        print("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
        print(f"INFO: Replacing {cov['delegated']} out of {cov['total']} node(s) with delegate "
              f"(TfLiteXNNPackDelegate) node, yielding {cov['partitions']} partitions for the whole graph.")
    print(f"INFO: The input model file size (MB): {os.path.getsize(graph) / 1e6:.6f}")
    print(f"INFO: Initialized session in {init_us / 1e3:.3f}ms.")
    init_rss = _rss_mb("VmRSS")
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))

    def timed(n, secs):
        """At least n runs and at least secs seconds, as benchmark_model runs."""
        out = []
        end = time.perf_counter() + secs
        while len(out) < n or time.perf_counter() < end:
            t = time.perf_counter()
            interp.invoke()
            out.append((time.perf_counter() - t) * 1e6)
        return out

    def line(ts):
        q = statistics.quantiles(ts, n=20) if len(ts) > 1 else [ts[0]] * 19
        std = statistics.pstdev(ts) if len(ts) > 1 else 0.0
        return (f"count={len(ts)} first={ts[0]:.0f} curr={ts[-1]:.0f} min={min(ts):.0f} max={max(ts):.0f} "
                f"avg={statistics.mean(ts):g} std={std:.0f} p5={q[0]:.0f} median={statistics.median(ts):.0f} "
                f"p95={q[-1]:.0f}")

    print(f"INFO: Running benchmark for at least {warmup} iterations and at least {warmup_min_secs:g} seconds but "
          "terminate if exceeding 150 seconds.")
    w = timed(max(1, warmup), warmup_min_secs)
    print("INFO: " + line(w))
    print(f"INFO: Running benchmark for at least {runs} iterations and at least {min_secs:g} seconds but terminate "
          "if exceeding 150 seconds.")
    r = timed(runs, min_secs)
    print("INFO: " + line(r))
    print(f"INFO: Inference timings in us: Init: {init_us:.0f}, First inference: {w[0]:.0f}, "
          f"Warmup (avg): {statistics.mean(w):g}, Inference (avg): {statistics.mean(r):g}")
    print("INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
          "to the actual memory footprint of the model at runtime. Take the information at your discretion.")
    print(f"INFO: Memory footprint delta from the start of the tool (MB): init={init_rss - start_rss:g} "
          f"overall={_rss_mb('VmRSS') - start_rss:g}")
    if flags.get("report_peak_memory_footprint") == "true":
        print(f"INFO: Overall peak memory footprint (MB) via periodic monitoring: {_rss_mb('VmHWM'):g}")
    if flags.get("enable_op_profiling") == "true" and flags.get("profiling_output_csv_file"):
        plain = Interpreter(model_path=graph,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        ops = plain._get_ops_details()
        each = statistics.mean(r) / 1e3 / max(1, len(ops))
        with open(flags["profiling_output_csv_file"], "w") as f:
            f.write("Operator-wise Profiling Info for Regular Benchmark Runs:\nRun Order\n")
            f.write("node type,first,avg_ms,%,cdf%,mem KB,times called,name\n")
            for i, o in enumerate(ops):
                pct = 100.0 / len(ops)
                f.write(f'{o["op_name"]},{each:.4f},{each:.4f},{pct:.3f}%,{pct * (i + 1):.3f}%,0.000,1,'
                        f'"[{o["op_name"].lower()}_{i}]:{i}"\n')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
