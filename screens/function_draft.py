"""The editor's plain model of an allocation function being built: stages of op names, lam, direction.

Parsing and printing the text form belong to the engine (reached through the App's API); this only
holds the fields and the edits the editor offers."""

from __future__ import annotations

from dataclasses import dataclass, field

LAM_STEP = 0.01
LAM_MIN, LAM_MAX = 0.01, 0.5


@dataclass
class FunctionDraft:
    pre: list[str] = field(default_factory=list)
    reduction: str = "mean"
    transform: list[str] = field(default_factory=list)
    lam: float = 0.08
    direction: int = 1

    @classmethod
    def from_fields(cls, fields: dict) -> FunctionDraft:
        return cls(list(fields["pre"]), fields["reduction"], list(fields["transform"]), fields["lam"],
                   fields["direction"])

    def fields(self) -> dict:
        return {"pre": tuple(self.pre), "reduction": self.reduction, "transform": tuple(self.transform),
                "lam": self.lam, "direction": self.direction}

    def slots(self) -> list[tuple[str, int]]:
        """Every op position, in order: (stage, index within the stage)."""
        return ([("pre", i) for i in range(len(self.pre))] + [("reduction", 0)]
                + [("transform", i) for i in range(len(self.transform))])

    def op_at(self, slot: tuple[str, int]) -> str:
        stage, i = slot
        return self.reduction if stage == "reduction" else getattr(self, stage)[i]

    def add(self, stage: str, op: str) -> None:
        """Append a pre-process or transform op; a reduction replaces the one there."""
        if stage == "reduction":
            self.reduction = op
        else:
            getattr(self, stage).append(op)

    def remove(self, slot: tuple[str, int]) -> bool:
        stage, i = slot
        if stage == "reduction":
            return False  # exactly one reduction: replace it instead
        del getattr(self, stage)[i]
        return True

    def move(self, slot: tuple[str, int], delta: int) -> tuple[str, int]:
        """Move an op within its stage; returns its new slot."""
        stage, i = slot
        if stage == "reduction":
            return slot
        ops = getattr(self, stage)
        j = min(len(ops) - 1, max(0, i + delta))
        ops.insert(j, ops.pop(i))
        return stage, j

    def flip(self) -> None:
        self.direction = -self.direction

    def nudge_lam(self, steps: int) -> None:
        self.lam = round(min(LAM_MAX, max(LAM_MIN, self.lam + steps * LAM_STEP)), 4)
