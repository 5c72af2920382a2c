"""The measurement table in Qt: one row per object, sorted by clicking any column header.

A table model over the numpy columns rather than one Qt item per cell: a volume with a
hundred thousand objects fills and sorts (``numpy.argsort``) in milliseconds, and Qt only
asks for the rows on screen. Values are rounded for display only; the CSV export writes
every digit.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ..analysis.measure import INTEGER_COLUMNS, ObjectTable


def display_text(name: str, value) -> str:
    """What a cell shows: integers as they are, floats rounded, unknown values blank."""
    if name in INTEGER_COLUMNS:
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return ""
    return f"{value:.4g}" if name == "volume_um3" else f"{value:.2f}"


class ObjectTableModel(QAbstractTableModel):
    """Rows of an :class:`~napari_em_unet.analysis.measure.ObjectTable` in a chosen order."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: ObjectTable | None = None
        self.order = np.empty(0, dtype=np.int64)  # table row shown at each view row
        self.sorted_by: tuple[int, Qt.SortOrder] | None = None

    def set_table(self, table: ObjectTable) -> None:
        self.beginResetModel()
        self.table = table
        self.order = np.arange(len(table))
        self.endResetModel()
        if self.sorted_by is not None and self.sorted_by[0] < len(table.names):
            self.sort(*self.sorted_by)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() or self.table is None else len(self.table.names)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.table is None:
            return None
        name = self.table.names[index.column()]
        value = self.table.columns[name][self.order[index.row()]]
        if role == Qt.ItemDataRole.DisplayRole:
            return display_text(name, value)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or self.table is None:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self.table.names[section]
        return str(section + 1)

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        if self.table is None or not 0 <= column < len(self.table.names):
            return
        self.sorted_by = (column, order)
        values = self.table.columns[self.table.names[column]]
        # Stable, ties by label; NaN (an unknown volume) sorts last either way.
        ranked = np.argsort(values, kind="stable")
        if order == Qt.SortOrder.DescendingOrder:
            known = ranked[~np.isnan(values[ranked].astype(float))]
            ranked = np.concatenate([known[::-1], ranked[len(known) :]])
        self.layoutAboutToBeChanged.emit()
        self.order = ranked
        self.layoutChanged.emit()

    def label_at(self, row: int) -> int:
        return int(self.table.columns["label"][self.order[row]])


class ObjectTableView(QTableView):
    """Read-only, sortable view of an object table.

    Signals
    -------
    object_clicked(int)
        The object id of the row the user clicked.
    """

    object_clicked = Signal(object)  # object, not int: ids go beyond Qt's 32-bit int

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = ObjectTableModel(self)
        self.setModel(self.model_)
        self.setSortingEnabled(True)
        self.horizontalHeader().setSortIndicatorShown(True)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setMinimumHeight(180)
        self.clicked.connect(self._on_clicked)

    def show_table(self, table: ObjectTable) -> None:
        """Replace the rows with ``table``'s, keeping the user's sort column and order."""
        self.model_.set_table(table)

    def labels_in_view_order(self) -> list[int]:
        """Object ids from the top row down, as the user sees them."""
        return [self.model_.label_at(row) for row in range(self.model_.rowCount())]

    def column_text(self, name: str) -> list[str]:
        """The displayed cells of column ``name``, top row first."""
        column = list(self.model_.table.names).index(name)
        return [
            self.model_.data(self.model_.index(row, column))
            for row in range(self.model_.rowCount())
        ]

    def row_of(self, label: int) -> int | None:
        """The view row showing object ``label`` now, or None."""
        for row in range(self.model_.rowCount()):
            if self.model_.label_at(row) == int(label):
                return row
        return None

    def _on_clicked(self, index) -> None:
        if index.isValid():
            self.object_clicked.emit(self.model_.label_at(index.row()))
