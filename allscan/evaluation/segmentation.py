"""Segmentation quality against annotated white-cell boxes (Pascal VOC XML, e.g. the BCCD dataset).

Reports precision and recall of white cells at IoU >= 0.5 between segmented cell boxes and annotated boxes
(greedy one-to-one matching by IoU), the looser "centroid inside an annotated box" match (BCCD's boxes include the
cytoplasm, the segmentation finds the stained nucleus), and the per-image count error.

    python -m allscan.evaluation.segmentation ../shared/datasets/bccd
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from allscan.io.images import decode_image
from allscan.pipeline.segment import SegmentParams, segment

Box = tuple[float, float, float, float]


def read_voc_boxes(xml_path: Path, name: str = "WBC") -> list[Box]:
    root = ET.parse(xml_path).getroot()
    boxes: list[Box] = []
    for obj in root.iter("object"):
        if (obj.findtext("name") or "").strip() != name:
            continue
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x0, y0, x1, y1))
    return boxes


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(pred: list[Box], truth: list[Box], threshold: float = 0.5) -> int:
    """Greedy one-to-one matches with IoU >= threshold."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, hits = set(), set(), 0
    for score, i, j in pairs:
        if score < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            hits += 1
    return hits


def centroid_hits(centres: list[tuple[float, float]], truth: list[Box]) -> tuple[int, int]:
    """(predicted cells whose centroid lies in some box, boxes containing at least one centroid)."""
    inside = [[t[0] <= x <= t[2] and t[1] <= y <= t[3] for t in truth] for x, y in centres]
    pred_ok = sum(any(row) for row in inside)
    truth_ok = sum(any(inside[i][j] for i in range(len(centres))) for j in range(len(truth)))
    return pred_ok, truth_ok


def evaluate_segmentation(root: Path, params: SegmentParams | None = None) -> dict:
    root = Path(root)
    n_pred = n_truth = tp = c_pred = c_truth = 0
    count_errors = []
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        image_path = root / "JPEGImages" / (xml_path.stem + ".jpg")
        if not image_path.is_file():
            continue
        truth = read_voc_boxes(xml_path)
        seg = segment(decode_image(image_path).bgr, params)
        pred: list[Box] = [(c.x, c.y, c.x + c.width, c.y + c.height) for c in seg.cells]
        centres = [(c.centroid_x, c.centroid_y) for c in seg.cells]
        n_pred += len(pred)
        n_truth += len(truth)
        tp += match(pred, truth)
        cp, ct = centroid_hits(centres, truth)
        c_pred += cp
        c_truth += ct
        count_errors.append(len(pred) - len(truth))
    errors = np.asarray(count_errors)
    return {
        "n_images": int(len(errors)),
        "n_annotated": n_truth,
        "n_segmented": n_pred,
        "precision_iou50": tp / max(n_pred, 1),
        "recall_iou50": tp / max(n_truth, 1),
        "precision_centroid": c_pred / max(n_pred, 1),
        "recall_centroid": c_truth / max(n_truth, 1),
        "count_mae": float(np.abs(errors).mean()) if len(errors) else 0.0,
        "count_exact_share": float((errors == 0).mean()) if len(errors) else 0.0,
    }


if __name__ == "__main__":  # pragma: no cover - manual measurement
    print(json.dumps(evaluate_segmentation(Path(sys.argv[1])), indent=2))
