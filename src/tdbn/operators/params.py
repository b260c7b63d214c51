"""The neuron's hyper-parameters as one object, passed from the configuration through the models to the kernels.

One definition of the defaults (paper section 4 and the public code of the paper's group): ``tau = 0.25``,
``v_th = 0.5``, the rectangular surrogate of Eq. 16 with width ``a = 1``. Every other place that needs a default
(the LIF module, the model factories, the training configuration) reads it from :data:`DEFAULT_LIF`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import surrogate as _surrogate


@dataclass(frozen=True)
class LIFParameters:
    """Hyper-parameters of the iterative LIF neuron (Eq. 1-3) and of its surrogate gradient (Eq. 16).

    Attributes:
        tau: membrane decay factor in [0, 1) (Eq. 1; paper: 0.25, Fig. 2 also studies 0 and 0.5).
        v_th: firing threshold, > 0; a neuron fires when ``u > v_th`` (Eq. 2).
        surrogate: name of the surrogate derivative (:data:`tdbn.operators.surrogate.SURROGATES`).
        surrogate_width: its width ``a`` (Eq. 16), > 0.

    Example:
        >>> p = LIFParameters(tau=0.5)
        >>> p.v_th, p.surrogate, p.surrogate_width
        (0.5, 'rectangle', 1.0)
        >>> LIFParameters(tau=1.0)
        Traceback (most recent call last):
        ...
        ValueError: tau must lie in [0, 1) (decay factor of Eq. 1), got 1.0
    """

    tau: float = 0.25
    v_th: float = 0.5
    surrogate: str = "rectangle"
    surrogate_width: float = 1.0

    def __post_init__(self) -> None:
        for name in ("tau", "v_th", "surrogate_width"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not (0.0 <= self.tau < 1.0):
            raise ValueError(f"tau must lie in [0, 1) (decay factor of Eq. 1), got {self.tau}")
        if not self.v_th > 0.0:
            raise ValueError(f"v_th must be > 0, got {self.v_th}")
        if not self.surrogate_width > 0.0:
            raise ValueError(f"surrogate_width must be > 0 (a in Eq. 16), got {self.surrogate_width}")
        _surrogate.get(self.surrogate)  # raises with the valid names

    @property
    def surrogate_id(self) -> int:
        """The surrogate's index in :data:`tdbn.operators.surrogate.SURROGATE_IDS` (what the kernels take)."""
        return _surrogate.SURROGATE_IDS[self.surrogate]

    def replace(self, **changes) -> "LIFParameters":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


DEFAULT_LIF = LIFParameters()
