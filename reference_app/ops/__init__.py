"""The operations pack, as code: SLOs, alert rules, dashboards and trace flows of the reference system."""
