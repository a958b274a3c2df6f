"""A literal port of OpenCV's ``cv2.Canny(image, low, high)`` (``modules/imgproc/src/canny.cpp``, the
sequential version: 3x3 Sobel with BORDER_REPLICATE, L1 magnitude, fixed-point non-maximum suppression
over a ring of three magnitude rows, stack-based hysteresis), for one uint8 image. Slow; tests only."""
from __future__ import annotations

import numpy as np

CANNY_SHIFT = 15
TG22 = int(0.4142135623730950488016887242097 * (1 << CANNY_SHIFT) + 0.5)


def _sobel(src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = src.shape
    img = src.astype(np.int64)

    def at(i: int, j: int) -> int:  # BORDER_REPLICATE
        return int(img[min(max(i, 0), rows - 1), min(max(j, 0), cols - 1)])

    dx = np.zeros((rows, cols), np.int64)
    dy = np.zeros((rows, cols), np.int64)
    for i in range(rows):
        for j in range(cols):
            dx[i, j] = (at(i - 1, j + 1) + 2 * at(i, j + 1) + at(i + 1, j + 1)
                        - at(i - 1, j - 1) - 2 * at(i, j - 1) - at(i + 1, j - 1))
            dy[i, j] = (at(i + 1, j - 1) + 2 * at(i + 1, j) + at(i + 1, j + 1)
                        - at(i - 1, j - 1) - 2 * at(i - 1, j) - at(i - 1, j + 1))
    return dx, dy


def canny(src: np.ndarray, low_thresh: float, high_thresh: float) -> np.ndarray:
    """Edge map (uint8 0/255) as ``cv2.Canny(src, low_thresh, high_thresh)`` with L2gradient=False."""
    rows, cols = src.shape
    low, high = int(np.floor(low_thresh)), int(np.floor(high_thresh))
    dx, dy = _sobel(src)
    mag = np.zeros((rows + 2, cols + 2), np.int64)  # row/col -1 and rows/cols: 0
    mag[1:-1, 1:-1] = np.abs(dx) + np.abs(dy)
    edge_map = np.ones((rows + 2, cols + 2), np.uint8)  # 1: cannot be an edge; 0: might; 2: is
    stack: list[tuple[int, int]] = []

    def push(i: int, j: int) -> None:
        edge_map[i, j] = 2
        stack.append((i, j))

    for i in range(1, rows + 1):
        prev_flag = 0
        for j in range(1, cols + 1):
            m = mag[i, j]
            push_it = False
            if m > low:
                xs, ys = int(dx[i - 1, j - 1]), int(dy[i - 1, j - 1])
                x, y = abs(xs), abs(ys) << CANNY_SHIFT
                tg22x = x * TG22
                if y < tg22x:
                    push_it = m > mag[i, j - 1] and m >= mag[i, j + 1]
                else:
                    tg67x = tg22x + (x << (CANNY_SHIFT + 1))
                    if y > tg67x:
                        push_it = m > mag[i - 1, j] and m >= mag[i + 1, j]
                    else:
                        s = -1 if (xs ^ ys) < 0 else 1
                        push_it = m > mag[i - 1, j - s] and m > mag[i + 1, j + s]
            if not push_it:
                prev_flag = 0
                edge_map[i, j] = 1
                continue
            if not prev_flag and m > high and edge_map[i - 1, j] != 2:
                push(i, j)
                prev_flag = 1
            else:
                edge_map[i, j] = 0
    while stack:
        i, j = stack.pop()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di or dj) and edge_map[i + di, j + dj] == 0:
                    push(i + di, j + dj)
    return np.where(edge_map[1:-1, 1:-1] == 2, 255, 0).astype(np.uint8)
