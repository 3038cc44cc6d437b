"""Export a member's parameters as numpy arrays named in the papers' notation ("W x" form).

Every matrix is exported so that the unit reads ``gate = act(W_.x @ x_t + W_.h @ h_{t-1} + b_.)``
and ``y_hat = W_out @ h_T + b_out`` (shapes ``(H, D)``, ``(H, H)``, ``(H,)``, ``(C, H)``, ``(C,)``).

* gru  (eq. 2-5): W_zx, W_zh, b_z, W_rx, W_rh, b_r, W_hx, W_hh, b_h, W_out, b_out
  (W_hh is the paper's W_h~ acting on r * h_{t-1}).
* lstm: W_ix, W_ih, b_i, W_fx, W_fh, b_f, W_cix, W_cih, b_ci, W_ox, W_oh, b_o, W_out, b_out
  (c~ = tanh(W_cix x + W_cih h + b_ci); W_out is the Tikhonov paper's W_hy).
* rnn: W_x, W_h, b, W_out, b_out.
* diag_rnn: U (H, D), w (H,) the diagonal of W, W_out (C, H) - output is W_out @ h_T / sqrt(H).
Biases are absent when the pack was trained with ``bias=False``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from trainer.models import Family

GATES = {"gru": ("z", "r", "h"), "lstm": ("i", "f", "ci", "o")}


def export_weights(family: Family, flat_row: np.ndarray) -> dict[str, np.ndarray]:
    lay = family.layout
    p = {s.name: np.asarray(flat_row[lay.slice(s.name)]).reshape(s.shape).copy() for s in lay.specs}
    H = family.H
    out: dict[str, np.ndarray] = {}
    name = family.name
    if name == "gru":
        Wh = np.concatenate([p["Wh_zr"], p["Wh_h"]], axis=1)
    elif name in ("lstm", "rnn"):
        Wh = p["Wh"]
    if name in GATES:
        for k, g in enumerate(GATES[name]):
            cols = slice(k * H, (k + 1) * H)
            out[f"W_{g}x"] = p["Wx"][:, cols].T.copy()
            out[f"W_{g}h"] = Wh[:, cols].T.copy()
            if "b" in p:
                out[f"b_{g}"] = p["b"][cols].copy()
    elif name == "rnn":
        out["W_x"], out["W_h"] = p["Wx"].T.copy(), p["Wh"].T.copy()
        if "b" in p:
            out["b"] = p["b"].copy()
    elif name == "diag_rnn":
        out["U"], out["w"] = p["U"].T.copy(), p["w"].copy()
    out["W_out"] = p["W_out"].T.copy()
    if "b_out" in p:
        out["b_out"] = p["b_out"].copy()
    return out


class ExportedWeights(Mapping):
    """:func:`export_weights` of one row, computed when first read: a search stores traces and
    metrics, not weights, and exporting every member of a K = 16,384 pack took seconds. ``row`` (any
    float dtype; exported as float64) may be a view of the pack's buffer; a pickled copy carries only
    this row."""

    def __init__(self, family: Family, row: np.ndarray):
        self._family, self._row, self._named = family, row, None

    def _exported(self) -> dict[str, np.ndarray]:
        if self._named is None:
            self._named = export_weights(self._family, np.asarray(self._row, dtype=np.float64))
        return self._named

    def __getitem__(self, name: str) -> np.ndarray:
        return self._exported()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._exported())

    def __len__(self) -> int:
        return len(self._exported())

    def __reduce__(self):
        return ExportedWeights, (self._family, np.array(self._row))
