"""A small live plot of training loss and validation V_rand per epoch.

A plain QWidget painting two polylines, so the plugin needs no plotting library: loss on
its own scale (left, blue) and validation V_rand on 0..1 (right, orange). Repainting a few
dozen points costs well under a millisecond, so it can follow every epoch.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(80, 160, 255)
SCORE_COLOUR = QColor(255, 160, 60)


class LossPlot(QWidget):
    """Loss and validation score per epoch; call :meth:`add_epoch` as epochs finish."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.epochs: list[int] = []
        self.losses: list[float | None] = []
        self.scores: list[float | None] = []
        self.best_epoch: int | None = None
        self.setToolTip("blue: training loss (left scale); orange: validation V_rand (0-1)")

    def clear(self) -> None:
        self.epochs, self.losses, self.scores, self.best_epoch = [], [], [], None
        self.update()

    def add_epoch(self, epoch: int, loss: float | None, score: float | None,
                  best_epoch: int | None = None) -> None:
        """Append one epoch (NaN or None values are left out of their line)."""
        self.epochs.append(int(epoch))
        self.losses.append(None if loss is None or not math.isfinite(loss) else float(loss))
        self.scores.append(None if score is None or not math.isfinite(score) else float(score))
        self.best_epoch = best_epoch
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(42, 8, -20, -18)
        text_pen = QPen(self.palette().color(self.foregroundRole()))
        painter.setPen(QPen(QColor(128, 128, 128), 1))
        painter.drawRect(rect)
        painter.setPen(text_pen)
        if not self.epochs:
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter,
                             "loss and validation V_rand per epoch")
            painter.end()
            return
        first, last = min(self.epochs), max(max(self.epochs), min(self.epochs) + 1)

        def x_of(epoch: int) -> float:
            return rect.left() + (epoch - first) / (last - first) * rect.width()

        losses = [v for v in self.losses if v is not None]
        if losses:
            low, high = min(losses), max(losses)
            high = high if high > low else low + 1e-6
            points = [QPointF(x_of(e), rect.bottom() - (v - low) / (high - low) * rect.height())
                      for e, v in zip(self.epochs, self.losses, strict=False) if v is not None]
            self._polyline(painter, points, LOSS_COLOUR)
            painter.setPen(QPen(LOSS_COLOUR))
            painter.drawText(QPointF(2, rect.top() + 10), f"{high:.3g}")
            painter.drawText(QPointF(2, rect.bottom()), f"{low:.3g}")
        points = [QPointF(x_of(e), rect.bottom() - v * rect.height())
                  for e, v in zip(self.epochs, self.scores, strict=False) if v is not None]
        if points:
            self._polyline(painter, points, SCORE_COLOUR)
            painter.setPen(QPen(SCORE_COLOUR))
            painter.drawText(QPointF(rect.right() + 4, rect.top() + 10), "1")
            painter.drawText(QPointF(rect.right() + 4, rect.bottom()), "0")
        if self.best_epoch is not None and first <= self.best_epoch <= last:
            painter.setPen(QPen(SCORE_COLOUR, 1, Qt.PenStyle.DashLine))
            x = x_of(self.best_epoch)
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        painter.setPen(text_pen)
        painter.drawText(QPointF(rect.left(), rect.bottom() + 14), f"epoch {first}")
        painter.drawText(QPointF(rect.right() - 40, rect.bottom() + 14), f"{last}")
        painter.end()

    @staticmethod
    def _polyline(painter: QPainter, points: list[QPointF], colour: QColor) -> None:
        painter.setPen(QPen(colour, 2))
        if len(points) == 1:
            painter.drawEllipse(points[0], 2.5, 2.5)
        else:
            painter.drawPolyline(QPolygonF(points))
