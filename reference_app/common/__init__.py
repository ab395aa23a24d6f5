"""What the reference services share: event contracts, authentication, recurrence, settings."""
