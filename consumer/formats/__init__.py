"""Input formats: decode each message by what it is, then map it onto the flat event contract.

Data flows one way: ``message`` (what a decoded message is) <- ``cloudevents``, ``connect``,
``registry`` (one format each) <- ``mapping`` (FIELD_MAP, TYPE_MAP as ``consumer.config.fieldmap``
parses them) <- ``reader`` (detection and the one entry point,
:class:`~consumer.formats.reader.EventReader`), which ``consumer.formats.events`` validates exactly
as it validates flat JSON.
"""
