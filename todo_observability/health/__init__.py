"""Health: liveness, readiness and startup probes on a check engine that never hangs.

```python
from todo_observability.health import checks

obs = configure(app, service_name="backend")
obs.health.add(checks.database(engine), checks.dapr_sidecar())
```

`configure()` serves `/health/live`, `/health/ready` and `/health/startup`
(the prefix is `TODO_OBS_HEALTH_PATH`), leaves them out of RED metrics, traces
and the access log (failures are still logged), and turns readiness to 503 as
soon as the process is told to stop.
"""

from todo_observability.health.engine import GroupReport, HealthEngine
from todo_observability.health.model import GROUPS, Check, CheckFunction, CheckResult, Status

__all__ = [
    "GROUPS",
    "Check",
    "CheckFunction",
    "CheckResult",
    "GroupReport",
    "HealthEngine",
    "Status",
]
