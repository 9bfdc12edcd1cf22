"""The paper's training recipes (its hyper-parameter table), scalable to short runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum; the lr is divided by ``gamma_div`` at each milestone epoch."""

    epochs: int
    lr: float
    milestones: tuple[int, ...]
    gamma_div: float
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def scaled(self, epochs: int) -> Recipe:
        """Same schedule shape in ``epochs`` epochs (milestones moved proportionally)."""
        stones = tuple(sorted({max(1, round(m * epochs / self.epochs)) for m in self.milestones if epochs > 1}))
        return replace(self, epochs=epochs, milestones=tuple(s for s in stones if s < epochs))

    def to_dict(self) -> dict:
        return asdict(self)


# Image classification column of the paper's table: original and pruned (fine-tuning) models.
CLASSIFICATION_ORIGINAL = Recipe(epochs=200, lr=0.1, milestones=(90, 140), gamma_div=10)
CLASSIFICATION_FINETUNE = Recipe(epochs=100, lr=0.01, milestones=(50, 70), gamma_div=5)
