"""The values that travel between the stages: a visit and its event, a record, a verdict, a reply.

The bottom of the package: these modules import nothing of `consumer`, and every stage (and the
metrics and traces beside them) may import them.
"""
