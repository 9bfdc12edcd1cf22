"""Run `lrp study large-vs-small` by path: python tools/study_large_vs_small.py --help"""

import sys

from lrp_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", "large-vs-small", *sys.argv[1:]]))
