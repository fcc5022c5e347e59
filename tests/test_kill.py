"""Kill the appliance while it writes a large 3D result: no partial output is ever left."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common.synthetic import save_case
from tests.conftest import ROOT

NAME = "3DBox_CT_killme.npz"
# Slices: enough that the app is still encoding 1.5 s in, whatever the precision (6 slices were
# done in under 1.5 s once CT 3D ran its student encoder in bf16).
DEPTH = 24


def big_case(folder: Path) -> None:
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (DEPTH, 1400, 1400), dtype=np.uint8)
    save_case(folder / NAME, vol, np.array([[100, 100, 0, 1300, 1300, DEPTH - 1]]))


def start(inputs: Path, outputs: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "app", "-q", "-i", str(inputs), "-o", str(outputs), "--cache-dir", "none"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_during_write(inputs: Path, outputs: Path, attempts: int = 6) -> bool:
    """SIGKILL the app as soon as its temp file appears; True if caught before the rename."""
    for _ in range(attempts):
        for p in outputs.iterdir():
            p.unlink()
        proc = start(inputs, outputs)
        while proc.poll() is None:
            if any(p.name.endswith(".tmp") for p in outputs.iterdir()):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                if not (outputs / NAME).exists():
                    return True
            time.sleep(0.001)
    return False


def test_kill_mid_inference_and_mid_write_leaves_no_partial_output(tmp_path, models_dir) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    outputs.mkdir()
    big_case(inputs)
    proc = start(inputs, outputs)
    time.sleep(1.5)  # still encoding slices
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any(p.suffix == ".npz" for p in outputs.iterdir())
    assert kill_during_write(inputs, outputs), "never caught the process while writing"
    assert not (outputs / NAME).exists()
    assert [p for p in outputs.iterdir() if p.name.endswith(".tmp")]  # the interrupted temp file
    done = subprocess.run(
        [sys.executable, "-m", "app", "-q", "-i", str(inputs), "-o", str(outputs), "--cache-dir", "none"],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    assert done.returncode == 0
    assert sorted(p.name for p in outputs.glob("*.npz")) == [NAME]  # result complete
    assert not [p for p in outputs.iterdir() if p.name.endswith(".tmp")]  # temp removed
    with np.load(outputs / NAME) as data:
        assert data["segs"].shape == (DEPTH, 1400, 1400) and data["segs"].dtype == np.uint16
