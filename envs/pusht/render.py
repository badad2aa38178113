"""Push-T drawing, pixel for pixel as the reference draws it.

The reference (Diffusion Policy's `pusht_env.py`, also gym-pusht) draws a 512x512 pygame canvas through
pymunk's `space.debug_draw` with an overridden `DrawOptions`, then shrinks it with `cv2.resize`
(bilinear). The recorded `img` of the published data was made that way, so we keep the same primitives,
colours, rounding and draw order, but call pygame directly: no debug-draw callbacks, a cached background,
and a canvas whose memory cv2 reads without a copy.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402

WINDOW_SIZE = 512

GOAL_COLOR = tuple(pygame.Color("LightGreen"))[:3]
BLOCK_COLOR = tuple(pygame.Color("LightSlateGray"))[:3]
AGENT_COLOR = tuple(pygame.Color("RoyalBlue"))[:3]
WALL_COLOR = tuple(pygame.Color("LightGray"))[:3]
CONTACT_COLOR = (231, 76, 60)  # pymunk's default collision_point_color
ACTION_COLOR = (255, 0, 0)


def _light(color: tuple[int, int, int]) -> tuple[int, ...]:
    # The reference brightens fills by 1.2 in float32 and rounds.
    return tuple(round(float(c)) for c in np.minimum(np.float32(1.2) * np.float32(color), np.float32(255)))


BLOCK_FILL = _light(BLOCK_COLOR)
AGENT_FILL = _light(AGENT_COLOR)


def _pt(p) -> tuple[int, int]:
    # pymunk.pygame_util.to_pygame with y pointing down: Python's round (half to even).
    return round(p[0]), round(p[1])


def _fat_segment(surface: pygame.Surface, a, b, radius: float, color) -> None:
    """A thick line with round caps, as pymunk's pygame DrawOptions.draw_fat_segment."""
    p1, p2 = _pt(a), _pt(b)
    width = round(max(1, radius * 2))
    pygame.draw.lines(surface, color, False, [p1, p2], width)
    if width > 2:
        ox, oy = abs(p2[1] - p1[1]), abs(p2[0] - p1[0])
        if ox == 0 and oy == 0:
            return
        scale = radius / (ox * ox + oy * oy) ** 0.5
        ox, oy = round(ox * scale), round(oy * scale)
        pygame.draw.polygon(
            surface,
            color,
            [(p1[0] - ox, p1[1] - oy), (p1[0] + ox, p1[1] + oy), (p2[0] + ox, p2[1] + oy), (p2[0] - ox, p2[1] - oy)],
        )
        pygame.draw.circle(surface, color, p1, round(radius))
        pygame.draw.circle(surface, color, p2, round(radius))


class PushTRenderer:
    """Draws Push-T frames of any square size.

    `draw(...)` paints the 512x512 canvas; `frame(size)` returns it as (size, size, 3) uint8 RGB, resized
    with cv2's bilinear filter exactly as the reference does.
    """

    def __init__(self, goal_polygons: list[np.ndarray], walls: list[tuple[tuple, tuple, float]]):
        self._walls = walls
        # 32-bit canvas: B,G,R,X bytes in memory (SDL's little-endian masks). Not 24-bit: pygame's
        # anti-aliased lines blend wrongly there.
        self._canvas = pygame.Surface((WINDOW_SIZE, WINDOW_SIZE), depth=32)
        if self._canvas.get_pitch() != WINDOW_SIZE * 4 or self._canvas.get_masks()[:3] != (0xFF0000, 0xFF00, 0xFF):
            raise RuntimeError("unexpected pygame 32-bit surface layout; cannot read the canvas without a copy")
        # A writable view of the canvas memory (it keeps the surface locked: pygame.draw works, blit not).
        self._pixels = np.asarray(self._canvas.get_view("0")).reshape(WINDOW_SIZE, WINDOW_SIZE, 4)
        self._canvas.fill((255, 255, 255))
        for poly in goal_polygons:
            pts = [_pt(v) for v in poly]
            pygame.draw.polygon(self._canvas, GOAL_COLOR, pts + [pts[0]])
        self._background = self._pixels.copy()

    def draw(
        self,
        agent_position,
        agent_radius: float,
        block_polygons: list[np.ndarray],
        contact_segments: list[tuple[tuple, tuple]],
    ) -> None:
        """Paint one state: goal (cached), agent, T, walls, contact points, in the reference's order."""
        surface = self._canvas
        self._pixels[:] = self._background
        # pymunk draws dynamic shapes in its spatial index's order (the T's two boxes, then the agent),
        # then the static walls, then contact points.
        for poly in block_polygons:
            pts = [_pt(v) for v in poly]
            pygame.draw.polygon(surface, BLOCK_FILL, pts + [pts[0]])
            n = len(poly)
            for i in range(n):
                _fat_segment(surface, poly[i], poly[(i + 1) % n], 2, BLOCK_COLOR)
        center = _pt(agent_position)
        pygame.draw.circle(surface, AGENT_COLOR, center, round(agent_radius), 0)
        pygame.draw.circle(surface, AGENT_FILL, center, round(agent_radius - 4), 0)
        for a, b, radius in self._walls:
            _fat_segment(surface, a, b, radius, WALL_COLOR)
        for a, b in contact_segments:
            pygame.draw.aalines(surface, CONTACT_COLOR, False, [_pt(a), _pt(b)])

    def frame(self, size: int, action=None) -> np.ndarray:
        """The canvas as (size, size, 3) uint8 RGB; with `action`, the target drawn as a red cross."""
        if size == WINDOW_SIZE:
            img = self._pixels[..., 2::-1].copy()
        else:
            img = cv2.resize(self._pixels, (size, size))[..., 2::-1].copy()  # BGRX memory -> RGB
        if action is not None:
            coord = (np.asarray(action, dtype=np.float64) / WINDOW_SIZE * size).astype(np.int32)
            cv2.drawMarker(
                img,
                (int(coord[0]), int(coord[1])),
                color=ACTION_COLOR,
                markerType=cv2.MARKER_CROSS,
                markerSize=max(1, int(8 / 96 * size)),
                thickness=max(1, int(1 / 96 * size)),
            )
        return img
