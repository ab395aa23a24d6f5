"""The reference todo system built on todo-observability (backend, recurring, notifications, frontend).

Its services and operations pack arrive with the reference-system issue; the SDK core comes first.
"""
