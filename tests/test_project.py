"""The README's two set-up commands exist and CI runs the test one."""
import os
import re
import subprocess
import sys

from conftest import REPO


def test_readme_commands_exist_and_ci_calls_the_test_command():
    readme = (REPO / "README.md").read_text()
    assert "./launch/quickstart.sh" in readme and "./launch/test.sh" in readme
    for script in ("launch/quickstart.sh", "launch/test.sh", ".ci/run"):
        path = REPO / script
        assert path.is_file() and os.access(path, os.X_OK), script
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\./launch/test\.sh\s*$", ci, re.M)


def test_cli_help_and_print_config():
    run = [sys.executable, "-m", "murauer_dist.cli"]
    out = subprocess.run(run + ["print-config", "tiny", "train.seed=7"], capture_output=True, text=True, check=True)
    assert "seed: 7" in out.stdout and "crop_size: 32" in out.stdout
    bad = subprocess.run(run + ["print-config", "tiny", "train.sed=7"], capture_output=True, text=True)
    assert bad.returncode != 0 and "train.sed" in bad.stderr
    helped = subprocess.run(run + ["--help"], capture_output=True, text=True, env={**os.environ, "PAGER": "cat"})
    assert "print-config" in helped.stdout + helped.stderr
