"""What `python train.py` does: compose the recipe with the overrides, then run its stages."""

from __future__ import annotations

USAGE = "python train.py recipe=NAME [key=value ...]   (python train.py recipe=list for the recipes)"


def print_recipes() -> None:
    from metasd_train.compose import recipes

    print(USAGE)
    print("\nrecipes:")
    for name, text in recipes().items():
        print(f"  {name:<12} {text}")
    print("\nany config key can follow as key=value, e.g. drafter.gamma=5 trainer.devices=2 run_dir=runs/x/y")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or "recipe=list" in argv:
        print_recipes()
        return
    from metasd_train.compose import compose
    from metasd_train.pipeline.runner import train

    train(compose(argv))
