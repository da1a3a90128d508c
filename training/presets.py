"""The ``tiny`` / ``default`` preset mixin shared by the training config dataclasses.

Design note: light on purpose (standard library only) so that `fit3d.config` and
`ditr.config` both import it without pulling in each other or torch.
"""
from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any, TypeVar

C = TypeVar("C")
PRESETS = ("tiny", "default")


class Preset:
    """Mixin: preset lookup, overrides and dict form for a config dataclass.

    The class defines one classmethod per name in :data:`PRESETS`.
    """

    @classmethod
    def preset_named(cls: type[C], name: str, **kw: Any) -> C:
        if name not in PRESETS:
            raise ValueError(f"config must be one of {PRESETS}, got {name!r}")
        return getattr(cls, name)(**kw)

    def with_overrides(self: C, **kw: Any) -> C:
        """A copy with the non-None entries of `kw` replaced (unknown keys: ValueError)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} fields {unknown}")
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
