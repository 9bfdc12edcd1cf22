"""What a reconstruction did, as numbers: printable, JSON-able, never typed in."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .files import write_text


@dataclass
class GroupRecord:
    """One set of coupled channels (a residual chain, a concat part, a plain conv)."""

    root: str
    members: list[str]
    channels_before: int
    channels_after: int
    kept_by_producer: dict[str, int | None]  # None: producer without a mask (kept whole)
    zero_channels_kept: int = 0  # channels every producer masked but kept (never-empty, grouped convs, round_to)
    constants_folded: int = 0  # removed channels whose constant output was folded into consumers
    constant_channels_kept: int = 0  # one kept constant channel standing for the folded ones (zero padding)
    not_constant_kept: int = 0  # channels every producer masked that still carry varying values: kept
    note: str = ""


@dataclass
class ReconstructionReport:
    merge: str
    dtype: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    verified: bool
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    lossless: bool | None = None
    worst_group: str | None = None
    groups: list[GroupRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # group root -> why its channels were all kept
    notes: list[str] = field(default_factory=list)
    selection: str | None = None  # how the masks were chosen ("layer"/"group"), from the masks' meta
    ratio: float | None = None  # the uniform ratio the masks used (found by the search under target_macs)
    target_macs: float | None = None  # the MACs budget the ratio was searched for, if any

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(self.macs_before, 1)

    def _total(self, field_name: str) -> int:
        return sum(getattr(g, field_name) for g in self.groups)

    zero_channels_kept = property(lambda self: self._total("zero_channels_kept"))
    constants_folded = property(lambda self: self._total("constants_folded"))
    constant_channels_kept = property(lambda self: self._total("constant_channels_kept"))
    not_constant_kept = property(lambda self: self._total("not_constant_kept"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(params_ratio=self.params_ratio, macs_ratio=self.macs_ratio,
                    zero_channels_kept=self.zero_channels_kept, constants_folded=self.constants_folded,
                    constant_channels_kept=self.constant_channels_kept, not_constant_kept=self.not_constant_kept,
                    macs_unit="MACs (FLOPs in the paper = 2 x MACs)")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReconstructionReport:
        """The report back from ``to_dict()`` (its derived keys dropped)."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["groups"] = [GroupRecord(**g) for g in data.get("groups", [])]
        return cls(**kwargs)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            write_text(path, text)
        return text

    def __str__(self) -> str:
        chosen = f", {self.selection} selection" if self.selection else ""
        if self.target_macs is not None:
            chosen += f", ratio {self.ratio:.4f} found for target_macs {self.target_macs:g}"
        lines = [
            f"Reconstruction ({self.merge}, {self.dtype}{chosen})",
            f"  params : {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.1%})",
            f"  MACs   : {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.1%})",
        ]
        if self.verified:
            verdict = "lossless" if self.lossless else "NOT lossless"
            lines.append(f"  check  : max |dy| {self.max_abs_error:.3g}, max rel {self.max_rel_error:.3g} "
                         f"(tolerance {self.tolerance:g}) -> {verdict}")
        else:
            lines.append("  check  : not verified")
        if self.constants_folded or self.constant_channels_kept or self.not_constant_kept:
            lines.append(f"  constants: {self.constants_folded} removed channels folded into consumers, "
                         f"{self.constant_channels_kept} constant channels kept for zero-padded consumers, "
                         f"{self.not_constant_kept} non-constant channels kept")
        if self.skipped:
            reasons = sorted(set(self.skipped.values()))
            more = " ..." if len(reasons) > 1 else ""
            lines.append(f"  skipped: {len(self.skipped)} groups kept whole ({reasons[0]}{more})")
        if self.worst_group:
            lines.append(f"  worst group: {self.worst_group}")
        width = max([len(g.root) for g in self.groups] + [10])
        lines.append(f"  {'group root':<{width}}  members  before  after  zero-kept  kept by each producer")
        for g in self.groups:
            producers = ", ".join(f"{k}:{'all' if v is None else v}" for k, v in g.kept_by_producer.items())
            if len(producers) > 70:
                producers = producers[:67] + "..."
            lines.append(f"  {g.root:<{width}}  {len(g.members):>7}  {g.channels_before:>6}  "
                         f"{g.channels_after:>5}  {g.zero_channels_kept:>9}  {producers}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
