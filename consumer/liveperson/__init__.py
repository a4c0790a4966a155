"""LivePerson Engagement Attributes client pieces: request URLs and OAuth 1.0 signing."""
