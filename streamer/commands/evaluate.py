"""`streamer evaluate DATA_DIR [--folds K]`: k-fold accuracy, confusion matrix, rejection."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamer.commands.train import add_arguments as add_train_arguments
from streamer.commands.train import config_from_args
from streamer.errors import DataError
from streamer.progress import Progress
from streamer.speech.evaluate import evaluate, plot_confusion

NAME = "evaluate"
HELP = "stratified k-fold evaluation of the training recipe on DATA_DIR/LABEL/*.wav"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, out_default="confusion.png", out_help="confusion-matrix PNG to write")
    p.add_argument(
        "--folds",
        type=_folds,
        default=5,
        help="number of folds (stratified; by speaker with --group-by), or loso: one speaker "
        "out per fold",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def _folds(text: str) -> int | str:
    if text == "loso":
        return text
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor loso") from None
    if k < 2:
        raise argparse.ArgumentTypeError("need at least 2 folds")
    return k


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.folds == "loso" and not args.group_by:
        raise DataError("--folds loso needs --group-by (which part of a file name is the speaker)")
    steps = 25 if args.folds == "loso" else int(args.folds) + 1
    with Progress(steps, "evaluating") as bar:
        res = evaluate(args.data_dir, args.folds, cfg, progress=bar.advance, group_by=args.group_by)
    clean = res["clean"]
    grouped = bool(args.group_by)
    kind = f"{args.folds}-fold" + (" by speaker" if grouped else "")
    plot_confusion(
        clean, args.out, f"{Path(args.data_dir).name}: {kind} accuracy {clean.accuracy():.1%}"
    )
    worst = clean.worst_group() if grouped else ("", float("nan"))
    figures = {
        "folds": args.folds,
        "group_by": args.group_by,
        "n": clean.n,
        "accuracy": clean.accuracy(),
        "label_accuracy": clean.label_accuracy(),
        "speaker_mean": clean.group_mean() if grouped else None,
        "worst_speaker": {"speaker": worst[0], "accuracy": worst[1]} if grouped else None,
        "per_speaker": clean.per_group() if grouped else None,
        "recall": clean.recall(),
        "false_reject": clean.false_reject(),
        "unseen_voices_accuracy": res["voices"].accuracy() if "voices" in res else None,
        "unseen_voices_false_reject": res["voices"].false_reject() if "voices" in res else None,
        "oov_true_reject": res["oov"].true_reject() if "oov" in res else None,
        "confusion": clean.confusion().tolist(),
        "labels": clean.labels,
        "png": str(args.out),
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    w = max(len(s) for s in clean.labels)
    print(
        f"{kind} accuracy: {clean.accuracy():.2%} best word, {clean.label_accuracy():.2%} "
        f"published label ({clean.n} utterances)"
    )
    if grouped:
        per = clean.per_group()
        print(
            f"speakers: {len(per)}, mean {clean.group_mean():.2%}, worst {worst[0]} {worst[1]:.2%}"
        )
        print("per-speaker accuracy:")
        for name, acc in per.items():
            print(f"  {name}  {acc:.1%}")
    print("per-word recall:")
    for word, r in clean.recall().items():
        print(f"  {word:<{w}}  {r:.1%}")
    print("confusion matrix (rows: spoken, columns: recognised):")
    print("  " + " " * w + "  " + " ".join(f"{s[:5]:>5}" for s in clean.labels))
    for word, row in zip(clean.labels, clean.confusion(), strict=True):
        print(f"  {word:<{w}}  " + " ".join(f"{v:>5d}" for v in row))
    print("rejection at the bank's operating threshold:")
    print(f"  in-vocabulary (held-out folds) false-reject: {clean.false_reject():.1%}")
    if "voices" in res:
        v = res["voices"]
        print(
            f"  unseen synthetic voices: accuracy {v.accuracy():.1%}, "
            f"false-reject {v.false_reject():.1%} ({v.n} utterances)"
        )
    if "oov" in res:
        print(
            f"  out-of-vocabulary words: true-reject {res['oov'].true_reject():.1%} "
            f"({res['oov'].n} utterances)"
        )
    print(f"confusion matrix saved to {args.out}", file=sys.stderr)
    return 0
