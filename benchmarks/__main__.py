"""`python -m benchmarks` is `benchmarks/run`."""

import sys

from benchmarks.runner import main

sys.exit(main())
