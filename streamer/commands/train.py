"""`streamer train DATA_DIR --out BANK`: a calibrated word bank from LABEL/*.wav."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from streamer.audio.synth import check_language
from streamer.errors import DataError
from streamer.progress import Progress
from streamer.speech.bank import COVARIANCE_TYPES, TOPOLOGIES, HmmConfig
from streamer.speech.train import TrainConfig, list_dataset, train_bank

NAME = "train"
HELP = "train a word bank from DATA_DIR/LABEL/*.wav"


def add_arguments(
    p: argparse.ArgumentParser,
    *,
    out_default: str | None = None,
    out_help: str = "bank file to write (.npz)",
) -> None:
    """The recipe's flags; `evaluate` reuses them with an optional --out of its own."""
    d, h = TrainConfig(), HmmConfig()
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of LABEL/*.wav recordings")
    p.add_argument(
        "--out",
        "-o",
        required=out_default is None,
        default=out_default,
        metavar="BANK" if out_default is None else "FILE",
        help=out_help,
    )
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
        help="synthetic voices that also speak each word whose text is known (0: none)",
    )
    p.add_argument(
        "--say",
        action="append",
        default=[],
        metavar="LABEL=TEXT",
        help="what LABEL sounds like, for the synthetic voices (repeatable); words with no "
        "text get no synthetic examples",
    )
    p.add_argument(
        "--say-file",
        metavar="FILE",
        help="a words file: one LABEL=TEXT per line (# comments)",
    )
    p.add_argument(
        "--say-labels",
        action="store_true",
        help="the folder names are the words themselves (in --synth-language)",
    )
    p.add_argument(
        "--synth-language",
        default=d.synth_language,
        metavar="LANG",
        help=f"eSpeak NG language of the synthetic voices (default {d.synth_language})",
    )
    p.add_argument(
        "--group-by",
        metavar="REGEX",
        help="the speaker of each file: the first (group) of REGEX in its name; calibration "
        "then holds out whole speakers",
    )
    p.add_argument("--no-noise", action="store_true", help="no noise augmentation")
    p.add_argument(
        "--no-vtln",
        action="store_true",
        help="no vocal-tract-length normalisation (one speaker, no new voices to expect)",
    )
    p.add_argument(
        "--noise-dir",
        metavar="DIR",
        help="real noise recordings (*.wav) to mix into training copies beside the noise kinds",
    )
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
        say=parse_say(args.say, args.say_file),
        say_labels=args.say_labels,
        synth_language=args.synth_language,
        synth_voices=args.synth_voices,
        seed=args.seed,
        calibrate=not args.no_calibrate,
        jobs=args.jobs,
    )
    if args.noise_dir:
        folder = Path(args.noise_dir)
        files = sorted(str(p) for p in folder.glob("*.wav")) if folder.is_dir() else []
        if not files:
            raise DataError(f"{folder}: no noise recordings (*.wav) there")
        cfg = replace(cfg, noise_files=tuple(files))
    if args.synth_language != "en":
        check_language(args.synth_language)  # a wrong language is an error even unused
    if args.no_vtln:
        cfg = replace(cfg, features=replace(cfg.features, vtln=()))
    if args.no_noise:
        cfg = replace(cfg, noise_kinds=(), noise_files=())
    return cfg


def parse_say(items: list[str], path: str | None) -> tuple[tuple[str, str], ...]:
    """--say LABEL=TEXT items and a words file to (label, text) pairs; DataError if malformed."""
    pairs: list[tuple[str, str, str]] = [(item, "--say", item) for item in items]
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the words file ({e})") from None
        for n, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                pairs.append((line, f"{path}:{n}", line))
    out = []
    for item, where, text in pairs:
        label, sep, said = text.partition("=")
        if not sep or not label.strip() or not said.strip():
            raise DataError(f"{where}: {item!r} is not LABEL=TEXT")
        out.append((label.strip(), said.strip()))
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    files = list_dataset(args.data_dir)
    errors: list[str] = []

    def on_error(msg: str) -> None:
        errors.append(msg)
        print(f"streamer train: error: {msg}", file=sys.stderr)

    steps = len(files) + (1 if cfg.calibrate else 0)
    with Progress(steps, "training") as bar:
        bank = train_bank(
            args.data_dir, cfg, on_error=on_error, progress=bar.advance, group_by=args.group_by
        )
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
