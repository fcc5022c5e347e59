"""app/ runs on numpy + OpenVINO + OpenCV only: no torch, statically or at run time."""

import subprocess
import sys

from common.synthetic import disks_2d, save_case
from tests.conftest import ROOT
from tests.test_layers import imported_roots

ALLOWED_THIRD_PARTY = {"numpy", "openvino", "cv2"}
# First-party, imported by app/pipeline.py only for NIfTI / DICOM inputs (nibabel, pydicom, highdicom).
OPTIONAL_FIRST_PARTY = {"clinical"}
NEVER_ON_THE_NPZ_PATH = {"torch", "onnx", "onnxruntime", "nibabel", "pydicom", "highdicom", "clinical"}


def test_app_imports_only_the_runtime_stack() -> None:
    for path in sorted((ROOT / "app").glob("*.py")):
        third_party = {r for r in imported_roots(path) if r not in sys.stdlib_module_names} - {"app"}
        third_party -= OPTIONAL_FIRST_PARTY
        assert third_party <= ALLOWED_THIRD_PARTY, f"{path.name} imports {third_party - ALLOWED_THIRD_PARTY}"


def test_an_npz_run_loads_neither_torch_nor_the_clinical_formats(tmp_path, models_dir) -> None:
    save_case(tmp_path / "in" / "2DBox_US_x.npz", *disks_2d())
    args = ["-q", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--cache-dir", "none"]
    code = (
        "import sys; from app.cli import main; "
        f"rc = main({args!r}); "
        f"bad = [m for m in sys.modules if m.split('.')[0] in {sorted(NEVER_ON_THE_NPZ_PATH)!r}]; "
        "print('LOADED', bad); sys.exit(rc or bool(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "2DBox_US_x.npz").is_file()


def test_the_app_process_skips_openvinos_model_converter(tmp_path, models_dir) -> None:
    """``python -m app`` imports openvino without ``openvino.tools.ovc`` and its telemetry (the
    app never converts a model); the case is still segmented."""
    save_case(tmp_path / "in" / "2DBox_US_x.npz", *disks_2d())
    args = ["-q", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--cache-dir", "none"]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app", *args, "--models", str(models_dir)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "openvino" in imported and "openvino._pyopenvino" in imported
    # importtime lists the blocked name itself; nothing of the converter is loaded
    assert not {m for m in imported if m.startswith(("openvino.tools.ovc.", "openvino_telemetry"))}
    assert (tmp_path / "out" / "2DBox_US_x.npz").is_file()
