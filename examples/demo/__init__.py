"""The `./dev demo` walkthrough: two monitored services, real uvicorn processes, logs, metrics and a trace."""
