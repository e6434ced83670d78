"""`python -m eai_ray.cli ...`: the same as `eai ...`."""
import sys

from eai_ray.cli import main

sys.exit(main())
