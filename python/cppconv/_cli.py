"""The ``cppconv`` command (also ``python -m cppconv``): info, bench, run, tune and demo.

What it lists comes from the installed package at run time (``cppconv.__all__``, the native
module's ``*_algorithms()`` functions), so new operators show up without changes here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import Any, Dict, List, Optional, Sequence


def _algorithm_isa(name: str) -> str:
    """The ISA an algorithm name belongs to: ``conv2d_tiled_f32__avx2`` -> ``avx2``.

    Names without the ``__isa`` suffix (the references) run under every ISA.
    """
    if "__" not in name:
        return "any"
    return name.split("__", 1)[1].split("_", 1)[0]


def algorithms_by_isa() -> Dict[str, Dict[str, List[str]]]:
    """{operator family: {isa: [algorithm, ...]}} from every ``_native.<family>_algorithms()``."""
    from . import _native

    families: Dict[str, Dict[str, List[str]]] = {}
    for attr in sorted(dir(_native)):
        if not attr.endswith("_algorithms") or attr.startswith("_"):
            continue
        by_isa: Dict[str, List[str]] = {}
        for name in getattr(_native, attr)():
            by_isa.setdefault(_algorithm_isa(str(name)), []).append(str(name))
        families[attr[: -len("_algorithms")]] = by_isa
    return families


def info_report() -> Dict[str, Any]:
    """Everything ``cppconv info`` prints, as one JSON-able dict."""
    import cppconv

    report = dict(cppconv.info())
    report["max_isa_env"] = os.environ.get("CPPCONV_MAX_ISA")
    report["api"] = sorted(n for n in cppconv.__all__ if not n.startswith("_"))
    report["algorithms"] = algorithms_by_isa()
    return report


def cmd_info(args: argparse.Namespace) -> int:
    report = info_report()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    cap = report["max_isa_env"]
    print(f"cppconv {report['version']}")
    print(f"  ISA in use:      {report['isa']} (chosen at import: {report['default_isa']}; "
          f"CPPCONV_MAX_ISA={cap if cap else 'unset'})")
    print(f"  ISAs available:  {', '.join(report['available_isas'])}")
    print(f"  CPU features:    {', '.join(report['cpu_features']) or 'none beyond the ISAs'}")
    print(f"  threads:         {report['threads']}")
    print(f"  OpenMP:          {'yes' if report['openmp'] else 'no (single-threaded build)'}")
    print(_wrapped("  API:             ", report["api"]))
    isas = list(report["available_isas"]) + ["any"]
    for family, by_isa in report["algorithms"].items():
        print(f"{family} algorithms per ISA (in the order of the ISA's kernel table):")
        for isa in isas + sorted(set(by_isa) - set(isas)):
            if isa in by_isa:
                label = "reference (all)" if isa == "any" else isa
                print(_wrapped(f"  {label + ':':16s} ", by_isa[isa]))
    return 0


def _wrapped(label: str, names: Sequence[str], width: int = 110) -> str:
    """`label` then the names, comma-separated, continuation lines indented under the first name."""
    return textwrap.fill(", ".join(names), width=width, initial_indent=label,
                         subsequent_indent=" " * len(label), break_on_hyphens=False)


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    argv = list(args.bench_argv)
    return bench.run(args, argv)


def cmd_demo(args: argparse.Namespace) -> int:
    from . import _demo

    try:
        written = _demo.run_demo(args.image, args.output, use_matplotlib=not args.no_matplotlib)
    except (OSError, ValueError) as e:  # the image (missing, not a PNG it can read) or the output folder
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"cppconv demo: error: {message}", file=sys.stderr)  # the user's to fix: no traceback
        return 1
    if not args.no_matplotlib and not _demo._has_matplotlib():
        print('cppconv demo: matplotlib is not installed, so the figures have no titles or labels; '
              'for labelled figures: pip install "cppconv[plot]"', file=sys.stderr)
    for path in written:
        print(path)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from . import _tunecmd

    return _tunecmd.cmd_tune(args)


def cmd_run(args: argparse.Namespace) -> int:
    from . import _netrun

    return _netrun.cmd_run(args)


def make_parser() -> argparse.ArgumentParser:
    from . import __version__, bench

    parser = argparse.ArgumentParser(prog="cppconv", description="cppconv: fast 2-D convolution on NumPy arrays.")
    parser.add_argument("--version", action="version", version=f"cppconv {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands")
    sub.required = True

    p_info = sub.add_parser("info", help="version, ISAs, threads, OpenMP and the algorithms each ISA offers")
    p_info.add_argument("--json", action="store_true", help="print the report as JSON")
    p_info.set_defaults(handler=cmd_info)

    p_bench = sub.add_parser(
        "bench", help="benchmark conv2d against NumPy and other libraries",
        description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(p_bench)
    p_bench.set_defaults(handler=cmd_bench, check=lambda args: bench.check_arguments(p_bench, args))

    from . import _netrun

    p_run = sub.add_parser(
        "run", help="run an ONNX model on random inputs: outputs' shapes, the plan, --bench, --compare",
        description=_netrun.__doc__,
    )
    _netrun.add_arguments(p_run)
    p_run.set_defaults(handler=cmd_run)

    from . import _tunecmd

    p_tune = sub.add_parser(
        "tune", help="fill the tuning cache: time the algorithms of the benchmark's layers (or --model's)",
        description=_tunecmd.__doc__,
    )
    _tunecmd.add_arguments(p_tune)
    p_tune.set_defaults(handler=cmd_tune, check=lambda args: _tunecmd.check_arguments(p_tune, args))

    p_demo = sub.add_parser(
        "demo", help="convolve an image with a bank of named kernels and draw the feature maps",
        description="Writes the feature maps of IMAGE (default: the sample picture shipped with cppconv) "
                    "under a bank of edge, corner, blur and sharpen kernels, as a grid figure and one PNG "
                    "per map, plus a figure of a 3x3 kernel sliding over a 5x5 input.",
    )
    p_demo.add_argument("image", nargs="?", help="a PNG file (8-bit gray or RGB; any format with matplotlib)")
    p_demo.add_argument("-o", "--output", default="cppconv-demo", metavar="DIR",
                        help="folder for the pictures (default: ./cppconv-demo)")
    p_demo.add_argument("--no-matplotlib", action="store_true",
                        help="use the built-in PNG writer even when matplotlib is installed")
    p_demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``cppconv`` console script; returns the exit status."""
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    if args.command == "bench":
        args.bench_argv = argv[1:]
    try:
        code: int = args.handler(args)
    except BrokenPipeError:
        # `cppconv info | head`: the reader left; not an error of ours.  Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
