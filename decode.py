"""python decode.py run=runs/<recipe>/<stamp> prompt="..."          (streams the answer)
   python decode.py run=... prompts=question.jsonl [out=answers.jsonl]
options: max_new_tokens= temperature= top_p= top_k= policy= arm= feedback=bandit|full device= dtype= seed= baseline=true|false"""

import sys

from metasd_train.errors import one_line_errors


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from metasd_train.pipeline.decoding import decode, parse

    decode(parse(argv))


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv[1:])
