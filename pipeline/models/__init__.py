"""Generator families (gan, dcgan, vae, ddpm). Importing this package registers every family in the registry."""

from pipeline.models import dcgan, gan  # noqa: F401
from pipeline.models.base import REGISTRY, ModelFamily, build_model, to_uint8

for _optional in ("vae", "ddpm"):
    try:
        __import__(f"pipeline.models.{_optional}")
    except ModuleNotFoundError as _exc:  # a family still being written
        if _exc.name != f"pipeline.models.{_optional}":
            raise

__all__ = ["REGISTRY", "ModelFamily", "build_model", "to_uint8"]
