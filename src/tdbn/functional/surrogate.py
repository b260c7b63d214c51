"""The surrogate derivatives of the spike function (paper Eq. 16): :mod:`tdbn.operators.surrogate`, by the name
users import. They are defined in the op layer, the bottom of the package's imports, because every kernel reads
their table (``SURROGATE_IDS``)."""

from ..operators.surrogate import SURROGATE_IDS, SURROGATES, atan, get, rectangle, sigmoid, triangle

__all__ = ["SURROGATE_IDS", "SURROGATES", "atan", "get", "rectangle", "sigmoid", "triangle"]
