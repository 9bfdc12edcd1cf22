"""Run `lrp study order` by path: python tools/study_order.py --help"""

import sys

from lrp_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", "order", *sys.argv[1:]]))
