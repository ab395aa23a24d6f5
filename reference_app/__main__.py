"""`python -m reference_app`: run the whole reference system locally (see `reference_app.run`)."""

from reference_app.run import main

raise SystemExit(main())
