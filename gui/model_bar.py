"""The model bar: the policy model (GGUFs found on disk, added by hand, or a model on an inference
server), GPU layers, context, the memory estimate, and a line describing the choice.

It knows nothing of the engine's threads: it says what the user chose through ``chosen`` (a dict:
``{"path", "n_gpu_layers", "n_ctx"}`` for a GGUF, ``{"server": {...}, "label"}`` for a server model,
or ``{"error"}`` when nothing usable is chosen) and the window makes the backend. Model discovery
walks folders, so it runs off the GUI thread: the bar opens at once on the given, saved or embedded
model and the full list arrives when the walk is done (``discovered``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.errors import PonderError
from engine.gguf_info import human_params, human_size, read_gguf
from engine.models import (
    add_model_file,
    adopt_model_files,
    default_model_path,
    describe,
    discover,
    estimate_memory,
    load_catalog,
)
from gui.offload import Offload
from gui.servers import ServerDialog, ServerProbe, server_entry_label, server_entry_tooltip


class ModelBar(QWidget):
    chosen = Signal(dict)
    prms_found = Signal(list)  # token-PRM GGUFs discovery found (ModelEntry)
    prm_servers_changed = Signal(list)  # reward models on servers ({"url", "model"}): the PRM list's
    discovered = Signal()
    message = Signal(str)

    def __init__(self, settings: Any, offload: Offload, model_path: str | None = None, n_gpu_layers: int = 0):
        super().__init__()
        self.settings = settings
        self.offload = offload
        self.prm_path: str | None = None  # a PRM GGUF counted in the memory estimate
        self._entries: list = []  # what discovery found last
        self.discovery_done = False
        self._server_keys: dict[str, str | None] = {}  # API keys: in memory only
        self._server_status: dict[str, dict[str, Any]] = {}  # url -> what its probe said
        self._policy_info: Any = None
        self._policy_ngl = 0
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(4)
        mbar = QHBoxLayout()
        mbar.addWidget(QLabel("Model"))
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(200)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(20)
        mbar.addWidget(self.model_combo)
        self.get_models_button = QPushButton("Get models…")
        self.get_models_button.setToolTip(
            "Policies and PRMs from the Hugging Face Hub, with their size and fit on this machine"
        )
        mbar.addWidget(self.get_models_button)
        self.add_model_button = QPushButton("Add GGUF…")
        mbar.addWidget(self.add_model_button)
        self.server_button = QPushButton("Server…")
        self.server_button.setToolTip(
            "Add an inference server: llama-server, vLLM, SGLang (OpenAI-compatible)"
        )
        mbar.addWidget(self.server_button)
        self.folders_button = QPushButton("Folders…")
        self.folders_button.setToolTip("Folders scanned for GGUF models")
        mbar.addWidget(self.folders_button)
        mbar.addSpacing(10)
        self.backend_label = QLabel()
        mbar.addWidget(self.backend_label)
        mbar.addWidget(QLabel("GPU layers"))
        self.ngl_slider = QSlider(Qt.Orientation.Horizontal)
        self.ngl_slider.setFixedWidth(110)
        self.ngl_value = QLabel("0")
        mbar.addWidget(self.ngl_slider)
        mbar.addWidget(self.ngl_value)
        mbar.addWidget(QLabel("Context"))
        self.ctx_spin = QSpinBox()
        self.ctx_spin.setRange(1024, 262144)
        self.ctx_spin.setSingleStep(2048)
        self.ctx_spin.setValue(16384)
        mbar.addWidget(self.ctx_spin)
        self.memory_label = QLabel()
        mbar.addWidget(self.memory_label)
        mbar.addStretch(1)
        col.addLayout(mbar)
        self.model_label = QLabel()
        self.model_label.setObjectName("modelLabel")
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # The line ends with the model's path: it may be cut at the window's edge (the path is in
        # its tooltip), never widen the window.
        self.model_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        second = QHBoxLayout()
        second.addWidget(self.model_label, 1)
        second.addWidget(QLabel("Also run on"))
        self.second_combo = QComboBox()  # a second model: the same strategies run on both
        self.second_combo.setToolTip(
            "Run the same strategies on a second model too (panels grouped by model, each with its FLOPs)"
        )
        self.second_combo.setMinimumContentsLength(14)
        self.second_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        second.addWidget(self.second_combo)
        col.addLayout(second)

        self._server_probe = ServerProbe()
        self._server_probe.done.connect(self._server_probed)
        self.server_button.clicked.connect(lambda: ServerDialog(self).exec())
        self.add_model_button.clicked.connect(self.add_model)
        self.folders_button.clicked.connect(self.edit_folders)
        self.get_models_button.clicked.connect(self.get_models)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.ngl_slider.valueChanged.connect(self._model_changed)
        self.ctx_spin.editingFinished.connect(self._model_changed)
        saved = self.settings.value("model", "", str) or None
        if saved and not os.path.exists(saved):
            saved = None  # the last model was moved or deleted: start on the default
        self._wanted = model_path or saved
        self._fill_models(self._wanted, [])
        if model_path is None:
            self._select_server(self.settings.value("model_server", "", str))
        self.ngl_slider.setValue(n_gpu_layers if n_gpu_layers >= 0 else self.ngl_slider.maximum())
        self._model_changed()
        for url in dict.fromkeys(e["url"] for e in self._saved_servers()):
            self._server_probe.probe(
                url, os.environ.get("PONDER_API_KEY") or None, self._server_tokenizers().get(url)
            )
        self.rediscover()

    # --- the model list ---------------------------------------------------------------------------

    def rediscover(self) -> None:
        """Walk the model folders off the GUI thread; the list is refilled when the walk is done."""
        self._adopt_added_models()
        self.offload.latest("discover", discover, self._discovered)

    def _discovered(self, entries: Any) -> None:
        if isinstance(entries, BaseException):
            self.message.emit(f"Model discovery failed: {entries}")
            entries = []
        self.discovery_done = True
        self._entries = list(entries)
        current = self.model_combo.currentData()
        self._fill_models(current if isinstance(current, str) else self._wanted, entries)
        if isinstance(current, dict):
            self._select_server(json.dumps(current))
        if self.model_combo.currentData() != current:
            self._model_changed()
        self.discovered.emit()

    def _fill_models(self, wanted: str | None, entries: list) -> None:
        """The policy models discovery found, the GGUFs the user added, and ``wanted``; a file that
        cannot be read is listed, disabled, with its error."""
        paths: list[str] = []
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.second_combo.blockSignals(True)
        second = self.second_combo.currentData()
        self.second_combo.clear()
        self.second_combo.addItem("—", None)
        entries = list(entries)
        known = {e.path for e in entries}
        extra = [str(wanted)] if wanted else []
        if not entries:  # before discovery: the wanted model, else the embedded one
            default = default_model_path()
            extra += [str(default)] if default else []
        catalog = load_catalog()
        entries += [describe(Path(p), "given", catalog) for p in dict.fromkeys(extra) if p not in known]
        self.prms_found.emit([e for e in entries if e.ok and e.info is not None and "prm" in e.roles])
        for e in entries:
            if e.roles and "policy" not in e.roles and "judge" not in e.roles:
                continue  # a PRM-only model is not a policy
            label = (
                f"{e.info.name} · {e.info.quantization}" if e.info else Path(e.path).name
            ) + f"  ({e.source})"
            self.model_combo.addItem(label, e.path)
            i = self.model_combo.count() - 1
            if not e.ok:
                self.model_combo.setItemData(i, f"Cannot use: {e.error}", Qt.ItemDataRole.ToolTipRole)
                model = self.model_combo.model()  # a combo box's own model: a QStandardItemModel
                item = model.item(i) if isinstance(model, QStandardItemModel) else None
                if item is not None:
                    item.setEnabled(False)
            else:
                self.second_combo.addItem(label, e.path)
            paths.append(e.path)
        for entry in self._saved_servers():
            status = self._server_status.get(entry["url"])
            self.model_combo.addItem(server_entry_label(entry, status), entry)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, server_entry_tooltip(status), Qt.ItemDataRole.ToolTipRole
            )
            self.second_combo.addItem(server_entry_label(entry, status), entry)
        target = str(wanted) if wanted else str(default_model_path()) if paths else ""
        idx = paths.index(target) if target in paths else 0
        self.model_combo.setCurrentIndex(idx)
        j = self.second_combo.findData(second) if second is not None else 0
        self.second_combo.setCurrentIndex(max(j, 0))
        self.model_combo.blockSignals(False)
        self.second_combo.blockSignals(False)

    def second(self) -> dict[str, Any] | None:
        """The second model's choice (as ``chosen`` says it), or None when there is none."""
        data = self.second_combo.currentData()
        if data is None or data == self.model_combo.currentData():
            return None
        if isinstance(data, dict):
            return self._server_choice(data)
        return {
            "path": data,
            "n_gpu_layers": self.ngl_slider.value(),
            "n_ctx": self.ctx_spin.value(),
            "label": self.second_combo.currentText().split("  (")[0],
        }

    def current_label(self) -> str:
        return self.model_combo.currentText().split("  (")[0]

    # --- servers ----------------------------------------------------------------------------------

    def _saved_servers(self) -> list[dict[str, Any]]:
        try:
            raw = json.loads(self.settings.value("servers", "[]", str) or "[]")
        except ValueError:
            return []
        return [e for e in raw if isinstance(e, dict) and e.get("url") and e.get("model")]

    def prm_servers(self) -> list[dict[str, Any]]:
        """Reward models on servers the user added (vLLM's pooling API): they score, not generate."""
        try:
            raw = json.loads(self.settings.value("prm_servers", "[]", str) or "[]")
        except ValueError:
            return []
        return [e for e in raw if isinstance(e, dict) and e.get("url") and e.get("model")]

    def add_server_models(self, infos: list[dict[str, Any]], api_key: str | None) -> None:
        """A server the user connected to: every model it serves joins the model list (kept), the
        first one is chosen; a reward model (one that only pools) joins the PRM list instead."""
        rewards = [i for i in infos if i.get("pooling")]
        if rewards:
            known = self.prm_servers()
            for i in rewards:
                entry = {"url": i["url"], "model": i["model"]}
                if entry not in known:
                    known.append(entry)
                self._server_keys[i["url"]] = api_key
            self.settings.setValue("prm_servers", json.dumps(known))
            self.prm_servers_changed.emit(known)
        infos = [i for i in infos if not i.get("pooling")]
        if not infos:
            return
        saved = self._saved_servers()
        for i in infos:
            entry = {"url": i["url"], "model": i["model"]}
            if entry not in saved:
                saved.append(entry)
            self._server_keys[i["url"]] = api_key
            self._server_status[i["url"]] = i
            self._set_server_tokenizer(i["url"], i.get("tokenizer") or "")
        self.settings.setValue("servers", json.dumps(saved))
        current = self.model_combo.currentData()
        self._fill_models(current if isinstance(current, str) else None, self._entries)
        self._select_server(json.dumps({"url": infos[0]["url"], "model": infos[0]["model"]}))
        self._model_changed()

    def _server_tokenizers(self) -> dict[str, str]:
        """URL -> the local tokenizer a server needs (a gateway's), as the Server… dialog found it."""
        try:
            raw = json.loads(self.settings.value("server_tokenizers", "{}", str) or "{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in raw.items() if v} if isinstance(raw, dict) else {}

    def _set_server_tokenizer(self, url: str, path: str) -> None:
        known = self._server_tokenizers()
        if path:
            known[url] = path
        else:
            known.pop(url, None)
        self.settings.setValue("server_tokenizers", json.dumps(known))

    def _select_server(self, wanted: str) -> None:
        try:
            entry = json.loads(wanted) if wanted else None
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            return
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i) == entry:
                self.model_combo.setCurrentIndex(i)
                return

    def _server_probed(self, url: str, infos: Any, error: str) -> None:
        """A saved server answered (or did not): its lines in the model list say so."""
        if infos is None:
            self._server_status[url] = {"error": error}
        else:
            for i in infos:
                self._server_status[i["url"]] = i
        for combo in (self.model_combo, self.second_combo):
            for i in range(combo.count()):
                entry = combo.itemData(i)
                if isinstance(entry, dict) and entry.get("url") == url:
                    status = self._server_status.get(url)
                    combo.setItemText(i, server_entry_label(entry, status))
                    combo.setItemData(i, server_entry_tooltip(status), Qt.ItemDataRole.ToolTipRole)
        current = self.model_combo.currentData()
        if isinstance(current, dict) and current.get("url") == url:
            self._show_server_label(current)

    def _show_server_label(self, entry: dict[str, Any]) -> None:
        st = self._server_status.get(entry["url"])
        if st is None:
            state = "asking the server…"
        elif st.get("error"):
            state = f"<span style='color:#c0392b'>{_html(st['error'])}</span>"
        else:
            params = f" · {human_params(st['n_params'])} parameters" if st.get("n_params") else ""
            state = (
                f"{st.get('dialect')}{params} · {st.get('slots')} slots · context {st.get('n_ctx') or '?'}"
                f" · build {_html(st.get('build') or '?')}"
            )
        self.model_label.setText(
            f"<b>{_html(self._served_name(entry))}</b> &nbsp; on {_html(entry['url'])} &nbsp; {state}"
        )

    def _served_name(self, entry: dict[str, Any]) -> str:
        """The model's name: what the server's answers call it where its list says less (a gateway
        lists "unknown")."""
        return (self._server_status.get(entry["url"]) or {}).get("served_as") or entry["model"]

    def _server_choice(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "server": {
                "urls": [entry["url"]],
                "model": entry["model"],
                "api_key": self._server_keys.get(entry["url"]) or os.environ.get("PONDER_API_KEY") or None,
                "tokenizer": self._server_tokenizers().get(entry["url"]),
            },
            "label": f"{self._served_name(entry)} @ {entry['url']}",
        }

    def _set_server(self, entry: dict[str, Any]) -> None:
        """Run on a server: no GPU layers or context to set here (the server has its own)."""
        for w in (self.ngl_slider, self.ctx_spin):
            w.setEnabled(False)
        self.ngl_value.setText("-")
        self.backend_label.setText("inference server")
        self.memory_label.setText("runs on the server")
        self.memory_label.setToolTip("")
        self._policy_info = None
        self._show_server_label(entry)
        self.settings.setValue("model_server", json.dumps(entry))
        self.chosen.emit(self._server_choice(entry))

    # --- GGUFs ------------------------------------------------------------------------------------

    def get_models(self) -> Any:
        """The Get models… dialog (modeless: the window stays usable while a model downloads)."""
        from gui.get_models import GetModelsDialog

        open_one = getattr(self, "_get_models_dialog", None)
        try:
            if open_one is not None and open_one.isVisible():  # one dialog: a second click raises it
                open_one.raise_()
                open_one.activateWindow()
                return open_one
        except RuntimeError:  # closed and deleted
            pass
        dialog = GetModelsDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self._get_models_dialog = dialog
        return dialog

    def edit_folders(self) -> None:
        from gui.folders import FoldersDialog

        FoldersDialog(self).exec()

    def rescan_models(self) -> None:
        """Discovery again (after the folders changed), keeping the chosen model."""
        self.rediscover()

    def _adopt_added_models(self) -> None:
        """GGUFs an older Ponder kept in the app's own settings move to the shared list, once."""
        old = [p for p in self.settings.value("added_models", [], list) or [] if p]
        if old:
            try:
                adopt_model_files(old)
            except PonderError:
                return  # kept where they are until the list can be written
            self.settings.remove("added_models")

    def add_model(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Add a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.add_model_path(path)

    def add_model_path(self, path: str) -> None:
        try:
            read_gguf(path)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        try:
            add_model_file(path)  # one list with the CLI's (engine.models)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
        self._wanted = path
        self._fill_models(path, self._entries)
        self._model_changed()
        self.rediscover()

    def announce(self) -> None:
        """Say the current choice again (``chosen``): the window asks once it listens."""
        self._model_changed()

    def _model_changed(self, *_: Any) -> None:
        data = self.model_combo.currentData()
        if isinstance(data, dict):
            self._set_server(data)
            return
        for w in (self.ngl_slider, self.ctx_spin):
            w.setEnabled(True)
        self.settings.setValue("model_server", "")
        self._set_model(data, self.ngl_slider.value())

    @property
    def policy_info(self) -> Any:
        """The chosen GGUF's header (None for a server model): what a PRM's memory is counted beside."""
        return self._policy_info

    def set_prm(self, path: str | None) -> None:
        self.prm_path = path if path and path.lower().endswith(".gguf") else None
        self.update_memory()

    def update_memory(self) -> None:
        """Policy and PRM together (a PRM GGUF gets its own context of the same size and offload)."""
        info = self._policy_info
        if info is None:
            return
        ctx, ngl = self.ctx_spin.value(), self._policy_ngl
        parts = [("policy", estimate_memory(info, ctx, ngl))]
        if self.prm_path:
            try:
                parts.append(("PRM", estimate_memory(read_gguf(self.prm_path), ctx, ngl)))
            except PonderError:
                pass
        gpu, cpu = sum(m["gpu"] for _, m in parts), sum(m["cpu"] for _, m in parts)
        self.memory_label.setText(f"~{human_size(gpu)} GPU + {human_size(cpu)} RAM")
        self.memory_label.setToolTip(
            "Estimated from the GGUF headers: "
            + "; ".join(
                f"{who}: weights {human_size(m['weights'])}, "
                f"f16 KV cache of {ctx} cells {human_size(m['kv_cache'])}"
                for who, m in parts
            )
            + "; split by the layers offloaded"
        )

    def _set_model(self, model_path: str | None, n_gpu_layers: int) -> None:
        try:
            if not model_path:
                raise PonderError("No model found: add a GGUF (Add GGUF…) or start with --model PATH.")
            path = str(model_path)
            info = read_gguf(path)  # header only: the window opens at once, weights load on Run
        except PonderError as e:
            self.model_label.setText(f"<b>No usable model</b>: {e}")
            self.chosen.emit({"error": str(e)})
            return
        n_layer = int(info.n_layer or 0)
        self.ngl_slider.blockSignals(True)
        self.ngl_slider.setRange(0, n_layer or 0)
        self.ngl_slider.blockSignals(False)
        n_gpu_layers = min(max(n_gpu_layers, 0), n_layer) if n_layer else 0
        self.ngl_value.setText(f"{n_gpu_layers}/{n_layer}")
        self.backend_label.setText(accelerator_text())
        self.backend_label.setToolTip(
            "This llama.cpp build has no GPU offload (see README: GPU offload)"
            if accelerator_text() == "CPU build"
            else "GPU offload: set the layers to offload with the slider"
        )
        self._policy_info, self._policy_ngl = info, n_gpu_layers
        self.update_memory()
        self.settings.setValue("model", path)
        self.model_label.setText(
            f"<b>{info.name}</b> &nbsp; {info.architecture} · {human_params(info.n_params)} parameters · "
            f"{info.quantization} · {human_size(info.file_size)} · "
            f"context {info.context_length or '?'} &nbsp; <span style='color:gray'>{info.path}</span>"
        )
        self.model_label.setToolTip(str(info.path))
        self.chosen.emit({"path": path, "n_gpu_layers": n_gpu_layers, "n_ctx": self.ctx_spin.value()})


@lru_cache(maxsize=1)  # the build does not change while the app runs; the slider asks often
def accelerator_text() -> str:
    from engine.llama_lib import build_info

    b = build_info()
    gpus = [d for d in b.devices if d.type in ("GPU", "iGPU")]
    if not b.gpu_offload or not gpus:
        return "CPU build"  # (no GPU offload: the label's tooltip says so)
    d = gpus[0]
    return f"{b.accelerator}: {d.description} ({human_size(d.memory_free)} free)"


def _html(text: str) -> str:
    import html

    return html.escape(text)
