"""Allow ``python -m equiv_core`` as a synonym for the ``equiv`` console script."""

from equiv_core.cli.main import main

raise SystemExit(main())
