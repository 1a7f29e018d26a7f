"""The ``[verify]`` section: proof of bytes, the archive handing instances back to be compared with the guard's digests."""

from __future__ import annotations

import importlib.machinery
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RetrieveMethod(StrEnum):
    """How instances are retrieved from the archive for a byte check."""

    AUTO = "auto"
    C_GET = "c-get"
    C_MOVE = "c-move"


class CompareMode(StrEnum):
    """What a byte check compares."""

    EXACT = "exact"
    CONTENT = "content"


class ConfirmationCheck(StrEnum):
    """Which newly confirmed instances are byte-checked."""

    NONE = "none"
    SAMPLE = "sample"
    ALL = "all"


class VerifySettings(BaseModel):
    """Byte verification: retrieve instances from the archive and compare their digest with the one recorded on receipt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrieve: RetrieveMethod = Field(
        RetrieveMethod.AUTO,
        description=(
            "auto | c-get | c-move. auto: C-GET when the archive accepts it, else C-MOVE to the guard's own AE title "
            "(the archive must know the guard's address; only guard serve receives them, not a command run from a shell)."
        ),
    )
    compare: CompareMode = Field(
        CompareMode.EXACT,
        description=(
            "exact: the data set's bytes (file meta excluded) must equal those received. content: for archives that transcode or "
            "compress; the decoded pixel values and key attributes must be equal (see the administrator's guide for what it proves)."
        ),
    )
    at_confirmation: ConfirmationCheck = Field(
        ConfirmationCheck.SAMPLE,
        description="none | sample | all: newly confirmed instances byte-checked (sample: confirmation_sample per series).",
    )
    confirmation_sample: int = Field(
        1, ge=1, description="Instances per series byte-checked after confirmation (at_confirmation = sample)."
    )
    reverify_days: float = Field(
        30.0,
        ge=0,
        description="Rolling re-verification: every confirmed instance is byte-checked again within this many days. 0 turns it off.",
    )
    reverify_batch: int = Field(50, ge=1, le=10000, description="Most instances byte-checked per round of the rolling re-verification.")
    delete_sample: int = Field(
        1,
        ge=0,
        description="Instances per series retrieved and byte-checked at delete time, on top of the live C-FIND. 0 turns it off.",
    )
    timeout: float = Field(120.0, gt=0, description="Seconds a retrieve may take without the archive sending anything.")

    @field_validator("compare")
    @classmethod
    def _content_can_decode(cls, value: CompareMode) -> CompareMode:
        """``content`` decodes pixel data, which needs numpy (the ``content`` extra): refused at load without it, not at every check."""
        # Installed on the path, whether or not this process keeps it out (the listener process does: guard.app.imports).
        if value is CompareMode.CONTENT and importlib.machinery.PathFinder.find_spec("numpy") is None:
            msg = (
                "verify.compare = content decodes pixel data and needs numpy, which is not installed: "
                "install the guard with its 'content' extra (pip install 'guard[content]') or use verify.compare = exact"
            )
            raise ValueError(msg)
        return value
