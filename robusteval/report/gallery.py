"""Pictures in the report: the gallery of forgotten inputs and the corruption strips.

Thumbnails come from the run's ``samples.npz`` (uint8, at most 64 px a side), are embedded as PNG
data URIs, and every caption (class names come from user data) is HTML-escaped. The page holds at
most :data:`robusteval.samples.GALLERY_SIZE` gallery images plus one image per corruption and
severity: with 64-px thumbnails at most 12.3 KB of raw pixels each, the pictures add at most
(32 + 5 x corruptions) x 16.5 KB of base64 (about 2.1 MB for the 19 corruptions; 32-px CIFAR
thumbnails take about 3 KB each).
"""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from robusteval.analysis.forgetting import Forgetting
from robusteval.report.markup import esc as _e

_FLEX = 'style="display:flex;flex-wrap:wrap;gap:0.6rem"'
_THUMB = 'style="width:64px;height:64px;image-rendering:pixelated;margin:0"'


def thumbnail_img(pixels: np.ndarray, alt: str) -> str:
    """One uint8 HWC RGB thumbnail as an ``<img>`` with a PNG data URI (alt text escaped)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buf, format="PNG", optimize=True)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img {_THUMB} alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def gallery_html(forgetting: Forgetting) -> str:
    """The most-forgotten clean inputs with their true label, the baseline's and the pruned prediction."""
    samples = forgetting.samples
    cards = []
    for item in forgetting.gallery:
        pixels = samples.thumbnail(item.index) if samples is not None else None
        if pixels is None:
            continue
        caption = (f"#{item.index} true {item.label}<br>{forgetting.baseline}: {item.baseline}"
                   f"<br>pruned: {item.pruned}<br>lost at {100 * item.first_ratio:.4g}%")
        caption = "<br>".join(_e(part) for part in caption.split("<br>"))
        cards.append(f'<figure style="margin:0;width:8.5rem;font-size:0.75rem">'
                     f'{thumbnail_img(pixels, f"sample {item.index}, true class {item.label}")}'
                     f"<figcaption>{caption}</figcaption></figure>")
    if not cards:
        return ""
    return (f'<p class="note">The clean inputs pruning forgets most: pruning identified exemplars whose '
            f"{_e(forgetting.baseline)} prediction was right first, then those that are PIEs at the most ratios, "
            f"then those whose prediction the most pruned members leave, then those lost at the smallest ratio; equally "
            f'forgotten inputs take turns by class. "Pruned" is the modal prediction of the pruned members at '
            f"the first ratio where the input is a PIE.</p><div {_FLEX}>{''.join(cards)}</div>")


def strips_html(forgetting: Forgetting | None) -> str:
    """One image per corruption at each severity, so a reader sees what each corruption is."""
    samples = forgetting.samples if forgetting is not None else None
    if samples is None or not samples.strips:
        return ""
    header = "".join(f"<th>severity {s}</th>" for s in samples.severities)
    rows = "".join(f"<tr><td>{_e(name)}</td>"
                   + "".join(f"<td>{thumbnail_img(pixels, f'{name}, severity {s}')}</td>"
                             for s, pixels in zip(samples.severities, strip)) + "</tr>"
                   for name, strip in sorted(samples.strips.items()))
    return ("<h3>What each corruption looks like</h3><p class=\"note\">The first evaluation image under each "
            "corruption at each severity, made by the same code and seed as the evaluated inputs.</p>"
            f'<div class="scroll"><table><tr><th>corruption</th>{header}</tr>{rows}</table></div>')
