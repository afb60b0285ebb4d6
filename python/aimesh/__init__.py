"""AiMesh: a message queue and gateway for AI agents."""

from aimesh import _native
from aimesh.errors import AiMeshError

__version__: str = _native.__version__

__all__ = ["AiMeshError", "__version__"]
