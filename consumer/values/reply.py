"""The outcome of one attempt to send an attribute array: an HTTP status, or a transport error kind."""

from __future__ import annotations

from dataclasses import dataclass, field

NOT_OURS = "not_ours"  # Reply.error: not sent, the batch's partitions were revoked during a lookup


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of one attempt: an HTTP status, or a transport error kind."""

    status: int | None
    error: str | None = None  # timeout | connection_error | domain_lookup | credentials | token_* | not_ours
    detail: str = ""
    retry_after: str | None = None
    duration: float = 0.0
    authorization: str = field(default="", repr=False)  # the header sent (to drop a refused token)
    cause: str = ""  # connection_error: why (one of consumer.liveperson.causes.CAUSES); else ""

    @property
    def label(self) -> str:
        """The `status` label of engagement_requests_total."""
        return str(self.status) if self.status is not None else (self.error or "error")
