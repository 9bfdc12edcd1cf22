"""Run `lrp study classify` by path: python tools/study_classify.py --help"""

import sys

from lrp_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", "classify", *sys.argv[1:]]))
