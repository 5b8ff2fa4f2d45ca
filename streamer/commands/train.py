"""`streamer train DATA_DIR --out BANK`: a calibrated word bank from LABEL/*.wav."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from streamer.progress import Progress
from streamer.speech.bank import COVARIANCE_TYPES, TOPOLOGIES, HmmConfig
from streamer.speech.train import TrainConfig, list_dataset, train_bank

NAME = "train"
HELP = "train a word bank from DATA_DIR/LABEL/*.wav"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d, h = TrainConfig(), HmmConfig()
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of LABEL/*.wav recordings")
    p.add_argument("--out", "-o", required=True, metavar="BANK", help="bank file to write (.npz)")
    p.add_argument("--states", type=int, default=h.n_states, help="states per word (0: by length)")
    p.add_argument("--topology", choices=TOPOLOGIES, default=h.topology)
    p.add_argument("--covariance", choices=COVARIANCE_TYPES, default=h.covariance_type)
    p.add_argument("--mix", type=int, default=h.n_mix, help="Gaussians per state (GMM emissions)")
    p.add_argument("--restarts", type=int, default=h.n_restarts, help="random restarts per word")
    p.add_argument("--iter", type=int, default=h.n_iter, help="EM iterations per restart")
    p.add_argument(
        "--synth-voices",
        type=int,
        default=d.synth_voices,
        help="synthetic voices that also speak each word (0: real recordings only)",
    )
    p.add_argument("--no-noise", action="store_true", help="no noise augmentation")
    p.add_argument("--no-calibrate", action="store_true", help="skip confidence calibration")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--jobs", "-j", type=int, default=0, help="worker processes (0: one per core)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    hmm = HmmConfig(
        n_states=args.states,
        topology=args.topology,
        covariance_type=args.covariance,
        n_mix=args.mix,
        n_restarts=args.restarts,
        n_iter=args.iter,
        seed=args.seed,
    )
    cfg = replace(
        TrainConfig(),
        hmm=hmm,
        synth_voices=args.synth_voices,
        seed=args.seed,
        calibrate=not args.no_calibrate,
        jobs=args.jobs,
    )
    if args.no_noise:
        cfg = replace(cfg, noise_kinds=())
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    files = list_dataset(args.data_dir)
    errors: list[str] = []

    def on_error(msg: str) -> None:
        errors.append(msg)
        print(f"streamer train: error: {msg}", file=sys.stderr)

    steps = len(files) + (1 if cfg.calibrate else 0)
    with Progress(steps, "training") as bar:
        bank = train_bank(args.data_dir, cfg, on_error=on_error, progress=bar.advance)
    bank.save(args.out)
    cal = bank.info.get("calibration", {})
    print(
        f"wrote {args.out}: {len(bank.labels)} words ({', '.join(bank.labels)}), "
        f"{sum(bank.info['recordings'].values())} recordings, "
        f"{len(bank.info['synthetic_voices'])} synthetic voices, "
        f"{bank.info['train_seconds']} s"
        + (
            f"; held-out false-reject {cal['in_vocab_false_reject']:.1%}, "
            f"out-of-vocabulary reject {cal['oov_true_reject']:.1%}"
            if cal.get("oov_true_reject") is not None
            else ""
        ),
        file=sys.stderr,
    )
    return 2 if errors else 0
