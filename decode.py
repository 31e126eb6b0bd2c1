"""python decode.py run=runs/<recipe>/<stamp> prompt="..."          (streams the answer)
   python decode.py run=... prompts=question.jsonl [out=answers.jsonl]
options: max_new_tokens= temperature= top_p= top_k= policy= arm= feedback=bandit|full device= dtype= seed=
         fast=true|false max_len= baseline=true|false quiet=true|false"""

import sys

from metasd_train.errors import one_line_errors

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0)
    with one_line_errors():
        from metasd_train.cli.decode import main

        main(argv)
