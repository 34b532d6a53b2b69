"""Images as the compute API sees them: Nova's ``/images`` proxy and the boot-time checks."""

from __future__ import annotations

from typing import Any

from resizeflow import errors
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.openstack.images import ImageMeta, ImageStore

GiB = 1024**3


class ImageService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ImageStore(settings.images_dir())

    def list(self, caller: RequestContext) -> list[ImageMeta]:
        """The images the caller's project may see, as Nova lists them through Glance."""
        return [m for m in self.store.list() if m.visible_to(caller.project_id, caller.is_admin)]

    def get(self, caller: RequestContext, image_id: str) -> ImageMeta | None:
        return self.store.get_visible(image_id, caller.project_id, caller.is_admin)

    def boot_image(
        self, image_ref: str | None, flavor: dict[str, Any], caller: RequestContext | None = None
    ) -> str | None:
        """The id of the image a server boots from, checked against its flavor as Nova does.

        Without ``image_ref`` the configured default image is used; with no
        default either, the server gets a blank root disk (the test driver's tier).
        """
        ref = image_ref or self.settings.default_image
        if not ref:
            return None
        meta = self.store.get(ref) if image_ref else self.store.find(ref)
        if meta is not None and caller is not None and image_ref:
            # Another project's private image is not found, as Glance answers Nova.
            meta = meta if meta.visible_to(caller.project_id, caller.is_admin) else None
        if meta is None or not meta.bootable:
            if not image_ref:
                raise errors.ConfigError(
                    f"RESIZEFLOW_DEFAULT_IMAGE={ref!r} names no bootable image in the store"
                )
            raise errors.ImageNotFound(image_id=ref)
        root = int(flavor.get("root_gb", 0)) * GiB
        image_size = meta.virtual_size or meta.size or 0
        # NOTE: a flavor disk of 0 means "as big as the image", as in Nova.
        if root:
            if root < image_size:
                raise errors.FlavorDiskSmallerThanImage(flavor_size=root, image_size=image_size)
            if root < meta.min_disk * GiB:
                raise errors.FlavorDiskSmallerThanMinDisk(
                    flavor_size=root, image_min_disk=meta.min_disk * GiB
                )
        return meta.id


def check_boot_image(
    settings: Settings,
    image_ref: str | None,
    flavor: dict[str, Any],
    caller: RequestContext | None = None,
) -> str | None:
    """:meth:`ImageService.boot_image` for the service layer's create."""
    return ImageService(settings).boot_image(image_ref, flavor, caller)
