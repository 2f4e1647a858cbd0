import sys

from bench.report.page import main

sys.exit(main())
