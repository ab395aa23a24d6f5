"""The reference todo system built on todo-observability: backend, recurring, notifications, frontend.

Each service is a package with `create_app(settings=None)`; `reference_app.common` holds what they
share (event contracts, authentication, recurrence rules, settings). The services use only the
SDK's public API.
"""
