"""Stand-in for ONNX Runtime's ``onnxruntime_perf_test`` on the emulated phone (tests only).

No Android build of the binary can run here, so the emulated phone runs this script in its place. It takes
perf_test's flags (``-e EP -m times -r N -x THREADS -y 1 -I -s [-p PROFILE_PREFIX] MODEL``), runs the model
with the host's real ONNX Runtime, and prints perf_test's statistics format (average in ms, percentiles in
seconds, peak working set in bytes). With ``-p`` ONNX Runtime itself writes its profile JSON next to the
prefix, as the real binary does. The fixture prepends a shebang for the test's Python.
"""

import sys
import time


def main(argv):
    opts, model, i = {}, None, 0
    while i < len(argv):
        a = argv[i]
        if a in ("-e", "-m", "-r", "-x", "-y", "-p", "-t"):
            opts[a] = argv[i + 1]
            i += 2
            continue
        if a.startswith("-"):
            opts[a] = True
        else:
            model = a
        i += 1
    import numpy as np
    import onnxruntime as ort

    if opts.get("-e", "cpu") != "cpu":
        print(f"{opts['-e']} execution provider is not supported in this build. ")
        return 255
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(opts.get("-x", "1"))
    if "-p" in opts:
        so.enable_profiling = True
        so.profile_file_prefix = opts["-p"]
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    print(f"Session creation time cost: {time.perf_counter() - t0:g} s")
    feeds = {x.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in x.shape])
             .astype(np.float32) for x in sess.get_inputs()}
    sess.run(None, feeds)  # perf_test's warm-up run
    runs = int(opts.get("-r", "1000"))
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t)
    if "-p" in opts:
        sess.end_profiling()
    s = sorted(ts)

    def pct(q):
        return s[min(len(s) - 1, int(q * len(s)))]

    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    print(f"Total inference requests: {runs}")
    print(f"Average inference time cost: {1e3 * sum(ts) / runs:g} ms")
    print(f"Total inference run time: {sum(ts):g} s")
    print(f"Number of inferences per second: {runs / sum(ts):g}")
    print("Avg CPU usage: 50 %")
    print(f"Peak working set size: {hwm} bytes")
    print(f"Min Latency: {s[0]:g} s")
    print(f"Max Latency: {s[-1]:g} s")
    for q, name in ((0.5, "P50"), (0.9, "P90"), (0.95, "P95"), (0.99, "P99"), (0.999, "P999")):
        print(f"{name} Latency: {pct(q):g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
