"""`python -m digitrec`: see digitrec.cli."""

from digitrec.cli import main

raise SystemExit(main())
