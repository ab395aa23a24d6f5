"""`python -m todo_observability.cli`: the `todo-obs` command."""

from todo_observability.cli import main

raise SystemExit(main())
