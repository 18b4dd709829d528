"""Exceptions raised by core/.

Every problem with the caller's input is a :class:`ClusteringInputError`, a
``ValueError`` subclass whose message names the problem and the fix. The QGIS
algorithms turn it into a ``QgsProcessingException`` without a traceback.
"""


class ClusteringInputError(ValueError):
    """Bad input or parameters; the message says what is wrong and how to fix it."""


class ClusteringCancelled(Exception):  # noqa: N818 (a cancellation, not an error)
    """The caller's ``is_cancelled`` callable returned True; no result is produced."""
