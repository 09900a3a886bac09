"""`edge report`: one offline HTML page, checked in a real headless browser (Debian's chromium).

The results are synthetic records in the harness's schema (tests/synthetic_results.py) with known numbers,
including the Mobile-Former-294M / MobileNetV3-Large pair whose MACs are similar and latencies are not.
Counted params/MACs come from a fixed table: building the networks is the zoo tests' job.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from tests.conftest import require_tool
from tests.synthetic_results import PIXEL, write_manifest, write_trials
from tests.test_claims import fake_complexity

COMPLEXITY = {"mobileformer-294m": (11.4, 294.0), "mobilenetv3-large-1.0": (5.48, 217.0),
              "ghostnet-1.0x": (5.18, 141.0)}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import edge.models

    tmp = tmp_path_factory.mktemp("report")
    res = tmp / "results"
    f = res / "host" / "trials.jsonl"
    write_trials(f, "mobileformer-294m", [12.1, 12.0, 12.3], run_id="h1")
    write_trials(f, "mobilenetv3-large-1.0", [5.6, 5.5, 5.7], run_id="h2")
    write_trials(f, "ghostnet-1.0x", [4.1, 4.0, 4.2], run_id="h3")
    write_trials(f, "ghostnet-1.0x", [3.6, 3.7, 3.5], target="onnx", run_id="h4")
    write_trials(f, "ghostnet-1.0x", [5.1, 5.0, 5.2], precision="int8", run_id="h5")
    g = res / "pixel" / "trials.jsonl"
    write_trials(g, "ghostnet-1.0x", [30.0, 30.5, 29.8], device=PIXEL, run_id="p1", samples=False)
    write_trials(g, "mobilenetv3-large-1.0", [45.0, 46.0, 45.5], device=PIXEL, run_id="p2", samples=False)
    out = res / "exports"
    write_manifest(out, "ghostnet-1.0x", "tflite", "fp32", size_bytes=20_700_000)
    write_manifest(out, "ghostnet-1.0x", "tflite", "int8", size_bytes=5_600_000, sqnr_db=24.5, top1_agree=0.94)
    write_manifest(out, "ghostnet-1.0x", "onnx", "int8", size_bytes=5_500_000, sqnr_db=27.0, top1_agree=0.97)
    write_manifest(out, "mobileformer-294m", "tflite", "fp32", size_bytes=45_000_000,
                   ops={"RESHAPE": 590, "TRANSPOSE": 150, "CONV_2D": 1000})
    html, md = tmp / "report.html", tmp / "report.md"
    mp = pytest.MonkeyPatch()
    mp.setattr(edge.models, "complexity", fake_complexity(COMPLEXITY).fn)
    mp.setenv("EDGE_CACHE_DIR", str(tmp / "cache"))
    try:
        rc = main(["report", str(res), "-o", str(html), "--markdown", str(md), "--title", "test report"])
    finally:
        mp.undo()
    assert rc == 0
    return tmp, html, md


def test_page_is_self_contained_and_holds_every_section(report):
    _, html, _ = report
    page = html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "the page must open offline"
    assert "<link" not in page and "<script" not in page
    imgs = re.findall(r'<img class="plot" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) >= 7  # latency x2 devices, complexity x2, claimed-vs-measured x2, fidelity, sizes
    assert len(re.findall(r"<img ", page)) == len(imgs)
    for section in ("summary", "claims", "latency", "complexity", "flops-vs-latency", "claimed-vs-measured",
                    "fidelity", "devices"):
        assert f'id="{section}"' in page
    table = page[page.index('id="claims-table"'):]
    table = table[:table.index("</table>")]
    assert "mobileformer-294m-similar-madds-2x-latency-host" in table and "confirmed" in table
    assert "ghostnet-1.0x-faster-than-mobilenetv3-large-1.0" in table and "Pixel 7" in table
    flops = page[page.index('id="flops-table"'):]
    flops = flops[:flops.index("</table>")]
    assert "mobileformer-294m" in flops and "mobilenetv3-large-1.0" in flops
    assert "MACs say nothing about latency here" in page  # the summary's call-out
    assert "Synthetic x86 CPU" in page and "Tensor G2" in page  # device fingerprints
    assert "ai_edge_litert" in page and "2.3.0" in page  # tool versions from the manifests
    assert "24.5" in page and "0.94" in page  # int8 SQNR and top-1 agreement
    fastest = page[page.index('id="fastest-table"'):]
    assert "onnx fp32" in fastest[:fastest.index("</table>")]  # ghostnet's fastest host artifact is the ONNX one


def test_markdown_has_the_same_verdicts(report):
    _, _, md = report
    text = md.read_text()
    assert text.startswith("# test report")
    assert "mobileformer-294m-similar-madds-2x-latency-host" in text
    assert "MACs say nothing about latency here" in text
    assert "| ghostnet-1.0x | tflite | int8 | 5.600 | 24.5 | 0.94 |" in text


def _chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.system
def test_plots_render_in_a_real_browser(report):
    exe = require_tool("chromium", "chromium-browser", "google-chrome")
    tmp, html, _ = report
    page = html.read_text()
    n_imgs = len(re.findall(r"<img ", page))
    # A copy with a probe: after load, each image's decoded size goes into an attribute that --dump-dom shows.
    probe = tmp / "probe.html"
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => {"
                                  "for (const i of document.images) i.setAttribute('data-natural', "
                                  "i.naturalWidth + 'x' + i.naturalHeight);"
                                  "document.body.setAttribute('data-loaded', 'yes');});</script></body>"))
    r = _chromium(exe, tmp / "chrome-profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'data-loaded="yes"' in r.stdout, "the page's load event never fired"
    sizes = [tuple(map(int, s.split("x"))) for s in re.findall(r'data-natural="(\d+x\d+)"', r.stdout)]
    assert len(sizes) == n_imgs
    for w, h in sizes:
        assert w >= 300 and h >= 150, f"a plot decoded to {w}x{h}: not a real image"
    assert 'id="claims-table"' in r.stdout

    shot = tmp / "shot.png"
    r = _chromium(exe, tmp / "chrome-profile", "--window-size=1280,5000", f"--screenshot={shot}", html.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from PIL import Image

    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 5000)
    small = im.resize((320, 1250))
    px = [tuple(p) for p in np.asarray(small).reshape(-1, 3).tolist()]
    ink = sum(1 for p in px if min(p) < 235) / len(px)
    colors = len(set(px))
    assert ink > 0.08, f"the page is mostly blank ({ink:.1%} ink)"
    assert colors > 200, f"only {colors} colours: the plots did not render"


def test_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "no edge results in" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
