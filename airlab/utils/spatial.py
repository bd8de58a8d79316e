"""The spatial transformer that places AIR's object windows on the canvas, and crops them back.

``z_where = (s, x, y)``. Placing maps canvas coordinates p (in [-1, 1]) to window coordinates
``s * p + (x, y)``; cropping uses the inverse ``(p - (x, y)) / s``. An object therefore sits at
``-(x, y) / s`` on the canvas, ``image_size / s`` pixels wide. ``align_corners=False`` throughout:
coordinates refer to pixel edges, so the two directions are exact inverses of each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN_CORNERS = False
MIN_SCALE = 1e-2  # guards the inverse against a proposal with scale near zero


def _theta(z_where: torch.Tensor) -> torch.Tensor:
    """[B, 3] (s, x, y) -> [B, 2, 3] affine matrices [[s, 0, x], [0, s, y]]."""
    s, x, y = z_where.unbind(-1)
    zeros = torch.zeros_like(s)
    return torch.stack([s, zeros, x, zeros, s, y], -1).view(-1, 2, 3)


def inverse_where(z_where: torch.Tensor) -> torch.Tensor:
    """(s, x, y) -> (1/s, -x/s, -y/s), with |s| kept away from zero."""
    s, xy = z_where[..., :1], z_where[..., 1:]
    safe = torch.where(s.abs() < MIN_SCALE, MIN_SCALE * torch.where(s < 0, -1.0, 1.0).to(s), s)
    return torch.cat([1 / safe, -xy / safe], -1)


def window_to_image(windows: torch.Tensor, z_where: torch.Tensor, image_size: int) -> torch.Tensor:
    """Place ``[B, w, w]`` windows on ``[B, H, H]`` canvases (zeros outside the window)."""
    batch, window_size = windows.shape[0], windows.shape[-1]
    grid = F.affine_grid(_theta(z_where), [batch, 1, image_size, image_size], align_corners=ALIGN_CORNERS)
    out = F.grid_sample(windows.view(batch, 1, window_size, window_size), grid, align_corners=ALIGN_CORNERS)
    return out.view(batch, image_size, image_size)


def image_to_window(images: torch.Tensor, z_where: torch.Tensor, window_size: int) -> torch.Tensor:
    """Crop ``[B, w, w]`` windows out of ``[B, H, H]`` images with the inverse transform."""
    batch, image_size = images.shape[0], images.shape[-1]
    theta = _theta(inverse_where(z_where))
    grid = F.affine_grid(theta, [batch, 1, window_size, window_size], align_corners=ALIGN_CORNERS)
    out = F.grid_sample(images.view(batch, 1, image_size, image_size), grid, align_corners=ALIGN_CORNERS)
    return out.view(batch, window_size, window_size)


def where_to_box(z_where: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bounding boxes ``(x_min, y_min, x_max, y_max)`` in pixels of the windows placed by ``z_where``."""
    s, x, y = z_where.unbind(-1)
    s = s.abs().clamp(min=MIN_SCALE)
    centre_x, centre_y = -x / s, -y / s  # in [-1, 1] canvas units
    half = 1 / s
    corners = torch.stack([centre_x - half, centre_y - half, centre_x + half, centre_y + half], -1)
    return (corners + 1) * image_size / 2
