"""The Khronos glTF validator (npm `gltf-validator`) run with node on a file; tests skip when
node or the package is missing (.ci/run installs it)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

VALIDATOR_DIR = Path(os.environ.get("GLTF_VALIDATOR_DIR", Path(__file__).parent.parent / ".cache" / "node"))
SCRIPT = ("const v = require('gltf-validator'); const fs = require('fs');"
          "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[1])))"
          ".then(r => console.log(JSON.stringify(r.issues)))"
          ".catch(e => { console.error(e); process.exit(1); });")


def khronos_issues(path) -> dict:
    """The validator's `issues` object (numErrors, numWarnings, messages, ...) for a GLB."""
    node = shutil.which("node")
    if node is None or not (VALIDATOR_DIR / "node_modules" / "gltf-validator").exists():
        pytest.skip(f"needs node and gltf-validator: npm install --prefix {VALIDATOR_DIR} gltf-validator@2.0.0-dev.3.10")
    out = subprocess.run([node, "-e", SCRIPT, str(path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NODE_PATH": str(VALIDATOR_DIR / "node_modules")})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_valid_gltf(path) -> None:
    issues = khronos_issues(path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:10]
