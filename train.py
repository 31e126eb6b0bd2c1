"""python train.py recipe=NAME [key=value ...]   (python train.py recipe=list for the recipes)"""

import sys

from metasd_train.errors import one_line_errors

if __name__ == "__main__":
    with one_line_errors():
        from metasd_train.cli.train import main

        main(sys.argv[1:])
