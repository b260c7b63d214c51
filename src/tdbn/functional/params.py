"""The neuron's hyper-parameters (:class:`LIFParameters`, :data:`DEFAULT_LIF`): :mod:`tdbn.operators.params`, by
the name users import. They are defined in the op layer, the bottom of the package's imports, because the
operators take them."""

from ..operators.params import DEFAULT_LIF, LIFParameters

__all__ = ["DEFAULT_LIF", "LIFParameters"]
