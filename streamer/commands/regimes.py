"""`streamer regimes analyze PRICES.csv`: how many market regimes a price series shows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamer.errors import ConfigError

NAME = "regimes"
HELP = "market regimes in a price CSV: HMM / KMeans / DBSCAN per K, and a plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="regimes_action", metavar="ACTION")
    a = sub.add_parser(
        "analyze",
        help="score K = 2..5 regimes and plot the filtered decode",
        description="For K = 2..5: HMM log-likelihood and BIC on normalised log-returns, "
        "KMeans inertia and silhouette on (return, volatility); DBSCAN's clusters and noise; "
        "the regimes of the BIC-best HMM; a PNG of the price coloured by filtered regime.",
    )
    a.add_argument("prices", type=Path, metavar="PRICES.csv", help="price CSV (dates, closes)")
    a.add_argument(
        "--out",
        type=Path,
        metavar="PNG",
        help="where to save the plot (default: ./NAME-regimes.png)",
    )
    a.add_argument("--price-column", metavar="NAME", help="price column (default: detected)")
    a.add_argument("--time-column", metavar="NAME", help="time column (default: detected)")
    a.add_argument(
        "--window", type=int, default=20, metavar="N", help="volatility window (default 20)"
    )
    a.add_argument("--seed", type=int, default=0, help="seed for the fits (default 0)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "regimes_action", None) != "analyze":
        print("usage: streamer regimes analyze PRICES.csv [--out PNG]", file=sys.stderr)
        return 2
    from streamer.market.analyze import analyze, plot, report_lines
    from streamer.market.ticks import read_csv

    if args.window < 2:
        raise ConfigError(f"--window must be >= 2, not {args.window}")
    series = read_csv(args.prices, time_column=args.time_column, price_column=args.price_column)
    result = analyze(
        series.times, series.prices, name=args.prices.name, window=args.window, seed=args.seed
    )
    for line in report_lines(result):
        print(line)
    if series.skipped:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(series.skipped.items()))
        print(f"\nrows skipped: {skipped}")
    out = args.out or Path(f"{args.prices.stem}-regimes.png")
    plot(result, out)
    print(f"\nplot: {out}")
    return 0
