"""What scripts/setup.sh installs: vLLM imports (the torchvision/torchaudio/torchcodec fix), on the CPU build
of torch, and the packaged models are in place without any download."""

import subprocess
import sys

import pytest

from lift_local import models


@pytest.mark.vllm
def test_vllm_imports_in_a_fresh_interpreter():
    # A fresh process: in this one, something imported earlier could hide a broken `import vllm`.
    code = "import vllm, torch; from vllm.platforms import current_platform; " \
           "print(vllm.__version__, torch.__version__, current_platform.device_type)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    vllm_version, torch_version, device = result.stdout.split()[-3:]
    assert int(vllm_version.split(".")[1]) >= 12  # StructuredOutputsParams replaced GuidedDecodingParams in 0.12
    assert device in ("cpu", "cuda")
    if device == "cpu":
        assert torch_version.endswith("+cpu")


def test_packaged_models_are_present():
    for role in models.ROLES:
        spec = models.resolve(role)
        assert spec.present, f"{role}: {spec.name} missing at {spec.path}; scripts/setup.sh prepares it"
