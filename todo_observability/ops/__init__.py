"""Offline tooling: SLO rule generation, trace-flow checks, span files.

Nothing here runs inside a service: these modules are used by `todo-obs`, by
generators of an operations pack and by tests. A running service never imports them.
"""

__all__: list[str] = []
