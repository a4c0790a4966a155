"""engagement-consumer: Kafka lead/service events to LivePerson Engagement Attributes."""

__version__ = "0.1.0"
