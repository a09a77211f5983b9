"""``python -m flag_gems``: see :mod:`flag_gems.cli`."""

from flag_gems.cli import main

raise SystemExit(main())
