"""`python -m bulkgen_stack up`: the `bulkgen` command without the console script."""

import sys

from bulkgen_stack.cli import main

sys.exit(main())
