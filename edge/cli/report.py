"""`edge report`: one self-contained HTML page (plots embedded) or Markdown from results and manifests."""

from __future__ import annotations

import argparse

HELP = "write one offline HTML report (or Markdown) from bench results and export manifests"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="bench results (trial JSON lines, summaries) and export dirs; directories are searched")
    p.add_argument("-o", "--out", default=None, metavar="FILE", help="HTML file to write (default report.html, "
                   "or none when only --markdown is given)")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown ('-' for stdout)")
    p.add_argument("--device", help="only results from this device (id, name, kind or profile)")
    p.add_argument("--title", default="edge report", help="page title")


def run(args: argparse.Namespace) -> int:
    import sys

    from edge.report import collect, render_html, render_markdown

    out = args.out if args.out is not None else (None if args.markdown else "report.html")
    data = collect(args.results, device=args.device)
    data.title = args.title
    from edge._io import write_text

    if out:
        write_text(out, render_html(data))
        print(f"wrote {out} ({len(data.measurements)} runs, {len(data.verdicts)} verdicts)", file=sys.stderr)
    if args.markdown == "-":
        sys.stdout.write(render_markdown(data))
    elif args.markdown:
        write_text(args.markdown, render_markdown(data))
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0
