"""The live plot of a fine-tuning run: losses over every step, validation against the base.

A plain QWidget (the plugin needs no plotting library) with two panels on one step axis
(0 .. all steps of the run, not per epoch):

* **loss**: training loss on the corrected patches and on the anchors (the base model's own
  predictions on uncorrected slices), each smoothed over a few steps, on an axis zoomed to
  the data;
* **validation**: V_rand on held-out corrected data after each round (step 0 is the base
  model, drawn across as a dashed line: the score to beat) on the left axis, and the largest
  change of an uncorrected check slice's segmentation on the right axis; the final choice
  (accepted weights or the kept base) is marked.

Each panel has a legend and tick labels at the ends of its axes. The numbers behind the
drawing (:attr:`LossPlot.steps`, :attr:`LossPlot.rounds`, :func:`zoomed_range`) are plain
Python, so tests can check them without looking at pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(80, 160, 255)
ANCHOR_COLOUR = QColor(90, 200, 120)
SCORE_COLOUR = QColor(255, 160, 60)
CHANGE_COLOUR = QColor(200, 110, 230)
BASE_COLOUR = QColor(160, 160, 160)
SMOOTHING = 0.8
"""Exponential smoothing of the per-step losses (the raw values jump with every batch)."""


def zoomed_range(values, pad: float = 0.1, min_span: float = 1e-3) -> tuple[float, float]:
    """An axis range that fits ``values`` (None and NaN left out) with a margin.

    Zoomed to the data rather than 0..1, so that a change of 0.01 in V_rand is visible.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    span = max(high - low, min_span)
    middle = (low + high) / 2
    low, high = middle - span / 2, middle + span / 2
    return low - pad * span, high + pad * span


def smoothed(values: list[float | None], keep: float = SMOOTHING) -> list[float | None]:
    """Exponential moving average (None stays None and does not reset the average)."""
    out, average = [], None
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(None)
            continue
        average = value if average is None else keep * average + (1 - keep) * value
        out.append(average)
    return out


@dataclass
class Round:
    step: int
    v_rand: float | None
    change: float | None


