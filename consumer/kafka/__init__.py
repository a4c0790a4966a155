"""Kafka in: the source (poll thread, rebalances, commits), offsets and offset maps, records, dead letters."""
