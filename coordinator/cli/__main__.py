"""`python -m coordinator.cli`: the hwmatrix command, as the tests and bench scripts start it."""
import sys

from coordinator.cli.main import main

sys.exit(main())
