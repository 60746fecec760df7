"""Before the window opens: can Qt load its platform plugin? If not, Qt aborts the process with a
generic "could not load the Qt platform plugin" line; Ponder instead names the system libraries that
are missing and the command that installs them (apt and dnf), and exits 2.

The probe opens a QGuiApplication in a child process (a failed plugin aborts the process it is in),
and the missing libraries are found with ``ldd`` on the xcb plugin plus a dlopen of
``libxcb-cursor.so.0`` (Qt 6.5+ loads that one at run time, so ldd does not list it). No Qt is
imported here."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys

# soname -> (Debian/Ubuntu package, Fedora/RHEL package): what Qt's xcb plugin needs beyond Xlib.
XCB_LIBS: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libEGL.so.1": ("libegl1", "mesa-libEGL"),
    "libGL.so.1": ("libgl1", "mesa-libGL"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}
# What the README lists: the libraries a fresh desktop most often lacks.
USUAL = ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-image.so.0",
         "libxcb-render-util.so.0", "libxkbcommon-x11.so.0"]  # fmt: skip


def install_commands(sonames: list[str]) -> list[str]:
    apt = list(dict.fromkeys(XCB_LIBS[s][0] for s in sonames if s in XCB_LIBS))
    dnf = list(dict.fromkeys(XCB_LIBS[s][1] for s in sonames if s in XCB_LIBS))
    return [
        f"Debian/Ubuntu:  sudo apt install {' '.join(apt)}",
        f"Fedora/RHEL:    sudo dnf install {' '.join(dnf)}",
    ]


def not_found(ldd_output: str) -> list[str]:
    """The libraries ``ldd`` could not find ("libfoo.so.1 => not found")."""
    return list(dict.fromkeys(re.findall(r"^\s*(\S+)\s*=>\s*not found", ldd_output, re.MULTILINE)))


def xcb_plugin() -> str | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "Qt", "plugins", "platforms", "libqxcb.so")
    return path if os.path.exists(path) else None


def missing_libraries() -> list[str]:
    """The system libraries Qt's xcb plugin needs and this machine lacks (Linux; [] elsewhere)."""
    if not sys.platform.startswith("linux"):
        return []
    missing: list[str] = []
    plugin = xcb_plugin()
    if plugin is not None:
        try:
            out = subprocess.run(["ldd", plugin], capture_output=True, text=True, timeout=20).stdout
            missing += not_found(out)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        ctypes.CDLL("libxcb-cursor.so.0")
    except OSError:
        missing.append("libxcb-cursor.so.0")
    return sorted(dict.fromkeys(missing))


def explain(qt_said: str, platform: str | None) -> str:
    """The message for a plugin that cannot load: what is missing and how to install it."""
    name = platform or (m.group(1) if (m := re.search(r'platform plugin "([^"]+)"', qt_said)) else "xcb")
    lines = [f'ponder: the window cannot open: Qt cannot load its platform plugin "{name}".']
    missing = missing_libraries() if name == "xcb" else []
    if missing:
        lines.append("Missing system libraries: " + ", ".join(missing))
        lines.append("Install them with:")
        lines += ["  " + c for c in install_commands(missing)]
    elif "could not connect to display" in qt_said.lower() or (
        name == "xcb" and not os.environ.get("DISPLAY")
    ):
        lines.append("There is no display to open it on (DISPLAY is not set): run it on a desktop session,")
        lines.append("or set QT_QPA_PLATFORM=offscreen for `ponder screenshot` and `ponder bench --gui`.")
    else:
        if name != "xcb":
            lines.append(f"QT_QPA_PLATFORM={name}: that platform is unknown or cannot start here.")
            lines.append("Unset QT_QPA_PLATFORM for the desktop (xcb), or use one Qt lists below.")
        lines.append("If the desktop one (xcb) fails, these system libraries are what it usually lacks:")
        lines += ["  " + c for c in install_commands(USUAL)]
    lines.append("The command line works without a window: ponder --help.")
    said = "\n".join(f"  | {ln}" for ln in qt_said.strip().splitlines()[-6:] if ln.strip())
    if said:
        lines.append("Qt said:\n" + said)
    return "\n".join(lines)


def check_platform(timeout: float = 60.0) -> str | None:
    """None when Qt can open its platform plugin here; else the message to print (then exit 2)."""
    code = "import sys\nfrom PySide6.QtGui import QGuiApplication\nQGuiApplication(sys.argv[:1])\n"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None  # cannot tell: let Qt try for itself
    if r.returncode == 0:
        return None
    if "platform plugin" not in r.stderr and "display" not in r.stderr.lower():
        return None  # something else went wrong in the probe: not this check's business
    return explain(r.stderr, os.environ.get("QT_QPA_PLATFORM") or None)