class LossPlot(QWidget):
    """Losses per step and validation per round of one fine-tuning run."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(210)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "top: training loss per step (corrected patches, anchors); bottom: "
            "validation V_rand (left axis; dashed: the base model) and the largest "
            "change of an uncorrected slice against the base (right axis)"
        )
        self.clear()

    def clear(self) -> None:
        self.total = 0
        self.steps: list[int] = []
        self.losses: list[float | None] = []
        self.anchor_losses: list[float | None] = []
        self.rounds: list[Round] = []
        self.base_v_rand: float | None = None
        self.final: tuple[bool, float | None] | None = None
        """(accepted, validation V_rand of the final weights) once the run has ended."""
        self.update()

    def set_total(self, total: int) -> None:
        self.total = int(total)
        self.update()

    def add_step(
        self, done: int, total: int, loss: float | None, anchor_loss: float | None = None
    ) -> None:
        self.total = max(self.total, int(total))
        self.steps.append(int(done))
        self.losses.append(_finite(loss))
        self.anchor_losses.append(_finite(anchor_loss))
        self.update()

    def add_round(self, done: int, v_rand: float | None, change: float | None) -> None:
        """A validation after ``done`` steps (0: the base model)."""
        if done == 0:
            self.base_v_rand = _finite(v_rand)
        self.rounds.append(Round(int(done), _finite(v_rand), _finite(change)))
        self.update()

    def set_final(self, accepted: bool, v_rand: float | None) -> None:
        self.final = (bool(accepted), _finite(v_rand))
        self.update()

    def loss_range(self) -> tuple[float, float]:
        return zoomed_range(smoothed(self.losses) + smoothed(self.anchor_losses))

    def score_range(self) -> tuple[float, float]:
        final = [self.final[1]] if self.final else []
        return zoomed_range([r.v_rand for r in self.rounds] + final, min_span=0.01)

    def change_range(self) -> tuple[float, float]:
        low, high = zoomed_range([0.0] + [r.change for r in self.rounds], min_span=0.01)
        return 0.0, high

    # ------------------------------------------------------------------ drawing
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = QPen(self.palette().color(self.foregroundRole()))
        whole = QRectF(self.rect()).adjusted(44, 6, -40, -18)
        gap = 16
        upper = QRectF(whole.left(), whole.top(), whole.width(), whole.height() * 0.45)
        lower = QRectF(
            whole.left(), upper.bottom() + gap, whole.width(), whole.bottom() - upper.bottom() - gap
        )
        for rect in (upper, lower):
            painter.setPen(QPen(QColor(128, 128, 128), 1))
            painter.drawRect(rect)
        if not self.steps and not self.rounds:
            painter.setPen(text)
            painter.drawText(
                whole,
                Qt.AlignmentFlag.AlignCenter,
                "training loss per step and validation against the base model",
            )
            painter.end()
            return
        self._draw_losses(painter, upper, text)
        self._draw_validation(painter, lower, text)
        painter.setPen(text)
        total = max(self.total, max(self.steps, default=0), 1)
        painter.drawText(QPointF(lower.left(), lower.bottom() + 14), "step 0")
        label = f"{total}"
        painter.drawText(QPointF(lower.right() - 7 * len(label), lower.bottom() + 14), label)
        painter.end()

    def _x(self, rect: QRectF, step: float) -> float:
        total = max(self.total, max(self.steps, default=0), 1)
        return rect.left() + step / total * rect.width()

    def _draw_losses(self, painter: QPainter, rect: QRectF, text: QPen) -> None:
        low, high = self.loss_range()
        y_of = _scale(rect, low, high)
        for values, colour in ((self.losses, LOSS_COLOUR), (self.anchor_losses, ANCHOR_COLOUR)):
            points = [
                QPointF(self._x(rect, s), y_of(v))
                for s, v in zip(self.steps, smoothed(values), strict=True)
                if v is not None
            ]
            _polyline(painter, points, colour)
        painter.setPen(text)
        _tick_labels(painter, rect, low, high, left=True)
        legend = [("loss, corrected", LOSS_COLOUR)]
        if any(v is not None for v in self.anchor_losses):
            legend.append(("loss, anchors", ANCHOR_COLOUR))
        _legend(painter, rect, legend)

    def _draw_validation(self, painter: QPainter, rect: QRectF, text: QPen) -> None:
        low, high = self.score_range()
        y_of = _scale(rect, low, high)
        if self.base_v_rand is not None:
            painter.setPen(QPen(BASE_COLOUR, 1, Qt.PenStyle.DashLine))
            y = y_of(self.base_v_rand)
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
        scored = [
            QPointF(self._x(rect, r.step), y_of(r.v_rand))
            for r in self.rounds
            if r.v_rand is not None
        ]
        _polyline(painter, scored, SCORE_COLOUR, dots=True)
        change_high = self.change_range()[1]
        y_change = _scale(rect, 0.0, change_high)
        changed = [
            QPointF(self._x(rect, r.step), y_change(r.change))
            for r in self.rounds
            if r.change is not None
        ]
        _polyline(painter, changed, CHANGE_COLOUR, dots=True)
        if self.final is not None and self.final[1] is not None:
            accepted, value = self.final
            painter.setPen(QPen(SCORE_COLOUR if accepted else BASE_COLOUR, 2))
            x, y = self._x(rect, max(self.steps, default=0)), y_of(value)
            painter.drawLine(QPointF(x - 5, y), QPointF(x + 5, y))
            painter.drawLine(QPointF(x, y - 5), QPointF(x, y + 5))
        painter.setPen(text)
        _tick_labels(painter, rect, low, high, left=True)
        painter.setPen(QPen(CHANGE_COLOUR))
        _tick_labels(painter, rect, 0.0, change_high, left=False)
        _legend(
            painter,
            rect,
            [
                ("validation V_rand", SCORE_COLOUR),
                ("base", BASE_COLOUR),
                ("change, uncorrected (right)", CHANGE_COLOUR),
            ],
        )


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _scale(rect: QRectF, low: float, high: float):
    span = high - low if high > low else 1.0
    return lambda v: rect.bottom() - (v - low) / span * rect.height()


def _tick_labels(painter: QPainter, rect: QRectF, low: float, high: float, left: bool) -> None:
    digits = 2 if high - low >= 0.1 else 3 if high - low >= 0.01 else 4
    x = 2 if left else rect.right() + 3
    painter.drawText(QPointF(x, rect.top() + 10), f"{high:.{digits}f}")
    painter.drawText(QPointF(x, rect.bottom()), f"{low:.{digits}f}")


def _legend(painter: QPainter, rect: QRectF, entries: list[tuple[str, QColor]]) -> None:
    x = rect.left() + 6
    for label, colour in entries:
        painter.setPen(QPen(colour, 3))
        painter.drawLine(QPointF(x, rect.top() + 8), QPointF(x + 12, rect.top() + 8))
        painter.setPen(QPen(colour))
        painter.drawText(QPointF(x + 15, rect.top() + 12), label)
        x += 22 + painter.fontMetrics().horizontalAdvance(label)


def _polyline(painter: QPainter, points: list[QPointF], colour: QColor, dots: bool = False) -> None:
    painter.setPen(QPen(colour, 2))
    if len(points) > 1:
        painter.drawPolyline(QPolygonF(points))
    if dots or len(points) == 1:
        for point in points:
            painter.drawEllipse(point, 2.5, 2.5)
