#!/usr/bin/env python3
"""Time original vs pruned models, locally or on a device over SSH (same as ``lrp latency``)."""

import sys

from lrp_plugin.latency.cli import main

if __name__ == "__main__":
    sys.exit(main())
