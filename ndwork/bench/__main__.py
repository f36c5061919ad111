"""python -m ndwork.bench SUITE [--quick] [--only TEXT] [--skip TEXT] [--out DIR]: run a
benchmark suite, print its table and write DIR/SUITE.json (DIR/SUITE-TEXT.json with
--only)."""

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
    parser.add_argument("--only", help="peers: only the configurations whose name contains "
                                        "this text (e.g. panel7)")
    parser.add_argument("--skip", help="peers: leave out the configurations whose name contains "
                                        "this text (e.g. employment)")
    parser.add_argument("--out", default="results", help="folder for the JSON results")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"ndwork.bench.{args.suite}")
    selection = {k: v for k, v in (("only", args.only), ("skip", args.skip)) if v}
    if selection and args.suite != "peers":
        parser.error("--only and --skip select configurations of the peers suite")
    results = module.run(quick=args.quick, **selection)
    name = f"{args.suite}-{args.only}" if args.only else args.suite
    written = write(name, results, args.out)  # first: an hour's measurements outlive a table
    print(module.render(results))
    print(f"\nwrote {written}")


if __name__ == "__main__":
    main()
