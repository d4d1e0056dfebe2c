"""Typed request bodies for ``POST /v1/images/generations``, one model per API model.

Every field, enum, default and limit comes from the model pages in ``../shared/api-docs/``.
Unknown fields are errors (``extra="forbid"``): a typo such as ``promt`` must be caught before it
is paid for, not silently dropped. Types are strict, so YAML's ``yes`` or ``2024-01-01`` never
turns into a boolean or a date prompt without the user noticing.

The body batchgen sends is the job's own fields, not a dump of these models: the models only
check them, so no default is ever added that the user did not write (the API applies its own).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from batchgen.models.catalog import image_uri_problem

__all__ = [
    "MODELS",
    "AspectRatio",
    "FluxDevImageToImage",
    "ImageRequest",
    "ReveCreateImage",
    "ReveEditImage",
    "ReveRemixEditImage",
    "image_request_adapter",
]

AspectRatio = Literal["16:9", "9:16", "3:2", "2:3", "4:3", "3:4", "1:1"]
"""Aspect ratios of reve/create-image and reve/remix-edit-image (API default ``3:2``)."""

REVE_PROMPT_MAX = 2560  # characters, reve model pages
FLUX_PROMPT_MAX = 4000  # characters, flux/dev/image-to-image page


def _check_image_uri(value: str) -> str:
    """Accept what the API's ``format: uri`` image fields take (:func:`image_uri_problem`)."""
    problem = image_uri_problem(value)
    if problem:
        raise ValueError(problem)
    return value


ImageUri = Annotated[str, AfterValidator(_check_image_uri)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ReveCreateImage(_Request):
    """reve/create-image: text to image (page ``reve-create-image.txt``)."""

    model: Literal["reve/create-image"]
    prompt: str = Field(max_length=REVE_PROMPT_MAX)
    aspect_ratio: AspectRatio = "3:2"
    convert_base64_to_url: bool = True
    # The page lists the default "json" and no other value.
    output_format: Literal["json"] = "json"


class ReveEditImage(_Request):
    """reve/edit-image: edit one reference image by prompt (page ``reve-edit-image.txt``)."""

    model: Literal["reve/edit-image"]
    image_url: ImageUri
    prompt: str = Field(max_length=REVE_PROMPT_MAX)
    convert_base64_to_url: bool = True
    output_format: Literal["json"] = "json"


class ReveRemixEditImage(_Request):
    """reve/remix-edit-image: combine 1-4 images by prompt (page ``reve-remix-edit-image.txt``)."""

    model: Literal["reve/remix-edit-image"]
    image_urls: list[ImageUri] = Field(min_length=1, max_length=4)
    prompt: str = Field(max_length=REVE_PROMPT_MAX)
    aspect_ratio: AspectRatio = "3:2"
    convert_base64_to_url: bool = True


class FluxDevImageToImage(_Request):
    """flux/dev/image-to-image: image to image (page ``flux-dev-image-to-image.txt``).

    ``num_images`` is documented as a number 1-4; only whole numbers make sense, so it is an int.
    ``strength`` has a documented default (0.95) but no documented bounds, so none are imposed.
    """

    model: Literal["flux/dev/image-to-image"]
    prompt: str = Field(max_length=FLUX_PROMPT_MAX)
    image_url: ImageUri
    # No documented default: absent means "the API decides". An explicit null is still refused,
    # because the type is not Optional (pydantic does not validate defaults).
    guidance_scale: float = Field(default=None, ge=1, le=20)  # type: ignore[assignment]
    num_inference_steps: int = Field(default=None, ge=1, le=50)  # type: ignore[assignment]
    enable_safety_checker: bool = True
    num_images: int = Field(default=1, ge=1, le=4)
    seed: int = Field(default=None, ge=1)  # type: ignore[assignment]
    strength: float = 0.95


ImageRequest = Annotated[
    ReveCreateImage | ReveEditImage | ReveRemixEditImage | FluxDevImageToImage,
    Field(discriminator="model"),
]
"""Any one request body, told apart by its ``model`` field."""

image_request_adapter: TypeAdapter[Any] = TypeAdapter(ImageRequest)
"""Validates a dict into the matching request model; raises ``pydantic.ValidationError``."""

MODELS: dict[str, type[_Request]] = {
    "reve/create-image": ReveCreateImage,
    "reve/edit-image": ReveEditImage,
    "reve/remix-edit-image": ReveRemixEditImage,
    "flux/dev/image-to-image": FluxDevImageToImage,
}
"""API model name -> request model, in the order the README documents them."""
