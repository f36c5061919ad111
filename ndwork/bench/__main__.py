"""python -m ndwork.bench SUITE [--quick] [--out DIR]: run a benchmark suite, print its
table and write DIR/SUITE.json."""

import argparse
import importlib

from ndwork.bench.common import write

SUITES = ("kernels", "models", "gemm", "precision", "attention", "recurrent", "parallel",
          "switches", "peers", "parity", "latency", "fidelity", "accuracy", "probabilistic",
          "startup", "report")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ndwork.bench", description=__doc__)
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--out", default="results", help="folder for the JSON results")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"ndwork.bench.{args.suite}")
    results = module.run(quick=args.quick)
    print(module.render(results))
    print(f"\nwrote {write(args.suite, results, args.out)}")


if __name__ == "__main__":
    main()
