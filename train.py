"""python train.py recipe=NAME [key=value ...]   (python train.py recipe=list for the recipes)"""

import sys

from metasd_train.errors import one_line_errors


def main(argv: list[str]) -> None:
    from metasd_train.config import compose, recipes

    if not argv or argv[0] in ("-h", "--help") or "recipe=list" in argv:
        print(__doc__.strip())
        print("\nrecipes:")
        for name, text in recipes().items():
            print(f"  {name:<12} {text}")
        print("\nany config key can follow as key=value, e.g. drafter.gamma=5 trainer.devices=2 run_dir=runs/x/y")
        return
    from metasd_train.pipeline.runner import train

    train(compose(argv))


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
