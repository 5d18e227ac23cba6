"""Command line.

    python -m idselect demo    generate() with and without ID-Selection (the main job)
    python -m idselect bench   time the op: reference vs native kernel on default sizes
    python -m idselect flops   theoretical prefill FLOPs with and without pruning
    python -m idselect eval    accuracy on a local JSONL dataset, unpruned vs each keep
"""
import argparse
import sys

import torch

import idselect
from .tools import benchmark
from .tools.cli_args import positive_int


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idselect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="generate() with and without ID-Selection", add_help=False)
    sub.add_parser("flops", help="theoretical prefill FLOPs", add_help=False)
    sub.add_parser("eval", help="accuracy harness (local weights and JSONL)", add_help=False)
    bench = sub.add_parser("bench", help="time reference vs native kernel on default sizes")
    bench.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--repeats", type=positive_int, default=7)
    args, rest = parser.parse_known_args(argv)
    if args.command in ("demo", "flops", "eval"):
        import importlib

        tool = "evaluate" if args.command == "eval" else args.command
        return importlib.import_module(f".tools.{tool}", __package__).main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    cases = [benchmark.Case(1, 576, 1024, 64), benchmark.Case(1, 576, 4096, 64)]
    print(f"idselect {idselect.__version__}, torch {torch.__version__}, native backends "
          f"{idselect.native_backends()}, device: {benchmark.device_name(args.device)}, "
          f"threads: {torch.get_num_threads()}")
    rows = benchmark.run(cases, ["reference", "eager", "native", "floor_read"], device=args.device, repeats=args.repeats)
    print(benchmark.format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
