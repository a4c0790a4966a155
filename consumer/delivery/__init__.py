"""Delivery: per-visit lanes, coalescing, what a reply means (outcome), retries, limits."""
